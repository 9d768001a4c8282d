//go:build linux

package server_test

// The server-side RDMA channel end to end: our client side (smb2rdma over
// smbd.Dial, or hand-built requests) against a listener with
// ListenServerChannel, and behind the daemon a fake SMB2 server that only
// speaks inline READ and WRITE over its stream fd.

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/smbdirect/smbdirect/internal/leakcheck"
	"github.com/smbdirect/smbdirect/internal/smb2"
	"github.com/smbdirect/smbdirect/smb2rdma"
	"github.com/smbdirect/smbdirect/smbd"
	"github.com/smbdirect/smbdirect/smbdirectd/client"
	"github.com/smbdirect/smbdirect/smbdirectd/server"
)

const (
	statusEndOfFile       = 0xc0000011
	statusInvalidParam    = 0xc000000d
	commandEcho           = 0x000d
	smbdMaxReadWrite      = 1 << 20 // smbd's default MaxReadWriteSize
	programInterimAsyncID = 0x77
)

// program is a fake SMB2 server behind the daemon: it serves one byte
// array with inline READ and WRITE, answers NEGOTIATE (3.0.2) and ECHO,
// handles compound chains, and refuses a READ or WRITE with an RDMA
// channel as Samba does (it knows nothing of RDMA).
type program struct {
	conn net.Conn

	mu       sync.Mutex
	interim  bool // every READ gets an interim (async, STATUS_PENDING) response first
	file     []byte
	channels int // READ/WRITE requests that still had an RDMA channel
	reads    []int
	writes   []int
}

func (p *program) serve() error {
	for {
		req, err := readPDU(p.conn)
		if err != nil {
			return err
		}
		var resp []byte
		var interim []byte
		for off := 0; off < len(req); {
			e, next, err := smb2.Element(req, off)
			if err != nil {
				return err
			}
			start := len(resp)
			r, in := p.handle(e)
			if in != nil {
				interim = in
			}
			resp = append(resp, r...)
			if next < len(req) {
				for len(resp)%8 != 0 {
					resp = append(resp, 0)
				}
				smb2.SetNextCommand(resp[start:], uint32(len(resp)-start))
			}
			off = next
		}
		if interim != nil {
			if err := writePDU(p.conn, interim); err != nil {
				return err
			}
		}
		if err := writePDU(p.conn, resp); err != nil {
			return err
		}
	}
}

func respHeader(req []byte, status uint32, async bool) []byte {
	h := append([]byte(nil), req[:smb2.HeaderLen]...)
	flags := binary.LittleEndian.Uint32(h[16:])&smb2.FlagRelated | smb2.FlagResponse
	if async {
		flags |= smb2.FlagAsync
		binary.LittleEndian.PutUint64(h[32:], programInterimAsyncID)
	}
	binary.LittleEndian.PutUint32(h[16:], flags)
	binary.LittleEndian.PutUint32(h[8:], status)
	binary.LittleEndian.PutUint32(h[20:], 0)
	return h
}

func errorResponse(req []byte, status uint32, async bool) []byte {
	return append(respHeader(req, status, async), 9, 0, 0, 0, 0, 0, 0, 0, 0)
}

