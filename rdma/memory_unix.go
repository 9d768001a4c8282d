//go:build unix

package rdma

import (
	"os"
	"syscall"
)

func allocMemory(n int) ([]byte, error) {
	page := os.Getpagesize()
	size := (n + page - 1) / page * page
	b, err := syscall.Mmap(-1, 0, size, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		return nil, err
	}
	// The capacity stays the mapping's: Munmap finds the mapping by its
	// last byte.
	return b[:n], nil
}

func freeMemory(b []byte) error { return syscall.Munmap(b[:cap(b)]) }
