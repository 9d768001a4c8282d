//go:build linux

package server

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/smbdirect/smbdirect/internal/framing"
	"github.com/smbdirect/smbdirect/smb2rdma"
	"github.com/smbdirect/smbdirect/smbd"
	"github.com/smbdirect/smbdirect/smbdirectd/server/internal/channel"
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
	// ch is the server-side RDMA channel (a ListenServerChannel
	// listener's connections), nil without; ctx ends its transfers when
	// the connection closes.
	ch     *channel.Channel
	ctx    context.Context
	cancel context.CancelFunc
	// xfers counts the channel calls in progress (each may wait for RDMA
	// transfers): close lets them finish before it cancels ctx.
	xfers atomic.Int32
	// oc is the client-side RDMA channel (a Dial with DialClientChannel),
	// nil without: up and down carry the stream through it.
	oc *smb2rdma.Conn
	// stream is what up and down read and write: c, or oc.
	stream io.ReadWriter
}

// channelKind says which RDMA channel, if any, a connection's pumps run.
type channelKind int

const (
	noChannel     channelKind = iota
	serverChannel             // a ListenServerChannel listener's connection
	clientChannel             // a DialClientChannel connection
)

// newDconn creates the socketpair; the caller sends the returned fd to the
// client and closes it.
func newDconn(cl *client, sc *smbd.Conn, kind channelKind) (*dconn, int, error) {
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
	d := &dconn{id: s.handles.Add(1), owner: cl, c: sc, sock: nc.(*net.UnixConn), stream: sc}
	d.ctx, d.cancel = context.WithCancel(context.Background())
	switch kind {
	case serverChannel:
		d.ch = channel.New(sc, sc.Info().MaxReadWriteSize, 0, &s.channel)
	case clientChannel:
		d.oc = smb2rdma.WrapChannel(&chanConn{Conn: sc, sent: &s.sent, received: &s.received}, &smb2rdma.Config{Logger: cl.s.log})
		d.stream = d.oc
	}
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
	if d.ch != nil {
		go d.upChannel()
		go d.downChannel()
	} else {
		go d.up()
		go d.down()
	}
	go func() {
		d.pumps.Wait()
		d.close()
		d.owner.s.wg.Done()
	}()
}

// discard closes a connection that is not to be started (its client is
// gone): no pump will release the wait group's count newDconn took, so
// discard does, or Close would wait for it for ever.
func (d *dconn) discard() {
	d.close()
	d.owner.s.wg.Done()
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
	info := d.c.Info()
	max := info.MaxFragmentedSend
	if d.oc != nil {
		// A WRITE of up to MaxReadWriteSize goes by RDMA, not in the message.
		max = min(info.MaxFragmentedSend+info.MaxReadWriteSize, framing.MaxSize)
	}
	// Reads take what the socket has, so a small PDU costs one read, not
	// one for its header and one for its body; buf[r:w] is unprocessed.
	buf := make([]byte, pumpBufMin)
	r, w := 0, 0
	for {
		for w-r < framing.HeaderLen {
			if r > 0 {
				w, r = copy(buf, buf[r:w]), 0
			}
			n, err := d.sock.Read(buf[w:])
			if n == 0 && err != nil {
				return // every copy of the client's fd is closed: hang up
			}
			w += n
			if w == len(buf) {
				buf = growPumpBuf(buf)
			}
		}
		hdr := buf[r : r+framing.HeaderLen]
		size, ok := framing.Parse(hdr)
		if !ok || size > max {
			d.owner.log.Warn("smbdirectd: bad PDU from client, closing", "conn", d.id, "header", hdr, "max", max)
			s.errs.Add(1)
			return
		}
		var err error
		if d.oc != nil {
			err = d.passWhole(buf, &r, &w, framing.HeaderLen+size)
		} else {
			d.pdu.Lock()
			buf, err = d.passPDU(buf, &r, &w, framing.HeaderLen+size)
			d.pdu.Unlock()
		}
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, net.ErrClosed) {
				s.errs.Add(1)
				d.owner.log.Info("smbdirectd: connection failed", "conn", d.id, "err", err)
			}
			return
		}
		if d.oc == nil { // the client channel counts its messages
			s.sent.Add(int64(size))
		}
	}
}

