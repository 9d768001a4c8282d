// The inline send path's non-blocking writev(2) (see raw_other.go).

package iwarp

import (
	"net"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// rawWriter does a non-blocking writev on a socket, for the inline send
// path: when the socket buffer is full it returns what it wrote instead of
// parking the caller. Its buffers are reused: no allocation per call.
type rawWriter struct {
	rc   syscall.RawConn
	iov  []unix.Iovec
	bufs [][]byte
	n    int
	err  error
	fn   func(fd uintptr) bool
}

// rawWrites is off in the tests of the path the other systems take.
var rawWrites = true

func newRawWriter(c net.Conn) *rawWriter {
	if !rawWrites {
		return nil
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	w := &rawWriter{rc: rc, iov: make([]unix.Iovec, 0, 8)} // grows with use
	w.fn = w.do
	return w
}

func (w *rawWriter) do(fd uintptr) bool {
	iov := w.iov[:0]
	for _, b := range w.bufs {
		if len(b) > 0 {
			v := unix.Iovec{Base: &b[0]}
			v.SetLen(len(b))
			iov = append(iov, v)
		}
	}
	w.n, w.err = 0, nil
	if len(iov) == 0 {
		return true
	}
	for {
		r, _, errno := unix.Syscall(unix.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&iov[0])), uintptr(len(iov)))
		switch errno {
		case 0:
			w.n = int(r)
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			// Socket full: leave the rest to the transmit loop.
		default:
			w.err = errno
		}
		clear(iov) // drop references to the payloads
		w.iov = iov[:0]
		return true // never wait for writability here
	}
}

// writev writes what the socket takes now and returns the byte count.
func (w *rawWriter) writev(bufs [][]byte) (int, error) {
	w.bufs = bufs
	err := w.rc.Write(w.fn)
	w.bufs = nil
	if err != nil {
		return 0, err
	}
	return w.n, w.err
}
