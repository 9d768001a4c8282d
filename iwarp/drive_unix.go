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

// readFD reads the non-blocking socket fd. The reads are raw system
// calls, without the scheduler's bookkeeping of one that may block: the
// socket never blocks, and a receiver woken for each arriving segment
// (a real peer's MSS-sized FPDUs) makes many small reads, where that
// bookkeeping cost a third of the read's CPU (waking the runtime's
// monitor thread of an otherwise idle process; profile of
// TestLinuxGoSMB2/cpu).
func readFD(fd int, p []byte) (int, error) {
	var ptr unsafe.Pointer
	if len(p) > 0 {
		ptr = unsafe.Pointer(&p[0])
	}
	n, _, errno := syscall.RawSyscall(syscall.SYS_READ, uintptr(fd), uintptr(ptr), uintptr(len(p)))
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}

// iovPair is readvFD's vector, kept by the caller.
type iovPair = [2]syscall.Iovec

// readvFD reads into a, then b, with one readv (raw, as readFD); iov is
// the caller's (no allocation per call).
func readvFD(fd int, iov *iovPair, a, b []byte) (int, error) {
	iov[0] = syscall.Iovec{Base: &a[0]}
	iov[0].SetLen(len(a))
	iov[1] = syscall.Iovec{Base: &b[0]}
	iov[1].SetLen(len(b))
	n, _, errno := syscall.RawSyscall(syscall.SYS_READV, uintptr(fd), uintptr(unsafe.Pointer(&iov[0])), 2)
	*iov = [2]syscall.Iovec{} // drop the references
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}