// passPDU writes the framed PDU of total bytes that starts at buf[*r]:
// what is buffered at once, the rest as it arrives (the SMB Direct send of
// a large PDU overlaps the client's writing). Reads take what the socket
// has, also past the PDU's end: those bytes stay in buf[*r:*w] for the
// next PDU, so a PDU's tail is never a read (and an SMB Direct message) of
// its own.
func (d *dconn) passPDU(buf []byte, r, w *int, total int) ([]byte, error) {
	left := total
	for {
		k := min(left, *w-*r)
		if k > 0 {
			if _, err := d.stream.Write(buf[*r : *r+k]); err != nil {
				return buf, err
			}
			*r += k
			left -= k
		}
		if left == 0 {
			return buf, nil
		}
		// All of buf is consumed: read afresh from its start (into a
		// larger buf if the last read filled it).
		if *w == len(buf) {
			buf = growPumpBuf(buf)
		}
		n, err := d.sock.Read(buf)
		if n == 0 && err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return buf, err
		}
		*r, *w = 0, n
	}
}

// passWhole is passPDU for a connection with the client-side channel:
// smb2rdma takes a READ or WRITE whole (a WRITE's data is copied once,
// into the registration), so the PDU is gathered here, in a pooled buffer
// read into directly, rather than in pieces smb2rdma would copy together.
func (d *dconn) passWhole(buf []byte, r, w *int, total int) error {
	p := channel.Buffers.Get(total)
	defer channel.Buffers.Put(p)
	pdu := (*p)[:total]
	k := copy(pdu, buf[*r:*w])
	*r += k
	if k < total {
		if _, err := io.ReadFull(d.sock, pdu[k:]); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
	}
	d.pdu.Lock()
	defer d.pdu.Unlock()
	_, err := d.oc.Write(pdu)
	return err
}

// A pump's buffer starts at pumpBufMin and doubles, up to pumpBufMax,
// whenever a read fills it: idle connections stay small, bulk transfers
// take fewer, larger reads and writes.
const (
	pumpBufMin = 16 << 10
	pumpBufMax = 256 << 10
)

func growPumpBuf(buf []byte) []byte {
	if len(buf) >= pumpBufMax {
		return buf
	}
	nb := make([]byte, 2*len(buf))
	copy(nb, buf)
	return nb
}

// down carries the peer's PDUs, Direct TCP framed, to the client. When
// the client stops reading, the write blocks, so nothing more is read
// from the SMB Direct connection and its receive buffers are not
// reposted: the peer runs out of credits. Memory stays bounded.
func (d *dconn) down() {
	defer d.pumps.Done()
	defer d.close()
	if d.oc != nil {
		// READ data goes from the memory the peer RDMA-wrote straight to
		// the socket (writev), not through buf.
		d.oc.WriteTo(d.sock)
		return
	}
	buf := make([]byte, pumpBufMin)
	for {
		n, err := d.stream.Read(buf)
		if n > 0 {
			d.owner.s.received.Add(int64(n))
			if _, werr := d.sock.Write(buf[:n]); werr != nil {
				return
			}
			if n == len(buf) {
				buf = growPumpBuf(buf)
			}
		}
		if err != nil {
			return // the peer went: the client reads EOF
		}
	}
}

// upChannel is up for a connection with the server-side RDMA channel:
// each PDU is read whole (a READ response's data must be at hand to be
// RDMA-written before the response goes), rewritten and sent as one
// message. One PDU in memory at a time: back-pressure is the socket
// buffer, as for up.
func (d *dconn) upChannel() {
	defer d.pumps.Done()
	defer d.close()
	s := d.owner.s
	info := d.c.Info()
	// A READ response carries up to MaxReadWriteSize of data that will
	// not be in the message sent.
	max := min(info.MaxFragmentedSend+info.MaxReadWriteSize, framing.MaxSize)
	br := bufio.NewReaderSize(d.sock, pumpBufMin)
	var hdr [framing.HeaderLen]byte
	for {
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			return // every copy of the client's fd is closed: hang up
		}
		size, ok := framing.Parse(hdr[:])
		if !ok || size > max {
			d.owner.log.Warn("smbdirectd: bad PDU from client, closing", "conn", d.id, "header", hdr[:], "max", max)
			s.errs.Add(1)
			return
		}
		buf := channel.Buffers.Get(size)
		err := d.passChannel(br, (*buf)[:size])
		channel.Buffers.Put(buf)
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, net.ErrClosed) {
				s.errs.Add(1)
				d.owner.log.Info("smbdirectd: connection failed", "conn", d.id, "err", err)
			}
			return
		}
	}
}