// handle answers one request; interim is an interim response to send
// before the chain's response.
func (p *program) handle(req []byte) (resp, interim []byte) {
	h, _ := smb2.ParseHeader(req)
	p.mu.Lock()
	defer p.mu.Unlock()
	switch h.Command {
	case smb2.CommandNegotiate:
		body := make([]byte, 64)
		binary.LittleEndian.PutUint16(body, 65)
		binary.LittleEndian.PutUint16(body[4:], smb2.Dialect302)
		return append(respHeader(req, 0, false), body...), nil
	case smb2.CommandRead:
		r, err := smb2.ParseReadRequest(req)
		if err != nil || r.Channel != smb2.ChannelNone || len(r.ChannelInfo) != 0 {
			p.channels++
			return errorResponse(req, statusInvalidParam, false), nil
		}
		p.reads = append(p.reads, int(r.Length))
		if p.interim {
			interim = errorResponse(req, smb2.StatusPending, true)
		}
		if r.Offset >= uint64(len(p.file)) {
			return errorResponse(req, statusEndOfFile, p.interim), interim
		}
		data := p.file[r.Offset:min(uint64(len(p.file)), r.Offset+uint64(r.Length))]
		b := respHeader(req, 0, p.interim)
		b = binary.LittleEndian.AppendUint16(b, 17)
		b = append(b, smb2.ReadResponseDataOffset, 0)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(data)))
		b = append(b, make([]byte, 8)...)
		return append(b, data...), interim
	case smb2.CommandWrite:
		w, err := smb2.ParseWriteRequest(req)
		if err != nil || w.Channel != smb2.ChannelNone || len(w.ChannelInfo) != 0 || w.RemainingBytes != 0 {
			p.channels++
			return errorResponse(req, statusInvalidParam, false), nil
		}
		p.writes = append(p.writes, len(w.Data))
		if end := int(w.Offset) + len(w.Data); end > len(p.file) {
			p.file = append(p.file, make([]byte, end-len(p.file))...)
		}
		copy(p.file[w.Offset:], w.Data)
		b := respHeader(req, 0, false)
		b = binary.LittleEndian.AppendUint16(b, 17)
		b = append(b, 0, 0)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(w.Data)))
		return append(b, make([]byte, 8)...), nil
	}
	return errorResponse(req, 0, false), nil
}

func (p *program) seen() (channels int, reads, writes []int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.channels, append([]int(nil), p.reads...), append([]int(nil), p.writes...)
}

// channelListener has a new client of s listen on 127.0.0.1 with the
// server-side channel (ListenServerChannel), and accept one connection:
// it arrives on the channel, nil if Accept failed (and t has the error).
func channelListener(t *testing.T, s *server.Server) (*client.Client, *client.Listener, <-chan *client.Conn) {
	t.Helper()
	cl, err := client.Dial(ctx(t), s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	l, err := cl.ListenFlags(ctx(t), "127.0.0.1:0", client.ListenServerChannel)
	if err != nil {
		cl.Close()
		t.Fatal(err)
	}
	accepted := make(chan *client.Conn, 1)
	go func() {
		c, err := l.Accept(ctx(t))
		if err != nil {
			t.Error(err)
		}
		accepted <- c
	}()
	return cl, l, accepted
}

// channelSetup starts a daemon, a ListenServerChannel listener and the
// fake program behind it, and dials the listener with smbd; the program
// is nil when serve is false (the test drives the stream itself).
func channelSetup(t *testing.T, serve bool) (*server.Server, *smbd.Conn, *program, *client.Conn) {
	t.Helper()
	s := startDaemon(t, nil)
	cl, l, accepted := channelListener(t, s)
	t.Cleanup(func() { cl.Close() })
	sc, err := smbd.Dial(ctx(t), l.Addr, smbdConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sc.Close() })
	pc := <-accepted
	if pc == nil {
		t.FailNow()
	}
	t.Cleanup(func() { pc.Close() })
	if !serve {
		return s, sc, nil, pc
	}
	nc, err := pc.NetConn()
	if err != nil {
		t.Fatal(err)
	}
	p := &program{conn: nc}
	done := make(chan error, 1)
	go func() { done <- p.serve() }()
	t.Cleanup(func() {
		sc.Close()
		nc.Close()
		if err := <-done; err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
			t.Errorf("program: %v", err)
		}
	})
	return s, sc, p, pc
}

