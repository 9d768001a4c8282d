package iwarp

import (
	"io"
	"net"
	"os"
	"syscall"
)

// rxBufSize is the receive buffer: small FPDUs are read many at a time
// into it; large payloads bypass it and go straight into their region.
const rxBufSize = 64 << 10

type rxReader struct {
	conn net.Conn
	buf  []byte
	r, w int
	// bulk is set while large payloads are arriving: then the buffer is
	// filled only a little past what is needed (the next header), so the
	// payload is read straight into its region instead of being copied
	// out of the buffer.
	bulk bool
	// fd, when set, is read without blocking (see drive.go): a read that
	// would block returns errWouldBlock, and the receive path resumes
	// where it stopped once the socket is readable. Without it, reads
	// block on conn.
	fd       int
	nonblock bool
	short    bool // the last read returned less than asked
	progress bool // bytes came in since the driver last looked
	d        *rxDrive
	iov      iovPair // readv's, kept to spare an allocation
}

// bulkPayload is the payload size from which the next read is kept short,
// and bulkRead how far past the need such a read goes.
const (
	bulkPayload = 8 << 10
	bulkRead    = 64
)

// rxBufMin is the receive buffer of a fresh endpoint. It doubles, up to
// rxBufSize, whenever a read fills it: an idle connection holds 4 KiB, a
// busy one batches reads of many small FPDUs.
const rxBufMin = 4 << 10

// grow replaces the buffer with one of size bytes holding the unread data.
func (x *rxReader) grow(size int) {
	nb := make([]byte, size)
	x.w = copy(nb, x.buf[x.r:x.w])
	x.r = 0
	x.buf = nb
}

// need makes at least n bytes available at buf[r:].
func (x *rxReader) need(n int) error {
	if x.w-x.r >= n {
		return nil
	}
	if n > len(x.buf) {
		x.grow(max(n, min(2*len(x.buf), rxBufSize)))
	} else if x.r > 0 {
		x.w = copy(x.buf, x.buf[x.r:x.w])
		x.r = 0
	}
	end := len(x.buf)
	if x.bulk {
		end = min(end, n+bulkRead)
	}
	for x.w < n {
		k, err := x.read(x.buf[x.w:end])
		x.w += k
		if err != nil {
			if err == io.EOF && x.w >= n {
				return nil
			}
			return err
		}
	}
	if x.w == len(x.buf) && len(x.buf) < rxBufSize && !x.bulk {
		// The socket had more than the buffer holds: batch more next time.
		x.grow(min(2*len(x.buf), rxBufSize))
	}
	return nil
}

// readInto fills dst[*got:] from the buffer, then directly from the
// socket, counting in *got (so that it resumes after errWouldBlock).
func (x *rxReader) readInto(dst []byte, got *int) error {
	if rem := len(dst) - *got; rem > x.w-x.r && rem < bulkPayload {
		// A small payload (an MSS-sized FPDU's) comes through the buffer:
		// its read takes all the socket has, the FPDUs behind it too,
		// where a read of its own would take this payload alone: two
		// reads per FPDU instead of one per buffer-full. It stays there
		// over a read that would block, so this resumes.
		if err := x.need(rem); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF // inside an FPDU
			}
			return err
		}
	}
	k := copy(dst[*got:], x.buf[x.r:x.w])
	x.r += k
	*got += k
	for *got < len(dst) {
		var n int
		var err error
		if x.nonblock && len(x.buf) >= bulkRead {
			// The buffer is empty: the payload's end and what follows
			// it (the trailer, the next FPDU's header) come in one
			// readv, where two reads would take them apart.
			x.r, x.w = 0, 0
			n, err = x.readv(dst[*got:], x.buf[:bulkRead])
			if over := n - (len(dst) - *got); over > 0 {
				x.w, n = over, n-over
			}
		} else {
			n, err = x.read(dst[*got:])
		}
		*got += n
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
	}
	return nil
}

// skip discards n bytes.
func (x *rxReader) skip(n int) error {
	for n > 0 {
		if x.r == x.w {
			if err := x.need(1); err != nil {
				return err
			}
		}
		k := min(n, x.w-x.r)
		x.r += k
		n -= k
	}
	return nil
}

// readv is read into a, then b, inside the read callback.
func (x *rxReader) readv(a, b []byte) (int, error) {
	if x.short && x.d.shouldYield() {
		x.short = false
		return 0, errWouldBlock
	}
	for {
		n, err := readvFD(x.fd, &x.iov, a, b)
		if err != syscall.EINTR {
			return x.took(n, err, len(a)+len(b), "readv")
		}
	}
}

// read reads from the socket for the receive path: without blocking
// inside the read callback (errWouldBlock when the socket is empty), with
// a blocking conn.Read otherwise.
func (x *rxReader) read(p []byte) (int, error) {
	if !x.nonblock {
		return x.conn.Read(p)
	}
	if x.short && x.d.shouldYield() {
		// The last read took less than it asked for, so the socket was
		// most likely empty, and the driver returns anyway: skip the read
		// that would only say so. (Not when the driver goes on to wait:
		// a FIN that came with the data makes no new readiness event.)
		x.short = false
		return 0, errWouldBlock
	}
	for {
		n, err := readFD(x.fd, p)
		if err != syscall.EINTR {
			return x.took(n, err, len(p), "read")
		}
	}
}

// took is the receive path's view of a non-blocking socket read (call,
// for the error) that asked for want bytes and got n, err.
func (x *rxReader) took(n int, err error, want int, call string) (int, error) {
	switch {
	case err == syscall.EAGAIN:
		return 0, errWouldBlock
	case err != nil:
		return 0, &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError(call, err)}
	case n == 0:
		return 0, io.EOF
	}
	x.progress = true
	x.short = n < want
	return n, nil
}
