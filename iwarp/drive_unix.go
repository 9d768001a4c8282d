//go:build unix

package iwarp

import (
	"syscall"
	"unsafe"
)

// rawReads: the receive path may read the socket itself inside its read
// callback, where Go's sockets are non-blocking (EAGAIN when empty). The
// tests of the portable path turn it off.
var rawReads = true

func readFD(fd int, p []byte) (int, error) { return syscall.Read(fd, p) }

// iovPair is readvFD's vector, kept by the caller.
type iovPair = [2]syscall.Iovec

// readvFD reads into a, then b, with one readv; iov is the caller's (no
// allocation per call).
func readvFD(fd int, iov *iovPair, a, b []byte) (int, error) {
	iov[0] = syscall.Iovec{Base: &a[0]}
	iov[0].SetLen(len(a))
	iov[1] = syscall.Iovec{Base: &b[0]}
	iov[1].SetLen(len(b))
	n, _, errno := syscall.Syscall(syscall.SYS_READV, uintptr(fd), uintptr(unsafe.Pointer(&iov[0])), 2)
	*iov = [2]syscall.Iovec{} // drop the references
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}
