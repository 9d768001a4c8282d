//go:build unix

package client

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"syscall"

	"golang.org/x/sys/unix"
)

// fdPassing: the daemon protocol passes fds with SCM_RIGHTS, which every
// unix has, in the messages of a SOCK_SEQPACKET unix socket, which macOS
// and AIX lack (Dial would fail with EPROTONOSUPPORT; this says why).
// errors.Is(err, errors.ErrUnsupported) holds.
func fdPassing() error {
	switch runtime.GOOS {
	case "darwin", "ios", "aix":
		return fmt.Errorf("smbdirectd: %w on %s: the daemon protocol needs SOCK_SEQPACKET unix sockets", errors.ErrUnsupported, runtime.GOOS)
	}
	return nil
}

func rightsSpace(nfds int) int { return unix.CmsgSpace(4 * nfds) }

func unixRights(fds []int) []byte { return unix.UnixRights(fds...) }

// parseRights returns the fds passed in a message's control data.
func parseRights(oob []byte) []int {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil
	}
	var fds []int
	for _, m := range msgs {
		// x/sys's ParseUnixRights indexes past its slice when the data is
		// not whole fds (found by FuzzParseRights); the kernel never sends
		// such a message, but this parser does not rely on it.
		if len(m.Data)%4 != 0 {
			continue
		}
		if f, err := unix.ParseUnixRights(&m); err == nil {
			fds = append(fds, f...)
		}
	}
	return fds
}

func closeFD(fd int) { unix.Close(fd) }

// mapShared maps the first n bytes of f shared, read-write.
func mapShared(f *os.File, n int) ([]byte, error) {
	return syscall.Mmap(int(f.Fd()), 0, n, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
}

func unmap(b []byte) error { return syscall.Munmap(b) }

// unlinkedTemp returns a temporary file of n bytes already unlinked: where
// there is no memfd, the daemon and this process share its pages the same
// way, and it goes away with its last fd.
func unlinkedTemp(n int) (*os.File, error) {
	f, err := os.CreateTemp("", "smbdirect-registration-*")
	if err != nil {
		return nil, err
	}
	if err := os.Remove(f.Name()); err != nil {
		f.Close()
		return nil, err
	}
	return sized(f, n)
}
