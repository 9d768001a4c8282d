//go:build unix

package client

import (
	"bytes"
	"errors"
	"os"
	"syscall"
	"testing"
)

// The registration files of the systems without memfd (an unlinked
// temporary file) and of Linux (a memfd): both are gone from the file
// system, n bytes long, and shared with a mapping.
func TestRegistrationFiles(t *testing.T) {
	for name, mk := range map[string]func(int) (*os.File, error){"memfd": memfd, "unlinkedTemp": unlinkedTemp} {
		t.Run(name, func(t *testing.T) {
			const n = 3*4096 + 5
			f, err := mk(n)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if st, err := f.Stat(); err != nil || st.Size() != n {
				t.Fatalf("stat: %v, %v", st, err)
			}
			if _, err := os.Stat(f.Name()); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("%s is in the file system: %v", f.Name(), err)
			}
			mem, err := mapShared(f, n)
			if err != nil {
				t.Fatal(err)
			}
			copy(mem[n-3:], "abc")
			got := make([]byte, 3)
			if _, err := f.ReadAt(got, n-3); err != nil || string(got) != "abc" {
				t.Fatalf("read back %q, %v", got, err)
			}
			if _, err := f.WriteAt([]byte("xyz"), 0); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(mem[:3], []byte("xyz")) {
				t.Fatalf("mapping sees %q", mem[:3])
			}
			if err := unmap(mem); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// Error matches its errno with errors.Is.
func TestErrorIs(t *testing.T) {
	err := error(&Error{Code: uint32(syscall.ENOENT), Message: "no such handle"})
	if !errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.EACCES) {
		t.Fatal("errors.Is on Error")
	}
}

// FuzzParseRights: the control data of the daemon's messages never
// panics the parser. (Parsing only reads numbers: no fd is touched.)
func FuzzParseRights(f *testing.F) {
	f.Add(unixRights([]int{3}))
	f.Add(unixRights([]int{7, 8, 9, 10}))
	f.Add(unixRights([]int{5})[:5])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, oob []byte) {
		// Each fd is 4 bytes of the data, after a header.
		if fds := parseRights(oob); len(fds) > 0 && 4*len(fds) >= len(oob) {
			t.Fatalf("%d fds from %d bytes", len(fds), len(oob))
		}
	})
}

func TestParseRights(t *testing.T) {
	if got := parseRights(unixRights([]int{7, 8, 9})); len(got) != 3 || got[0] != 7 || got[1] != 8 || got[2] != 9 {
		t.Fatalf("parseRights: %v", got)
	}
}
