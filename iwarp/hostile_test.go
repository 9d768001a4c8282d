package iwarp

// A hostile peer: a raw TCP client speaking MPA/DDP/RDMAP by hand sends
// crafted frames to our endpoint. Every case must end in a Terminate with
// the RFC 5040 layer/type/code for the violation (or a refusal during the
// handshake), a clear error on our side, flushed work, no write outside a
// registered region, and no goroutine left behind.

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/smbdirect/smbdirect/internal/leakcheck"
	"github.com/smbdirect/smbdirect/iwarp/internal/wire"
	"github.com/smbdirect/smbdirect/rdma"
)

const guard = 64

// guarded is a region registered in the middle of a larger buffer whose
// edges must never change.
type guarded struct {
	all []byte
	mr  rdma.MR
}

func newGuarded(t *testing.T, pd rdma.PD, n int, a rdma.Access) *guarded {
	all := bytes.Repeat([]byte{0xAA}, n+2*guard)
	m, err := pd.RegisterMemory(all[guard:guard+n], a)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return &guarded{all, m}
}

func (g *guarded) check(t *testing.T) {
	t.Helper()
	n := len(g.all)
	for _, b := range append(bytes.Clone(g.all[:guard]), g.all[n-guard:]...) {
		if b != 0xAA {
			t.Fatal("bytes outside a registered region were written")
		}
	}
}

// hostileEnv is our endpoint connected to a raw peer.
type hostileEnv struct {
	pd   rdma.PD
	ep   rdma.Endpoint
	raw  net.Conn
	crc  bool
	rw   *guarded // remote read+write
	ro   *guarded // remote read only
	wo   *guarded // remote write only
	dead *guarded // invalidated
	recv *guarded // receive buffer (64 bytes)
}

