//go:build unix

package smbdirectd

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
