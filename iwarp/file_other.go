//go:build !linux

package iwarp

import "syscall"

// sendfileConn: sendfile(2) is used on Linux only (the BSDs' and macOS's
// differ: a non-blocking socket may take part of the range and still report
// EAGAIN), so elsewhere file ranges are read and copied.
func sendfileConn(any) syscall.RawConn { return nil }

func sendfileN(syscall.RawConn, interface{ Fd() uintptr }, int64, int) error {
	panic("iwarp: no sendfile on this system")
}
