package daemon

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/smbdirect/smbdirect/smbd"
)

// streamBuffer is the socket buffer asked for on each end of a stream
// (the kernel caps it at net.core.wmem_max/rmem_max).
const streamBuffer = 4 << 20

// dconn is an SMB Direct connection handed to a client as a stream fd.
type dconn struct {
	id    uint64
	owner *client
	c     *smbd.Conn
	sock  *net.UnixConn // the daemon's end of the socketpair
	// pdu is held while a PDU from the stream is being passed on, so a
	// Send from the control socket goes between PDUs.
	pdu   sync.Mutex
	once  sync.Once
	pumps sync.WaitGroup
}

// newDconn creates the socketpair; the caller sends the returned fd to the
// client and closes it.
func newDconn(cl *client, sc *smbd.Conn) (*dconn, int, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, -1, err
	}
	// Room for a few large PDUs in each direction, so a writing client and
	// the daemon's sending overlap instead of taking turns.
	for _, fd := range fds {
		// The FORCE variants pass the sysctl caps when we may (root).
		if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, streamBuffer) != nil {
			unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, streamBuffer)
		}
		if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, streamBuffer) != nil {
			unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, streamBuffer)
		}
	}
	f := os.NewFile(uintptr(fds[0]), "smbdirect-stream")
	nc, err := net.FileConn(f)
	f.Close()
	if err != nil {
		unix.Close(fds[1])
		return nil, -1, err
	}
	s := cl.s
	d := &dconn{id: s.handles.Add(1), owner: cl, c: sc, sock: nc.(*net.UnixConn)}
	cl.mu.Lock()
	cl.conns[d.id] = d
	cl.pendingConns--
	cl.mu.Unlock()
	s.mu.Lock()
	s.live[d] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	s.conns.Add(1)
	s.connsTotal.Add(1)
	cl.log.Info("smbdirectd: connection", "conn", d.id, "remote", sc.RemoteAddr())
	return d, fds[1], nil
}

func (d *dconn) start() {
	d.pumps.Add(2)
	go d.up()
	go d.down()
	go func() {
		d.pumps.Wait()
		d.close()
		d.owner.s.wg.Done()
	}()
}

// up carries PDUs the client writes to the peer. Each PDU is passed on as
// its bytes arrive (the SMB Direct send of a large PDU overlaps the
// client's writing), under d.pdu so that Send requests from the control
// socket go between PDUs, never inside one. When the client stops
// writing, nothing is read: back-pressure is the socket buffer.
func (d *dconn) up() {
	defer d.pumps.Done()
	defer d.close()
	s := d.owner.s
	max := d.c.Info().MaxFragmentedSend
	buf := make([]byte, 64<<10)
	for {
		if _, err := io.ReadFull(d.sock, buf[:4]); err != nil {
			return // every copy of the client's fd is closed: hang up
		}
		size := int(binary.BigEndian.Uint32(buf[:4]))
		if buf[0] != 0 || size == 0 || size > max {
			d.owner.log.Warn("smbdirectd: bad PDU from client, closing", "conn", d.id, "header", buf[:4], "max", max)
			s.errs.Add(1)
			return
		}
		d.pdu.Lock()
		err := d.passPDU(buf, size)
		d.pdu.Unlock()
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, net.ErrClosed) {
				s.errs.Add(1)
				d.owner.log.Info("smbdirectd: connection failed", "conn", d.id, "err", err)
			}
			return
		}
		s.sent.Add(int64(size))
	}
}

// passPDU writes the framed PDU whose header is in buf[:4] and whose size
// bytes follow on the socket.
func (d *dconn) passPDU(buf []byte, size int) error {
	have := 4
	for left := size; left > 0; {
		n, err := d.sock.Read(buf[have:min(len(buf), have+left)])
		if n == 0 && err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
		left -= n
		if _, err := d.c.Write(buf[:have+n]); err != nil {
			return err
		}
		have = 0
	}
	return nil
}

// down carries the peer's PDUs, Direct TCP framed, to the client. When
// the client stops reading, the write blocks, so nothing more is read
// from the SMB Direct connection and its receive buffers are not
// reposted: the peer runs out of credits. Memory stays bounded.
func (d *dconn) down() {
	defer d.pumps.Done()
	defer d.close()
	buf := make([]byte, 64<<10)
	for {
		n, err := d.c.Read(buf)
		if n > 0 {
			d.owner.s.received.Add(int64(n))
			if _, werr := d.sock.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return // the peer went: the client reads EOF
		}
	}
}

// close ends the SMB Direct connection and the stream.
func (d *dconn) close() {
	d.once.Do(func() {
		d.c.Close()
		d.sock.Close()
		cl, s := d.owner, d.owner.s
		cl.mu.Lock()
		delete(cl.conns, d.id)
		cl.mu.Unlock()
		s.mu.Lock()
		delete(s.live, d)
		s.mu.Unlock()
		s.conns.Add(-1)
		cl.log.Info("smbdirectd: connection closed", "conn", d.id)
	})
}