// exchange sends a framed PDU through w and returns the final response
// (interim ones skipped).
func exchange(t *testing.T, w io.ReadWriter, pdu []byte) []byte {
	t.Helper()
	if err := writePDU(w, pdu); err != nil {
		t.Fatal(err)
	}
	for {
		resp, err := readPDU(w)
		if err != nil {
			t.Fatal(err)
		}
		h, err := smb2.ParseHeader(resp)
		if err != nil {
			t.Fatal(err)
		}
		if h.Flags&smb2.FlagAsync == 0 || h.Status != smb2.StatusPending {
			return resp
		}
	}
}

type fileClient struct {
	t  *testing.T
	w  io.ReadWriter
	id uint64
}

func (c *fileClient) next() uint64 { c.id++; return c.id }

func (c *fileClient) write(off int, data []byte) {
	for len(data) > 0 {
		k := min(len(data), smbdMaxReadWrite)
		req := smb2.AppendWriteRequest(smb2.AppendHeader(nil, smb2.CommandWrite, c.next(), 1, 1, 1, 1),
			&smb2.WriteRequest{Offset: uint64(off), Data: data[:k]})
		h, _ := smb2.ParseHeader(exchange(c.t, c.w, req))
		if h.Status != 0 {
			c.t.Fatalf("WRITE of %d bytes at %d: status %#x", k, off, h.Status)
		}
		data, off = data[k:], off+k
	}
}

func (c *fileClient) read(off, n int) []byte {
	var out []byte
	for n > 0 {
		k := min(n, smbdMaxReadWrite)
		req := smb2.AppendReadRequest(smb2.AppendHeader(nil, smb2.CommandRead, c.next(), 1, 1, 1, 1),
			&smb2.ReadRequest{Length: uint32(k), Offset: uint64(off)})
		resp := exchange(c.t, c.w, req)
		r, err := smb2.ParseReadResponse(resp)
		if h, _ := smb2.ParseHeader(resp); err != nil || h.Status != 0 || len(r.Data) != k {
			c.t.Fatalf("READ of %d bytes at %d: status %#x, %d bytes, %v", k, off, h.Status, len(r.Data), err)
		}
		out = append(out, r.Data...)
		n, off = n-k, off+k
	}
	return out
}

// TestServerChannel: smb2rdma's WRITEs and READs of 4095 bytes (inline),
// 4096, 1 MiB+1 and several MiB (RDMA, split at MaxReadWriteSize) through
// the daemon's channel to a program that knows only inline READ/WRITE;
// the counters equal the bytes; with _V1_INVALIDATE every registration
// is invalidated by the daemon's Send with Invalidate.
func TestServerChannel(t *testing.T) {
	for _, inv := range []bool{true, false} {
		name := "V1_INVALIDATE"
		if !inv {
			name = "V1"
		}
		t.Run(name, func(t *testing.T) {
			leakcheck.Check(t)
			s, sc, p, _ := channelSetup(t, true)
			p.mu.Lock()
			p.interim = !inv // interim responses ride along in one of the two runs
			p.mu.Unlock()
			oc := smb2rdma.Wrap(sc, &smb2rdma.Config{NoInvalidate: !inv})
			exchange(t, oc, smb2.AppendNegotiateRequest(nil, 0, [16]byte{}, []uint16{smb2.Dialect302}))
			fc := &fileClient{t: t, w: oc}
			off, offloaded := 0, 0
			for i, n := range []int{4095, 4096, 1<<20 + 1, 3<<20 + 5} {
				data := make([]byte, n)
				for j := range data {
					data[j] = byte(j*31+i) ^ byte(j>>9)
				}
				fc.write(off, data)
				got := fc.read(off, n)
				if sha256.Sum256(got) != sha256.Sum256(data) {
					t.Fatalf("%d bytes: read back differs", n)
				}
				for k := n; k > 0; k -= min(k, smbdMaxReadWrite) {
					if piece := min(k, smbdMaxReadWrite); piece >= 4096 {
						offloaded += piece
					}
				}
				off += n
			}
			st, os := s.Stats(), oc.Stats()
			t.Logf("daemon %+v; client %+v", st, os)
			if st.ServerRDMAReadBytes != int64(offloaded) || st.ServerRDMAWriteBytes != int64(offloaded) ||
				os.BytesFetched != uint64(offloaded) || os.BytesPlaced != uint64(offloaded) ||
				st.ServerRDMAReads != int64(os.Writes) || st.ServerRDMAWrites != int64(os.Reads) || st.ServerChannelPassthrough != 0 {
				t.Fatalf("want %d bytes each way by RDMA: daemon %+v, client %+v", offloaded, st, os)
			}
			wantInv := uint64(0)
			if inv {
				wantInv = os.Reads + os.Writes
			}
			if os.PeerInvalidated != wantInv {
				t.Fatalf("peer-invalidated %d, want %d", os.PeerInvalidated, wantInv)
			}
			if ch, _, _ := p.seen(); ch != 0 {
				t.Fatalf("the program saw %d requests with an RDMA channel", ch)
			}
			// A READ past the end: the error response passes, and the
			// registration is still invalidated with it.
			before := oc.Stats().PeerInvalidated
			req := smb2.AppendReadRequest(smb2.AppendHeader(nil, smb2.CommandRead, fc.next(), 1, 1, 1, 1),
				&smb2.ReadRequest{Length: 8192, Offset: 1 << 30})
			if h, _ := smb2.ParseHeader(exchange(t, oc, req)); h.Status != statusEndOfFile {
				t.Fatalf("READ past the end: status %#x", h.Status)
			}
			if got := oc.Stats().PeerInvalidated - before; (got == 1) != inv {
				t.Fatalf("error response: %d registrations invalidated by the daemon", got)
			}
		})
	}
}