func setupHostile(t *testing.T, crc bool, recvs int, ird int) *hostileEnv {
	t.Helper()
	checkLeaks(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pd, _ := New(Config{HandshakeTimeout: 2 * time.Second}).NewPD()
	ln, err := pd.Listen(ctx, "127.0.0.1:0", rdma.ListenConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	env := &hostileEnv{pd: pd, crc: crc}
	env.rw = newGuarded(t, pd, 32<<20, rdma.AccessLocalWrite|rdma.AccessRemoteRead|rdma.AccessRemoteWrite)
	env.ro = newGuarded(t, pd, 4096, rdma.AccessRemoteRead)
	env.wo = newGuarded(t, pd, 4096, rdma.AccessLocalWrite|rdma.AccessRemoteWrite)
	env.dead = newGuarded(t, pd, 4096, rdma.AccessLocalWrite|rdma.AccessRemoteWrite|rdma.AccessRemoteRead)
	env.dead.mr.Invalidate()
	env.recv = newGuarded(t, pd, 64, rdma.AccessLocalWrite)
	env.ep, _ = pd.NewEndpoint(rdma.EndpointConfig{})
	for i := 0; i < recvs; i++ {
		env.ep.PostRecv(&rdma.RecvWR{ID: uint64(i), Local: rdma.SGE{MR: env.recv.mr}})
	}
	env.raw = rawPeer(t, ctx, ln, env.ep, ird, crc, 1)
	t.Cleanup(func() {
		env.raw.Close()
		env.ep.Close()
		for _, g := range []*guarded{env.rw, env.ro, env.wo, env.dead, env.recv} {
			g.check(t)
		}
	})
	return env
}

// rawPeer is a hand-driven iWARP peer: a TCP connection to ln whose MPA
// request (enhanced, rev 2, CRC if crc, IRD and ORD peerRD) ep accepts
// with IRD ird. It returns once both sides are connected; the frames
// after that are the caller's to write.
func rawPeer(tb testing.TB, ctx context.Context, ln rdma.Listener, ep rdma.Endpoint, ird int, crc bool, peerRD uint16) net.Conn {
	tb.Helper()
	errc := make(chan error, 1)
	go func() {
		req, err := ln.Accept(ctx)
		if err == nil {
			err = req.Accept(ctx, ep, rdma.ConnParams{IRD: ird})
		}
		errc <- err
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	req := wire.AppendMPAFrame(nil, &wire.MPAFrame{CRC: crc, Enhanced: true, Revision: 2, PrivateDataLen: 4})
	raw.Write(wire.AppendMPAv2(req, wire.MPAv2{IRD: peerRD, ORD: peerRD}))
	if _, err := io.ReadFull(raw, make([]byte, wire.MPAHeaderLen+4)); err != nil {
		raw.Close()
		tb.Fatal(err)
	}
	if err := <-errc; err != nil {
		raw.Close()
		tb.Fatal(err)
	}
	return raw
}

// fpdu frames a ULPDU (header+payload) with length, pad and CRC field.
func (e *hostileEnv) fpdu(ulpdu []byte) []byte {
	b := wire.AppendMPALen(nil, len(ulpdu))
	b = append(b, ulpdu...)
	b = wire.AppendPad(b, len(ulpdu))
	var crc uint32
	if e.crc {
		crc = wire.UpdateCRC(0, b)
	}
	return wire.AppendCRC(b, crc)
}

func send(msn, mo uint32, last bool, payload []byte) []byte {
	return append(wire.AppendUntagged(nil, wire.OpSend, last, 0, wire.QNSend, msn, mo), payload...)
}

func write(stag uint32, to uint64, payload []byte) []byte {
	return append(wire.AppendTagged(nil, wire.OpWrite, true, stag, to), payload...)
}

func readReq(msn uint32, src uint32, to uint64, size uint32) []byte {
	return wire.AppendReadRequest(nil, &wire.ReadRequest{MSN: msn, SinkSTag: 0x1234, SinkTO: 0, Size: size, SourceSTag: src, SourceTO: to})
}

// terminate reads FPDUs from the raw side until our Terminate arrives.
func (e *hostileEnv) terminate(t *testing.T) wire.Terminate {
	t.Helper()
	e.raw.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		var l [2]byte
		if _, err := io.ReadFull(e.raw, l[:]); err != nil {
			t.Fatalf("no Terminate before %v", err)
		}
		ulpdu := int(binary.BigEndian.Uint16(l[:]))
		rest := make([]byte, wire.FPDULen(ulpdu)-2)
		if _, err := io.ReadFull(e.raw, rest); err != nil {
			t.Fatalf("truncated FPDU from us: %v", err)
		}
		if e.crc {
			if got, want := wire.CRCFromTrailer(rest[len(rest)-4:]), wire.UpdateCRC(wire.UpdateCRC(0, l[:]), rest[:len(rest)-4]); got != want {
				t.Fatalf("our FPDU has a bad CRC")
			}
		}
		if rest[1]&0x0f == byte(wire.OpTerminate) {
			tm, err := wire.ParseTerminate(rest[:ulpdu])
			if err != nil {
				t.Fatalf("our Terminate does not parse: %v", err)
			}
			return tm
		}
	}
}

// ended checks our side: the endpoint ends with a TerminateError, work is
// flushed, then Poll reports ErrClosed.
func (e *hostileEnv) ended(t *testing.T, layer, typ, code uint8, okBefore int) {
	t.Helper()
	select {
	case <-e.ep.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("endpoint did not end")
	}
	var te *TerminateError
	if !errors.As(e.ep.Err(), &te) || te.Received || te.Layer != layer || te.Type != typ || te.Code != code || !errors.Is(e.ep.Err(), rdma.ErrProtocol) {
		t.Fatalf("endpoint error %v", e.ep.Err())
	}
	e.ep.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var wc [8]rdma.Completion
	for {
		n, err := e.ep.Poll(ctx, wc[:])
		if errors.Is(err, rdma.ErrClosed) {
			return
		}
		if err != nil {
			t.Fatalf("poll after the end: %v", err)
		}
		for _, c := range wc[:n] {
			if c.Err == nil {
				if okBefore--; okBefore < 0 {
					t.Fatalf("successful completion after a Terminate: %+v", c)
				}
			}
		}
	}
}

func TestHostileFrames(t *testing.T) {
	type tc struct {
		name             string
		crc              bool
		recvs, ird       int
		frames           func(e *hostileEnv) [][]byte
		raw              func(e *hostileEnv) []byte // bytes sent as they are
		layer, typ, code uint8
		okBefore         int // valid messages before the violation
		// incl is how many header bytes of the offending frame the
		// Terminate carries after the segment length; rr says they end
		// with a Read Request header (the R bit).
		incl int
		rr   bool
	}
	rwTo := func(e *hostileEnv) uint64 { return e.rw.mr.Addr() }
	cases := []tc{
		{name: "unknown opcode", recvs: 1, frames: func(e *hostileEnv) [][]byte {
			b := send(1, 0, true, nil)
			b[1] = b[1]&^0xf | 8
			return [][]byte{b}
		}, layer: 0, typ: 2, code: 6},
		{name: "DDP version 0", recvs: 1, frames: func(e *hostileEnv) [][]byte {
			b := send(1, 0, true, nil)
			b[0] &^= 3
			return [][]byte{b}
		}, layer: 1, typ: 2, code: 6},
		{name: "RDMAP version 2", recvs: 1, frames: func(e *hostileEnv) [][]byte {
			b := send(1, 0, true, nil)
			b[1] = b[1]&^0xc0 | 0x80
			return [][]byte{b}
		}, layer: 0, typ: 2, code: 5},
		{name: "send without a posted receive", recvs: 0, frames: func(e *hostileEnv) [][]byte {
			return [][]byte{send(1, 0, true, []byte("hi"))}
		}, layer: 1, typ: 2, code: 2, incl: 18},
		{name: "send larger than the receive buffer", recvs: 1, frames: func(e *hostileEnv) [][]byte {
			return [][]byte{send(1, 0, true, make([]byte, 65))}
		}, layer: 1, typ: 2, code: 5, incl: 18},
		{name: "MSN out of order", recvs: 2, frames: func(e *hostileEnv) [][]byte {
			return [][]byte{send(2, 0, true, []byte("x"))}
		}, layer: 1, typ: 2, code: 3, incl: 18},
		{name: "MO out of order", recvs: 2, frames: func(e *hostileEnv) [][]byte {
			return [][]byte{send(1, 0, false, []byte("12345678")), send(1, 5, true, []byte("9"))}
		}, layer: 1, typ: 2, code: 4, incl: 18},
		{name: "write to unknown STag", frames: func(e *hostileEnv) [][]byte {
			return [][]byte{write(uint32(e.rw.mr.STag())^0x5a5a, rwTo(e), []byte("x"))}
		}, layer: 1, typ: 1, code: 0, incl: 14},
		{name: "write to invalidated STag", frames: func(e *hostileEnv) [][]byte {
			return [][]byte{write(uint32(e.dead.mr.STag()), e.dead.mr.Addr(), []byte("x"))}
		}, layer: 1, typ: 1, code: 0, incl: 14},
		{name: "write without remote write access", frames: func(e *hostileEnv) [][]byte {
			return [][]byte{write(uint32(e.ro.mr.STag()), e.ro.mr.Addr(), []byte("x"))}
		}, layer: 0, typ: 1, code: 2, incl: 14},
		{name: "write past the end", frames: func(e *hostileEnv) [][]byte {
			return [][]byte{write(uint32(e.wo.mr.STag()), e.wo.mr.Addr()+4090, make([]byte, 7))}
		}, layer: 1, typ: 1, code: 1, incl: 14},
		{name: "write below the base", frames: func(e *hostileEnv) [][]byte {
			return [][]byte{write(uint32(e.wo.mr.STag()), e.wo.mr.Addr()-1, make([]byte, 2))}
		}, layer: 1, typ: 1, code: 1, incl: 14},
		{name: "write with wrapping TO", frames: func(e *hostileEnv) [][]byte {
			return [][]byte{write(uint32(e.wo.mr.STag()), ^uint64(0)-3, make([]byte, 16))}
		}, layer: 1, typ: 1, code: 3, incl: 14},
		{name: "read request for unknown STag", frames: func(e *hostileEnv) [][]byte {
			return [][]byte{readReq(1, 0xdeadbeef, 0, 8)}
		}, layer: 0, typ: 1, code: 0, incl: 46, rr: true},
		{name: "read request without remote read access", frames: func(e *hostileEnv) [][]byte {
			return [][]byte{readReq(1, uint32(e.wo.mr.STag()), e.wo.mr.Addr(), 8)}
		}, layer: 0, typ: 1, code: 2, incl: 46, rr: true},
		{name: "read request out of bounds", frames: func(e *hostileEnv) [][]byte {
			return [][]byte{readReq(1, uint32(e.ro.mr.STag()), e.ro.mr.Addr()+4000, 100)}
		}, layer: 0, typ: 1, code: 1, incl: 46, rr: true},
		{name: "read requests beyond the IRD", ird: 1, frames: func(e *hostileEnv) [][]byte {
			// The raw peer does not read, so the first 32 MiB response
			// cannot leave and its IRD slot stays taken.
			var f [][]byte
			for i := uint32(1); i <= 3; i++ {
				f = append(f, readReq(i, uint32(e.rw.mr.STag()), rwTo(e), 32<<20))
			}
			return f
		}, layer: 1, typ: 2, code: 2, incl: 18},
		{name: "read response with no read outstanding", frames: func(e *hostileEnv) [][]byte {
			return [][]byte{append(wire.AppendTagged(nil, wire.OpReadResponse, true, 1, 0), 'x')}
		}, layer: 0, typ: 2, code: 6},
		{name: "bad CRC", crc: true, recvs: 1, raw: func(e *hostileEnv) []byte {
			b := e.fpdu(send(1, 0, true, []byte("hello")))
			b[len(b)-1] ^= 1
			return b
		}, layer: 2, typ: 0, code: 2},
		// A payload larger than the receive buffer: its CRC is computed
		// piece by piece, not over the FPDU in the buffer as above.
		{name: "bad CRC of a large write", crc: true, recvs: 1, raw: func(e *hostileEnv) []byte {
			b := e.fpdu(write(uint32(e.rw.mr.STag()), rwTo(e), make([]byte, 20000)))
			b[len(b)-1] ^= 1
			return b
		}, layer: 2, typ: 0, code: 2},
		{name: "ULPDU shorter than its header", recvs: 1, raw: func(e *hostileEnv) []byte {
			b := e.fpdu(send(1, 0, true, nil))
			b[1] = 10
			return b
		}, layer: 1, typ: 0, code: 0},
		{name: "flood of sends", recvs: 4, raw: func(e *hostileEnv) []byte {
			var b []byte
			for i := uint32(1); i <= 10000; i++ {
				b = append(b, e.fpdu(send(i, 0, true, []byte("flood")))...)
			}
			return b
		}, layer: 1, typ: 2, code: 2, okBefore: 4, incl: 18},
	}
	for _, c := range cases {
		t.Run(strings.ReplaceAll(c.name, " ", "_"), func(t *testing.T) {
			e := setupHostile(t, c.crc, c.recvs, c.ird)
			var out []byte
			if c.raw != nil {
				out = c.raw(e)
			} else {
				for _, f := range c.frames(e) {
					out = append(out, e.fpdu(f)...)
				}
			}
			// Data after the violation must be ignored.
			out = append(out, e.fpdu(write(uint32(e.rw.mr.STag()), rwTo(e), []byte("after")))...)
			go e.raw.Write(out)
			tm := e.terminate(t)
			e.raw.Close() // as a real peer does after a Terminate
			if tm.Layer != c.layer || tm.Type != c.typ || tm.Code != c.code {
				t.Fatalf("Terminate %v, want layer %d type %d code 0x%02x", tm.String(), c.layer, c.typ, c.code)
			}
			// RFC 5040 4.8: M and D with the DDP header, R only with the
			// Read Request header after it.
			if tm.SegLenValid != (c.incl > 0) || tm.HasDDP != (c.incl > 0) || tm.HasRDMAP != c.rr || len(tm.Terminated) != 2+c.incl && c.incl > 0 {
				t.Fatalf("Terminate M=%v D=%v R=%v with %d header bytes, want %d bytes, R=%v", tm.SegLenValid, tm.HasDDP, tm.HasRDMAP, len(tm.Terminated), 2+c.incl, c.rr)
			}
			if c.incl > 0 && c.frames != nil {
				// The offending frame is the last, or for the IRD case
				// whichever Read Request found the IRD full.
				found := false
				for _, f := range c.frames(e) {
					found = found || bytes.Equal(tm.Terminated, e.fpdu(f)[:2+c.incl])
				}
				if !found {
					t.Fatalf("terminated headers % x are no frame's", tm.Terminated)
				}
			}
			e.ended(t, c.layer, c.typ, c.code, c.okBefore)
			if bytes.HasPrefix(e.rw.mr.Bytes(), []byte("after")) {
				t.Fatal("data after the violation was placed")
			}
		})
	}
}

// TestHostileHandshake: MPA requests we refuse.
func TestHostileHandshake(t *testing.T) {
	checkLeaks(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pd, _ := New(Config{HandshakeTimeout: 300 * time.Millisecond}).NewPD()
	ln, err := pd.Listen(ctx, "127.0.0.1:0", rdma.ListenConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	good := func(f wire.MPAFrame) []byte {
		f.PrivateDataLen = 4
		return wire.AppendMPAv2(wire.AppendMPAFrame(nil, &f), wire.MPAv2{IRD: 1, ORD: 1})
	}
	cases := []struct {
		name   string
		req    []byte
		reject bool // an MPA Reply with the Reject bit, else just a close
	}{
		{"bad key", append([]byte("MPA ID Rex Frame"), 0x10, 2, 0, 0), false},
		{"markers", good(wire.MPAFrame{Markers: true, Enhanced: true, Revision: 2}), true},
		{"revision 3", good(wire.MPAFrame{Enhanced: true, Revision: 3}), true},
		{"private data too long", append([]byte(wire.KeyRequest), 0x10, 2, 0x02, 0x01), false},
		{"silent peer", nil, false},
		{"truncated request", []byte(wire.KeyRequest)[:10], false},
	}
	for _, c := range cases {
		t.Run(strings.ReplaceAll(c.name, " ", "_"), func(t *testing.T) {
			raw, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer raw.Close()
			raw.Write(c.req)
			raw.SetReadDeadline(time.Now().Add(5 * time.Second))
			got, err := io.ReadAll(raw)
			if err != nil {
				t.Fatalf("our listener did not close: %v", err)
			}
			if c.reject {
				f, err := wire.ParseMPAFrame(got, true)
				if err != nil || !f.Reject {
					t.Fatalf("want an MPA Reply with Reject, got % x (%v)", got, err)
				}
			} else if len(got) != 0 {
				t.Fatalf("unexpected answer % x", got)
			}
		})
	}
	// Nothing was queued for Accept.
	actx, acancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer acancel()
	if r, err := ln.Accept(actx); err == nil {
		t.Fatalf("a refused request reached Accept: %v", r.RemoteAddr())
	}
}

// TestHostileResponder: a raw responder rejects or answers badly.
func TestHostileResponder(t *testing.T) {
	checkLeaks(t)
	cases := []struct {
		name  string
		reply []byte
		want  error
	}{
		{"reject with private data", append(wire.AppendMPAv2(wire.AppendMPAFrame(nil, &wire.MPAFrame{Reply: true, Reject: true, Enhanced: true, Revision: 2, PrivateDataLen: 4 + 9}), wire.MPAv2{}), "no thanks"...), rdma.ErrRejected},
		{"markers required", wire.AppendMPAv2(wire.AppendMPAFrame(nil, &wire.MPAFrame{Reply: true, Markers: true, Enhanced: true, Revision: 2, PrivateDataLen: 4}), wire.MPAv2{IRD: 1, ORD: 1}), rdma.ErrNotSupported},
		{"request key in reply", wire.AppendMPAFrame(nil, &wire.MPAFrame{Revision: 2}), rdma.ErrProtocol},
		{"closed at once", nil, nil},
	}
	for _, c := range cases {
		t.Run(strings.ReplaceAll(c.name, " ", "_"), func(t *testing.T) {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			go func() {
				conn, err := l.Accept()
				if err != nil {
					return
				}
				defer conn.Close()
				io.ReadFull(conn, make([]byte, wire.MPAHeaderLen+4))
				conn.Write(c.reply)
			}()
			pd, _ := New(Config{HandshakeTimeout: time.Second}).NewPD()
			ep, _ := pd.NewEndpoint(rdma.EndpointConfig{})
			defer ep.Close()
			err = ep.Connect(context.Background(), l.Addr().String(), rdma.ConnParams{})
			if err == nil || (c.want != nil && !errors.Is(err, c.want)) {
				t.Fatalf("connect: %v, want %v", err, c.want)
			}
			var re *rdma.RejectError
			if errors.As(err, &re) && string(re.PrivateData) != "no thanks" {
				t.Fatalf("reject private data %q", re.PrivateData)
			}
		})
	}
}

// TestPeerStopsReading: we RDMA Write 64 MiB to a peer that never reads;
// Close still returns promptly and flushes.
func TestPeerStopsReading(t *testing.T) {
	e := setupHostile(t, false, 0, 0)
	src, _ := e.pd.RegisterMemory(make([]byte, 64<<20), 0)
	defer src.Close()
	if err := e.ep.PostSend(&rdma.SendWR{ID: 1, Op: rdma.OpWrite, Local: rdma.SGE{MR: src}, RemoteSTag: 1, RemoteAddr: 0}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // let the socket fill up
	start := time.Now()
	e.ep.Close()
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Close took %v", d)
	}
	c := poll1(t, e.ep)
	if !errors.Is(c.Err, rdma.ErrFlushed) {
		t.Fatalf("write to a stalled peer: %+v", c)
	}
}

// TestTruncatedFPDU: the peer closes in the middle of an FPDU.
func TestTruncatedFPDU(t *testing.T) {
	e := setupHostile(t, false, 1, 0)
	b := e.fpdu(send(1, 0, true, make([]byte, 40)))
	e.raw.Write(b[:30])
	e.raw.(*net.TCPConn).CloseWrite()
	select {
	case <-e.ep.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("not ended")
	}
	if !errors.Is(e.ep.Err(), rdma.ErrDisconnected) || !strings.Contains(e.ep.Err().Error(), "EOF") {
		t.Fatalf("error %v", e.ep.Err())
	}
	if c := poll1(t, e.ep); !errors.Is(c.Err, rdma.ErrFlushed) {
		t.Fatalf("the receive was not flushed: %+v", c)
	}
}

// checkLeaks fails the test if goroutines it started are still running
// when it ends (after a settle period).
func checkLeaks(t *testing.T) { leakcheck.Check(t) }

// TestSiwTerminateReceived: a Terminate as Linux siw sends it (captured,
// in its little-endian bitfield layout) is reported with the right layer,
// type and code, not with Layer and EType swapped.
func TestSiwTerminateReceived(t *testing.T) {
	for _, c := range []struct {
		file             string
		layer, typ, code uint8
	}{
		{"siw-readreq.bin", wire.LayerRDMAP, wire.RDMAPTypeProtection, wire.RDMAPCodeInvalidSTag},
		{"siw-send-msn.bin", wire.LayerDDP, wire.DDPTypeUntagged, wire.DDPCodeMSNRange},
	} {
		t.Run(c.file, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join("internal", "wire", "testdata", "terminate", c.file))
			if err != nil {
				t.Fatal(err)
			}
			e := setupHostile(t, true, 1, 0)
			if _, err := e.raw.Write(b); err != nil {
				t.Fatal(err)
			}
			select {
			case <-e.ep.Done():
			case <-time.After(10 * time.Second):
				t.Fatal("endpoint did not end")
			}
			var te *TerminateError
			if !errors.As(e.ep.Err(), &te) || !te.Received || te.Layer != c.layer || te.Type != c.typ || te.Code != c.code {
				t.Fatalf("endpoint error %v, want a received Terminate %d/%d/0x%02x", e.ep.Err(), c.layer, c.typ, c.code)
			}
		})
	}
}
