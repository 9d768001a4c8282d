//go:build unix

package smbd

import (
	"os"
	"syscall"
)

// mmapFiles: RegisterFile maps file ranges. The tests of the copying
// fallback (the systems without mmap) turn it off.
var mmapFiles = true

func mmap(f *os.File, off int64, n int, writable bool) ([]byte, error) {
	prot := syscall.PROT_READ
	if writable {
		prot |= syscall.PROT_WRITE
	}
	return syscall.Mmap(int(f.Fd()), off, n, prot, syscall.MAP_SHARED)
}

func munmap(b []byte) error { return syscall.Munmap(b) }