// rawClient builds requests with RDMA channels itself, over smbd.
type rawClient struct {
	t  *testing.T
	c  *smbd.Conn
	id uint64
}

func (r *rawClient) register(data []byte, access smbd.Access) *smbd.Buffer {
	b, err := r.c.Register(data, access)
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { b.Close() })
	return b
}

func (r *rawClient) header(cmd uint16, flags uint32) []byte {
	r.id++
	b := smb2.AppendHeader(nil, cmd, r.id, 1, 1, 1, 1)
	binary.LittleEndian.PutUint32(b[16:], flags)
	return b
}

func (r *rawClient) write(ch uint32, flags uint32, off uint64, n int, b *smbd.Buffer) []byte {
	return smb2.AppendWriteRequest(r.header(smb2.CommandWrite, flags),
		&smb2.WriteRequest{Offset: off, Channel: ch, RemainingBytes: uint32(n), ChannelInfo: b.AppendDescriptor(nil)})
}

func (r *rawClient) read(ch uint32, flags uint32, off uint64, n int, b *smbd.Buffer) []byte {
	return smb2.AppendReadRequest(r.header(smb2.CommandRead, flags),
		&smb2.ReadRequest{Offset: off, Length: uint32(n), Channel: ch, ChannelInfo: b.AppendDescriptor(nil)})
}

func (r *rawClient) roundTrip(msg []byte) []byte {
	r.t.Helper()
	if err := r.c.WriteMessage(msg); err != nil {
		r.t.Fatal(err)
	}
	buf := make([]byte, 2<<20)
	n, err := r.c.ReadMessage(buf)
	if err != nil {
		r.t.Fatal(err)
	}
	return buf[:n]
}