func (d *dconn) passChannel(br *bufio.Reader, pdu []byte) error {
	if _, err := io.ReadFull(br, pdu); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return err
	}
	d.xfers.Add(1)
	out, inv, err := d.ch.FromProgram(d.ctx, pdu)
	d.xfers.Add(-1)
	if err != nil {
		return err
	}
	d.pdu.Lock()
	if inv != 0 {
		err = d.c.WriteMessageInvalidate(out, inv)
	} else {
		err = d.c.WriteMessage(out)
	}
	d.pdu.Unlock()
	if err == nil {
		d.owner.s.sent.Add(int64(len(out)))
	}
	return err
}

// downChannel is down for a connection with the server-side RDMA
// channel: each message is taken whole, rewritten (a WRITE's data
// RDMA-read into it) and written to the client. One message in memory at
// a time: when the client stops reading, nothing more is read or
// RDMA-read from the peer, which runs out of credits.
func (d *dconn) downChannel() {
	defer d.pumps.Done()
	defer d.close()
	s := d.owner.s
	var hdr [framing.HeaderLen]byte
	for {
		if _, err := io.ReadFull(d.c, hdr[:]); err != nil {
			return // the peer went: the client reads EOF
		}
		size, ok := framing.Parse(hdr[:])
		if !ok {
			return // cannot happen: smbd frames what it received
		}
		in := channel.Buffers.Get(framing.HeaderLen + size)
		err := d.passDown((*in)[:framing.HeaderLen+size])
		channel.Buffers.Put(in)
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !errors.Is(err, channel.ErrClosed) && !errors.Is(err, context.Canceled) {
				s.errs.Add(1)
				d.owner.log.Info("smbdirectd: connection failed", "conn", d.id, "err", err)
			}
			return
		}
	}
}

func (d *dconn) passDown(in []byte) error {
	if _, err := io.ReadFull(d.c, in[framing.HeaderLen:]); err != nil {
		return err
	}
	d.owner.s.received.Add(int64(len(in)))
	d.xfers.Add(1)
	out, buf, err := d.ch.FromPeer(d.ctx, in)
	d.xfers.Add(-1)
	if err != nil {
		return err
	}
	_, err = d.sock.Write(out)
	channel.Buffers.Put(buf)
	return err
}

// closeGrace bounds how long close waits for the RDMA transfers in
// flight before it abandons them.
const closeGrace = 5 * time.Second

// close ends the SMB Direct connection and the stream.
//
// RDMA transfers in flight (a WRITE's data being RDMA-read when the
// program dies, say) may finish first, up to closeGrace, so the
// connection ends with a FIN. Abandoning one resets the connection under
// the peer's Read Response; Linux siw then reports a QP error, and
// cifs.ko 6.12 leaves a sender waiting for credits (holding the mount's
// send lock, so no reconnection) until the CM's disconnect event, which
// came 2 minutes later (TestLinuxSambaFaults, about 1 run in 10).
func (d *dconn) close() {
	d.once.Do(func() {
		for end := time.Now().Add(closeGrace); d.xfers.Load() > 0 && time.Now().Before(end); {
			time.Sleep(2 * time.Millisecond)
		}
		d.cancel()
		if d.ch != nil {
			d.ch.Close()
		}
		if d.oc != nil {
			d.oc.Close() // also releases its registrations
		}
		d.c.Close()
		d.sock.Close()
		cl, s := d.owner, d.owner.s
		cl.mu.Lock()
		delete(cl.conns, d.id)
		cl.mu.Unlock()
		s.mu.Lock()
		delete(s.live, d)
		if d.oc != nil {
			// Its counts join the totals as it leaves s.live: Stats adds
			// those of the live ones, also under s.mu.
			s.clientDone.add(d.oc.Stats())
		}
		s.mu.Unlock()
		s.conns.Add(-1)
		cl.log.Info("smbdirectd: connection closed", "conn", d.id)
	})
}
