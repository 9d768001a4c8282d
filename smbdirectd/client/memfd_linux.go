package client

import (
	"os"

	"golang.org/x/sys/unix"
)

// memfd returns an anonymous shared file of n bytes for a registration.
func memfd(n int) (*os.File, error) {
	fd, err := unix.MemfdCreate("smbdirect-registration", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, err
	}
	return sized(os.NewFile(uintptr(fd), "memfd"), n)
}