// TestServerChannelCompound: a chain of a WRITE and a READ, both with an
// RDMA channel, is handed to the program as one inline chain; its
// response chain comes back as one message, the READ in the RDMA form,
// and the first token invalidated.
func TestServerChannelCompound(t *testing.T) {
	leakcheck.Check(t)
	s, sc, p, _ := channelSetup(t, true)
	r := &rawClient{t: t, c: sc}
	data := bytes.Repeat([]byte("compound"), 1000)
	src := r.register(append([]byte(nil), data...), smbd.PeerRead)
	dst := r.register(make([]byte, 5000), smbd.PeerWrite)
	w := r.write(smb2.ChannelRDMAV1Invalidate, 0, 100, len(data), src)
	rd := r.read(smb2.ChannelRDMAV1Invalidate, smb2.FlagRelated, 1000, 5000, dst)
	msg := append(w, make([]byte, smb2.Pad8(len(w))-len(w))...)
	smb2.SetNextCommand(msg, uint32(len(msg)))
	msg = append(msg, rd...)
	resp := r.roundTrip(msg)
	e1, next, err := smb2.Element(resp, 0)
	if err != nil {
		t.Fatal(err)
	}
	e2, _, err := smb2.Element(resp, next)
	if err != nil {
		t.Fatal(err)
	}
	h1, _ := smb2.ParseHeader(e1)
	rr, err := smb2.ParseReadResponse(e2)
	if h1.Status != 0 || h1.Command != smb2.CommandWrite || err != nil || len(e2) != smb2.ReadResponseRDMALen || rr.DataLength != 0 || rr.DataRemaining != 5000 {
		t.Fatalf("response chain: WRITE status %#x, READ %d bytes %+v %v", h1.Status, len(e2), rr, err)
	}
	if !bytes.Equal(dst.Bytes(), data[900:5900]) {
		t.Fatal("READ data in our buffer differs")
	}
	if src.Valid() || !dst.Valid() {
		t.Fatalf("the first token is invalidated with the chain, the second is ours to: valid %v, %v", src.Valid(), dst.Valid())
	}
	if _, reads, writes := p.seen(); len(reads) != 1 || len(writes) != 1 || writes[0] != len(data) {
		t.Fatalf("program saw reads %v writes %v", reads, writes)
	}
	if st := s.Stats(); st.ServerRDMAReadBytes != int64(len(data)) || st.ServerRDMAWriteBytes != 5000 {
		t.Fatalf("stats %+v", st)
	}
}

// TestServerChannelPassthrough: requests the daemon must not or cannot
// rewrite reach the program unchanged (it refuses them) and are counted;
// a bad token ends the connection, not the daemon.
func TestServerChannelPassthrough(t *testing.T) {
	leakcheck.Check(t)
	s, sc, p, _ := channelSetup(t, true)
	r := &rawClient{t: t, c: sc}
	buf := r.register(make([]byte, 8192), smbd.PeerRead|smbd.PeerWrite)
	for name, msg := range map[string][]byte{
		"signed READ":                  r.read(smb2.ChannelRDMAV1, smb2.FlagSigned, 0, 8192, buf),
		"signed WRITE":                 r.write(smb2.ChannelRDMAV1, smb2.FlagSigned, 0, 8192, buf),
		"huge WRITE":                   r.write(smb2.ChannelRDMAV1, 0, 0, smbdMaxReadWrite+1, buf),
		"WRITE beyond its descriptors": r.write(smb2.ChannelRDMAV1, 0, 0, 8193, buf),
		"no descriptors": smb2.AppendWriteRequest(r.header(smb2.CommandWrite, 0),
			&smb2.WriteRequest{Channel: smb2.ChannelRDMAV1, RemainingBytes: 10}),
	} {
		if h, _ := smb2.ParseHeader(r.roundTrip(msg)); h.Status != statusInvalidParam {
			t.Errorf("%s: status %#x, want the program's refusal", name, h.Status)
		}
	}
	if ch, _, _ := p.seen(); ch != 5 || s.Stats().ServerChannelPassthrough != 5 || s.Stats().ServerRDMAReads != 0 {
		t.Fatalf("program saw %d channels; stats %+v", ch, s.Stats())
	}
	// A token we never registered: the daemon's RDMA Read fails, the
	// connection ends; a new one works.
	bad := r.write(smb2.ChannelRDMAV1, 0, 0, 100, buf)
	binary.LittleEndian.PutUint32(bad[smb2.HeaderLen+48+8:], buf.Token()^0x5a5a5a5a)
	if err := sc.WriteMessage(bad); err != nil {
		t.Fatal(err)
	}
	if _, err := sc.ReadMessage(make([]byte, 1<<20)); err == nil {
		t.Fatal("a WRITE with a bad token was answered")
	}
	deadline := time.Now().Add(10 * time.Second)
	for s.Stats().Conns != 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if st := s.Stats(); st.Conns != 0 || st.Errors == 0 {
		t.Fatalf("after a bad token: %+v", st)
	}
	_, sc2, _, _ := channelSetup(t, true)
	oc := smb2rdma.Wrap(sc2, nil)
	exchange(t, oc, smb2.AppendNegotiateRequest(nil, 0, [16]byte{}, []uint16{smb2.Dialect302}))
	fc := &fileClient{t: t, w: oc}
	fc.write(0, make([]byte, 10000))
	if len(fc.read(0, 10000)) != 10000 {
		t.Fatal("no READ on a new connection")
	}
}

