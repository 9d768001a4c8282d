package iwarp

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// sendfileConn returns the raw socket behind conn for sendfileN, or nil
// (no socket, or useSendfile is off): then file ranges are read and copied.
func sendfileConn(conn any) syscall.RawConn {
	if !useSendfile {
		return nil
	}
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}

// sendfileN sends exactly n bytes of f at off to the socket behind rc.
func sendfileN(rc syscall.RawConn, f interface{ Fd() uintptr }, off int64, n int) error {
	var serr error
	src := int(f.Fd())
	err := rc.Write(func(fd uintptr) bool {
		for n > 0 {
			k, err := unix.Sendfile(int(fd), src, &off, n)
			if err == unix.EAGAIN {
				return false // wait until writable
			}
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				serr = err
				return true
			}
			if k == 0 {
				serr = errFileShort
				return true
			}
			n -= k
		}
		return true
	})
	if err != nil {
		return err
	}
	return serr
}
