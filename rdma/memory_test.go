package rdma

import (
	"errors"
	"os"
	"runtime"
	"testing"
	"unsafe"
)

func TestAllocMemory(t *testing.T) {
	for _, n := range []int{1, 4095, 4096, 1<<20 + 1} {
		b, err := AllocMemory(n)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) != n {
			t.Fatalf("len %d, want %d", len(b), n)
		}
		if runtime.GOOS != "windows" && runtime.GOOS != "plan9" && runtime.GOOS != "js" && runtime.GOOS != "wasip1" {
			if p := uintptr(unsafe.Pointer(&b[0])); p%uintptr(os.Getpagesize()) != 0 {
				t.Fatalf("%d bytes at %#x: not page-aligned", n, p)
			}
		}
		for i, c := range b {
			if c != 0 {
				t.Fatalf("byte %d is %d, want 0", i, c)
			}
		}
		b[0], b[n-1] = 1, 2
		if err := FreeMemory(b); err != nil {
			t.Fatal(err)
		}
	}
}

func TestAllocMemoryErrors(t *testing.T) {
	for _, n := range []int{0, -1} {
		if _, err := AllocMemory(n); !errors.Is(err, ErrInvalidArgument) {
			t.Fatalf("AllocMemory(%d): %v, want ErrInvalidArgument", n, err)
		}
	}
	if err := FreeMemory(nil); err != nil {
		t.Fatalf("FreeMemory(nil): %v", err)
	}
	if runtime.GOOS != "windows" && runtime.GOOS != "plan9" && runtime.GOOS != "js" && runtime.GOOS != "wasip1" {
		// Memory AllocMemory did not map is refused, not unmapped.
		if err := FreeMemory(make([]byte, 4096)); !errors.Is(err, ErrInvalidArgument) {
			t.Fatalf("FreeMemory of Go memory: %v, want ErrInvalidArgument", err)
		}
	}
}