// TestServerChannelFlood: a peer sending RDMA WRITEs to a program that
// does not read is held back: the daemon stops RDMA-reading once the
// stream is full (one message in hand), and resumes when the program
// reads.
func TestServerChannelFlood(t *testing.T) {
	leakcheck.Check(t)
	s, sc, _, pc := channelSetup(t, false)
	r := &rawClient{t: t, c: sc}
	const n, count = 1 << 20, 64
	buf := r.register(bytes.Repeat([]byte{0xaa}, n), smbd.PeerRead)
	sent := make(chan int, 1)
	go func() {
		i := 0
		defer func() { sent <- i }()
		for ; i < count; i++ {
			if sc.WriteMessage(r.write(smb2.ChannelRDMAV1, 0, uint64(i)*n, n, buf)) != nil {
				return
			}
		}
	}()
	// Wait until the daemon stops RDMA-reading.
	var last int64 = -1
	for {
		time.Sleep(300 * time.Millisecond)
		got := s.Stats().ServerRDMAReadBytes
		if got == last {
			break
		}
		last = got
	}
	// What it read is in the stream's buffers (4 MiB each way, doubled by
	// the kernel's accounting) and one message in hand.
	if last >= count*n || last > 20<<20 {
		t.Fatalf("daemon RDMA-read %d bytes for a program that reads nothing", last)
	}
	t.Logf("held back after %d MiB RDMA-read of %d MiB sent", last>>20, count)
	// Now the program reads: every WRITE arrives, inline and whole.
	for i := range count {
		pdu, err := readPDU(pc.Stream)
		if err != nil {
			t.Fatal(err)
		}
		w, err := smb2.ParseWriteRequest(pdu)
		if err != nil || w.Channel != smb2.ChannelNone || len(w.Data) != n || w.Offset != uint64(i)*n || w.Data[n-1] != 0xaa {
			t.Fatalf("WRITE %d: %v", i, err)
		}
	}
	if i := <-sent; i != count || s.Stats().ServerRDMAReadBytes != count*n {
		t.Fatalf("%d sent, %+v", i, s.Stats())
	}
}

// TestServerChannelLeaks: connections with the channel leave no
// goroutine or fd behind.
func TestServerChannelLeaks(t *testing.T) {
	one := func() {
		t.Run("conn", func(t *testing.T) {
			_, sc, _, _ := channelSetup(t, true)
			oc := smb2rdma.Wrap(sc, nil)
			exchange(t, oc, smb2.AppendNegotiateRequest(nil, 0, [16]byte{}, []uint16{smb2.Dialect302}))
			fc := &fileClient{t: t, w: oc}
			fc.write(0, make([]byte, 70000))
			fc.read(0, 70000)
		})
	}
	one()
	time.Sleep(100 * time.Millisecond)
	g0, f0 := runtime.NumGoroutine(), openFDs(t)
	for range 10 {
		one()
	}
	var g1, f1 int
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if g1, f1 = runtime.NumGoroutine(), openFDs(t); g1 <= g0 && f1 <= f0 {
			return
		}
	}
	t.Fatalf("leak: goroutines %d -> %d, fds %d -> %d", g0, g1, f0, f1)
}

