package testbed

import (
	"bytes"
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"

	gosmb2 "github.com/cloudsoda/go-smb2"
)

// ExerciseShare writes a file of each size, reads each back (whole and at an
// offset), lists them and removes the first, checking contents by SHA-256.
// It returns the files it wrote, by name.
func ExerciseShare(t testing.TB, share *gosmb2.Share, prefix string, sizes []int) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	for i, n := range sizes {
		b := make([]byte, n)
		rand.NewChaCha8([32]byte{byte(i), byte(n)}).Read(b)
		name := prefix + strconv.Itoa(n) + ".bin"
		files[name] = b
		if err := share.WriteFile(name, b, 0o644); err != nil {
			t.Fatalf("write %s: %v", name, err)
		}
	}
	var last string
	for name, want := range files {
		got, err := share.ReadFile(name)
		if err != nil {
			t.Fatalf("read %s: %v", name, err)
		}
		if sha256.Sum256(got) != sha256.Sum256(want) {
			t.Fatalf("%s: read back %d bytes, sha256 %x; wrote %d bytes, sha256 %x",
				name, len(got), sha256.Sum256(got), len(want), sha256.Sum256(want))
		}
		if len(want) > len(files[last]) {
			last = name
		}
	}
	// A partial read at an offset through the File API.
	f, err := share.Open(last)
	if err != nil {
		t.Fatal(err)
	}
	want := files[last]
	part := make([]byte, min(len(want)/2, 70_000))
	off := int64(len(want) / 3)
	if _, err := f.ReadAt(part, off); err != nil && err != io.EOF {
		t.Fatal(err)
	}
	f.Close()
	if !bytes.Equal(part, want[off:off+int64(len(part))]) {
		t.Fatal("ReadAt at an offset returned different bytes")
	}
	infos, err := share.ReadDir(".")
	if err != nil {
		t.Fatalf("list: %v", err)
	}
	var names []string
	for _, fi := range infos {
		names = append(names, fi.Name())
		if want, ok := files[fi.Name()]; ok && fi.Size() != int64(len(want)) {
			t.Fatalf("%s listed with size %d, want %d", fi.Name(), fi.Size(), len(want))
		}
	}
	for name := range files {
		if !slices.Contains(names, name) {
			t.Fatalf("%s missing from the listing %v", name, names)
		}
	}
	first := prefix + strconv.Itoa(sizes[0]) + ".bin"
	if err := share.Remove(first); err != nil {
		t.Fatal(err)
	}
	if _, err := share.Stat(first); err == nil {
		t.Fatalf("%s still there after Remove", first)
	}
	return files
}