// TestListenUnknownFlags: a flag the daemon does not know is refused with
// EINVAL, and the session goes on.
func TestListenUnknownFlags(t *testing.T) {
	s := startDaemon(t, nil)
	cl, err := client.Dial(ctx(t), s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if _, err := cl.ListenFlags(ctx(t), "127.0.0.1:0", 2); !errors.Is(err, unix.EINVAL) {
		t.Fatalf("Listen with flag 2: %v, want EINVAL", err)
	}
	l, err := cl.ListenFlags(ctx(t), "127.0.0.1:0", 0)
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
}

// The client-side channel end to end through the daemon: a Dial with
// DialClientChannel to the daemon's own ListenServerChannel listener, the
// program behind it knowing only inline READ/WRITE. WRITEs and READs the
// test writes inline to the stream (4095 bytes and the 1-byte rest of
// 1 MiB + 1 stay inline; 4096 and 1 MiB go by RDMA both ways) come back
// intact, and the counters of both channels equal the bytes.
func TestClientChannelThroughDaemon(t *testing.T) {
	leakcheck.Check(t)
	s := startDaemon(t, nil)
	cl, l, accepted := channelListener(t, s)
	defer cl.Close()
	conn, err := cl.ConnectFlags(ctx(t), l.Addr, client.DialClientChannel)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	pc := <-accepted
	if pc == nil {
		t.FailNow()
	}
	defer pc.Close()
	nc, err := pc.NetConn()
	if err != nil {
		t.Fatal(err)
	}
	p := &program{conn: nc}
	done := make(chan error, 1)
	go func() { done <- p.serve() }()
	defer func() {
		conn.Close()
		nc.Close()
		if err := <-done; err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
			t.Errorf("program: %v", err)
		}
	}()
	exchange(t, conn.Stream, smb2.AppendNegotiateRequest(nil, 0, [16]byte{}, []uint16{smb2.Dialect302}))
	fc := &fileClient{t: t, w: conn.Stream}
	off, offloaded, inline := 0, 0, 0
	for i, n := range []int{4095, 4096, 1 << 20, 1<<20 + 1} {
		data := make([]byte, n)
		for j := range data {
			data[j] = byte(j*13+i) ^ byte(j>>11)
		}
		fc.write(off, data)
		if got := fc.read(off, n); sha256.Sum256(got) != sha256.Sum256(data) {
			t.Fatalf("%d bytes: read back differs", n)
		}
		for k := n; k > 0; k -= min(k, smbdMaxReadWrite) {
			if piece := min(k, smbdMaxReadWrite); piece >= 4096 {
				offloaded += piece
			} else {
				inline += 2 // its WRITE and its READ
			}
		}
		off += n
	}
	st := s.Stats()
	t.Logf("daemon %+v", st)
	if st.ClientRDMAReadBytes != int64(offloaded) || st.ClientRDMAWriteBytes != int64(offloaded) ||
		st.ServerRDMAReadBytes != int64(offloaded) || st.ServerRDMAWriteBytes != int64(offloaded) ||
		st.ClientChannelInline != int64(inline) || st.ServerChannelPassthrough != 0 {
		t.Fatalf("want %d bytes each way by RDMA through both channels, %d requests inline: %+v", offloaded, inline, st)
	}
	if ch, _, _ := p.seen(); ch != 0 {
		t.Fatalf("the program saw %d requests with an RDMA channel", ch)
	}
}
