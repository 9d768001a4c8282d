package rdmatest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/smbdirect/smbdirect/rdma"
)

// Harness tells TestProvider how to use a provider.
type Harness struct {
	// Provider returns the provider under test; it is called once per
	// subtest.
	Provider func(t *testing.T) rdma.Provider
	// ListenAddr is the address listeners open, e.g. "127.0.0.1:0".
	ListenAddr string
	// Synctest runs each case in a testing/synctest bubble, for
	// providers that block only on channels, as a Network does: then
	// nothing of the provider can outlive a case unnoticed.
	Synctest bool
}

// TestProvider runs the semantics every provider shares through the rdma
// API: data placement, completions in posting order, access rights and
// STag checks, invalidation, private data and IRD/ORD on connect, and
// the flushes at the end of a connection. Provider-specific behaviour
// (wire formats, Terminate details, timing) stays in the provider's own
// tests.
func TestProvider(t *testing.T, h Harness) {
	for _, c := range []struct {
		name string
		fn   func(*testing.T, Harness)
	}{
		{"SendWriteRead", testSendWriteRead},
		{"ConnectParams", testConnectParams},
		{"SendInvalidate", testSendInvalidate},
		{"LocalInvalidate", testLocalInvalidate},
		{"RemoteAccess", testRemoteAccess},
		{"QueueFullAndUnsignaled", testQueueFullAndUnsignaled},
		{"LocalProtection", testLocalProtection},
		{"DisconnectFlushes", testDisconnectFlushes},
		{"CloseFlushes", testCloseFlushes},
		{"ConnectErrors", testConnectErrors},
		{"PeerSendRecv", testPeer},
	} {
		t.Run(c.name, func(t *testing.T) {
			if h.Synctest {
				synctest.Test(t, func(t *testing.T) { c.fn(t, h) })
				return
			}
			c.fn(t, h)
		})
	}
}

type cpair struct {
	pd       rdma.PD
	cli, srv rdma.Endpoint
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// connectPair connects two endpoints of one PD, with receives posted by
// prepost first, and the private data of both sides checked.
func connectPair(t *testing.T, h Harness, cp, sp rdma.ConnParams, prepost func(ep rdma.Endpoint, server bool)) *cpair {
	t.Helper()
	ctx := testCtx(t)
	pd, err := h.Provider(t).NewPD()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := pd.Listen(ctx, h.ListenAddr, rdma.ListenConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	srv, _ := pd.NewEndpoint(rdma.EndpointConfig{})
	cli, _ := pd.NewEndpoint(rdma.EndpointConfig{})
	t.Cleanup(func() {
		cli.Close()
		srv.Close()
	})
	if prepost != nil {
		prepost(srv, true)
		prepost(cli, false)
	}
	errc := make(chan error, 1)
	go func() {
		req, err := ln.Accept(ctx)
		if err != nil {
			errc <- err
			return
		}
		if (cp.ORD > 0 && req.RemoteORD() != cp.ORD) || (cp.IRD > 0 && req.RemoteIRD() != cp.IRD) {
			errc <- fmt.Errorf("request ORD/IRD %d/%d, sent %d/%d", req.RemoteORD(), req.RemoteIRD(), cp.ORD, cp.IRD)
			req.Reject(nil)
			return
		}
		if req.RemoteAddr() == nil || req.LocalAddr() == nil || req.LocalAddr().String() != ln.Addr().String() {
			errc <- fmt.Errorf("request addresses %v -> %v, listener %v", req.RemoteAddr(), req.LocalAddr(), ln.Addr())
			req.Reject(nil)
			return
		}
		if !bytes.Equal(req.PrivateData(), cp.PrivateData) {
			errc <- errors.New("private data lost: " + string(req.PrivateData()))
			req.Reject(nil)
			return
		}
		errc <- req.Accept(ctx, srv, sp)
	}()
	if err := cli.Connect(ctx, ln.Addr().String(), cp); err != nil {
		t.Fatal("connect:", err)
	}
	if err := <-errc; err != nil {
		t.Fatal("accept:", err)
	}
	if got := cli.Info().PrivateData; !bytes.Equal(got, sp.PrivateData) {
		t.Fatalf("reply private data %q", got)
	}
	if got := srv.Info().PrivateData; !bytes.Equal(got, cp.PrivateData) {
		t.Fatalf("request private data in the responder's info %q", got)
	}
	return &cpair{pd: pd, cli: cli, srv: srv}
}

func newCPair(t *testing.T, h Harness) *cpair {
	return connectPair(t, h, rdma.ConnParams{PrivateData: []byte("hello")}, rdma.ConnParams{PrivateData: []byte("welcome")}, nil)
}

func mustMR(t *testing.T, pd rdma.PD, buf []byte, a rdma.Access) rdma.MR {
	t.Helper()
	m, err := pd.RegisterMemory(buf, a)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func poll1(t *testing.T, ep rdma.Endpoint) rdma.Completion {
	t.Helper()
	var wc [1]rdma.Completion
	n, err := ep.Poll(testCtx(t), wc[:])
	if err != nil || n != 1 {
		t.Fatalf("poll: %d %v", n, err)
	}
	return wc[0]
}

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7) + seed
	}
	return b
}

func post(t *testing.T, ep rdma.Endpoint, wr rdma.SendWR) {
	t.Helper()
	if err := ep.PostSend(&wr); err != nil {
		t.Fatalf("post %v: %v", wr.Op, err)
	}
}

func testSendWriteRead(t *testing.T, h Harness) {
	const size = 100_003
	p := newCPair(t, h)
	recv := mustMR(t, p.pd, make([]byte, 3*size), rdma.AccessLocalWrite)
	for i := range 3 {
		if err := p.srv.PostRecv(&rdma.RecvWR{ID: uint64(10 + i), Local: rdma.SGE{MR: recv, Offset: i * size, Length: size}}); err != nil {
			t.Fatal(err)
		}
	}
	src := mustMR(t, p.pd, pattern(size, 1), 0)
	// Three Sends of different lengths land in the receives in order;
	// the first is solicited.
	for i, n := range []int{size, 1, 0} {
		wr := rdma.SendWR{ID: uint64(i), Op: rdma.OpSend, Local: rdma.SGE{MR: src, Length: n}, Solicited: i == 0}
		if n == 0 {
			wr.Local = rdma.SGE{}
		}
		post(t, p.cli, wr)
	}
	for i, n := range []int{size, 1, 0} {
		if c := poll1(t, p.cli); c.Err != nil || c.ID != uint64(i) || c.Op != rdma.OpSend {
			t.Fatalf("send completion %d: %+v", i, c)
		}
		c := poll1(t, p.srv)
		if c.Err != nil || c.ID != uint64(10+i) || c.Op != rdma.OpRecv || c.Bytes != n || c.Solicited != (i == 0) || c.Invalidated {
			t.Fatalf("recv completion %d: %+v", i, c)
		}
	}
	if !bytes.Equal(recv.Bytes()[:size], src.Bytes()) || recv.Bytes()[size] != src.Bytes()[0] {
		t.Fatal("send data differs")
	}
	// RDMA Write at an offset, then Read the whole region back: the Read
	// follows the Write. (The test reads the peer's region only through
	// RDMA: on a provider with a wire, nothing but the wire orders the
	// peer's placement before the test's look, which the race detector
	// does not see.)
	sink := mustMR(t, p.pd, make([]byte, size+100), rdma.AccessLocalWrite|rdma.AccessRemoteWrite|rdma.AccessRemoteRead)
	post(t, p.cli, rdma.SendWR{ID: 20, Op: rdma.OpWrite, Local: rdma.SGE{MR: src}, RemoteSTag: sink.STag(), RemoteAddr: sink.Addr() + 100})
	dst := mustMR(t, p.pd, make([]byte, size+100), rdma.AccessLocalWrite)
	post(t, p.cli, rdma.SendWR{ID: 21, Op: rdma.OpRead, Local: rdma.SGE{MR: dst}, RemoteSTag: sink.STag(), RemoteAddr: sink.Addr()})
	if c := poll1(t, p.cli); c.Err != nil || c.ID != 20 || c.Op != rdma.OpWrite || c.Bytes != size {
		t.Fatalf("write completion %+v", c)
	}
	if c := poll1(t, p.cli); c.Err != nil || c.ID != 21 || c.Op != rdma.OpRead || c.Bytes != size+100 {
		t.Fatalf("read completion %+v", c)
	}
	if !bytes.Equal(dst.Bytes()[100:], src.Bytes()) || !bytes.Equal(dst.Bytes()[:100], make([]byte, 100)) {
		t.Fatal("written or read data differs")
	}
}

// testConnectParams: IRD/ORD are negotiated as in MPA v2 (RFC 6581): the
// responder's IRD at least the initiator's ORD, each side's ORD at most
// the other's IRD.
func testConnectParams(t *testing.T, h Harness) {
	p := connectPair(t, h, rdma.ConnParams{PrivateData: []byte("req"), ORD: 4, IRD: 8},
		rdma.ConnParams{PrivateData: []byte("rep"), ORD: 16, IRD: 2}, nil)
	ci, si := p.cli.Info(), p.srv.Info()
	if si.IRD != 4 || si.ORD != 8 {
		t.Errorf("responder IRD/ORD %d/%d, want 4/8", si.IRD, si.ORD)
	}
	if ci.ORD != 4 || ci.IRD != 8 {
		t.Errorf("initiator IRD/ORD %d/%d, want 8/4", ci.IRD, ci.ORD)
	}
	if ci.RemoteAddr == nil || si.RemoteAddr == nil || ci.LocalAddr == nil || si.LocalAddr == nil {
		t.Errorf("addresses missing: %+v %+v", ci, si)
	}
	if ci.Provider == "" || ci.Provider != si.Provider {
		t.Errorf("provider %q / %q", ci.Provider, si.Provider)
	}
}

// testSendInvalidate: a Send with Invalidate invalidates the receiver's
// region; a later Read of it fails with a remote access error and ends
// the connection.
func testSendInvalidate(t *testing.T, h Harness) {
	p := newCPair(t, h)
	region := mustMR(t, p.pd, make([]byte, 4096), rdma.AccessLocalWrite|rdma.AccessRemoteWrite|rdma.AccessRemoteRead)
	recv := mustMR(t, p.pd, make([]byte, 64), rdma.AccessLocalWrite)
	p.srv.PostRecv(&rdma.RecvWR{ID: 1, Local: rdma.SGE{MR: recv}})
	msg := mustMR(t, p.pd, []byte("done"), 0)
	post(t, p.cli, rdma.SendWR{ID: 9, Op: rdma.OpSendInvalidate, Local: rdma.SGE{MR: msg}, InvalidateSTag: region.STag()})
	c := poll1(t, p.srv)
	if c.Err != nil || !c.Invalidated || c.InvalidatedSTag != region.STag() || c.Bytes != 4 || string(recv.Bytes()[:4]) != "done" {
		t.Fatalf("recv completion %+v", c)
	}
	if region.Valid() {
		t.Fatal("region still valid after Send with Invalidate")
	}
	if c := poll1(t, p.cli); c.Err != nil || c.ID != 9 || c.Op != rdma.OpSendInvalidate {
		t.Fatalf("send completion %+v", c)
	}
	dst := mustMR(t, p.pd, make([]byte, 16), rdma.AccessLocalWrite)
	post(t, p.cli, rdma.SendWR{ID: 10, Op: rdma.OpRead, Local: rdma.SGE{MR: dst}, RemoteSTag: region.STag(), RemoteAddr: region.Addr()})
	refused(t, p.cli, 10, rdma.OpRead)
	ended(t, p.srv)
}

// refused checks that the work request id fails with a remote access
// error. A Read fails in its completion. A Write may complete first, as
// on iWARP, where it completes once sent: then the error comes as the end
// of the connection (the peer's Terminate). Either way the connection
// ends.
func refused(t *testing.T, ep rdma.Endpoint, id uint64, op rdma.Opcode) {
	t.Helper()
	c := poll1(t, ep)
	if c.ID != id || c.Op != op {
		t.Fatalf("completion %+v, want %v %d", c, op, id)
	}
	if c.Err == nil && op == rdma.OpWrite {
		ended(t, ep)
		if !errors.Is(ep.Err(), rdma.ErrRemoteAccess) {
			t.Fatalf("connection ended with %v, want a remote access error", ep.Err())
		}
		return
	}
	if !errors.Is(c.Err, rdma.ErrRemoteAccess) {
		t.Fatalf("completion error %v, want a remote access error", c.Err)
	}
	var we *rdma.WorkError
	if !errors.As(c.Err, &we) || we.ID != id || we.Op != op {
		t.Fatalf("completion error %v is not the WorkError of %v %d", c.Err, op, id)
	}
	ended(t, ep)
}

// ended waits for ep's connection to end with an error.
func ended(t *testing.T, ep rdma.Endpoint) {
	t.Helper()
	select {
	case <-ep.Done():
	case <-testCtx(t).Done():
		t.Fatal("connection not ended")
	}
	if ep.Err() == nil {
		t.Fatal("ended without an error")
	}
}

func testLocalInvalidate(t *testing.T, h Harness) {
	p := newCPair(t, h)
	m := mustMR(t, p.pd, make([]byte, 64), rdma.AccessLocalWrite|rdma.AccessRemoteWrite)
	post(t, p.cli, rdma.SendWR{ID: 1, Op: rdma.OpLocalInvalidate, InvalidateSTag: m.STag()})
	if c := poll1(t, p.cli); c.Err != nil || c.Op != rdma.OpLocalInvalidate || c.ID != 1 {
		t.Fatalf("%+v", c)
	}
	if m.Valid() {
		t.Fatal("still valid")
	}
	// A Write to it through the peer (the pair shares the PD) now fails.
	src := mustMR(t, p.pd, []byte("x"), 0)
	post(t, p.cli, rdma.SendWR{ID: 2, Op: rdma.OpWrite, Local: rdma.SGE{MR: src}, RemoteSTag: m.STag(), RemoteAddr: m.Addr()})
	refused(t, p.cli, 2, rdma.OpWrite)
	if m.Bytes()[0] != 0 {
		t.Fatal("data placed into an invalidated region")
	}
}

// testRemoteAccess: each kind of refused remote access fails the work
// request with rdma.ErrRemoteAccess, places nothing, and ends the
// connection.
func testRemoteAccess(t *testing.T, h Harness) {
	for _, tc := range []struct {
		name   string
		access rdma.Access
		op     rdma.Opcode
		stag   func(rdma.MR) rdma.STag
		off    uint64
		n      int
	}{
		{"write-without-right", rdma.AccessLocalWrite | rdma.AccessRemoteRead, rdma.OpWrite, nil, 0, 8},
		{"read-without-right", rdma.AccessLocalWrite | rdma.AccessRemoteWrite, rdma.OpRead, nil, 0, 8},
		{"write-past-end", rdma.AccessLocalWrite | rdma.AccessRemoteWrite, rdma.OpWrite, nil, 60, 8},
		{"read-past-end", rdma.AccessRemoteRead, rdma.OpRead, nil, 60, 8},
		{"write-unknown-stag", rdma.AccessLocalWrite | rdma.AccessRemoteWrite, rdma.OpWrite, func(m rdma.MR) rdma.STag { return m.STag() ^ 0x5a5a0000 }, 0, 8},
	} {
		func() {
			p := newCPair(t, h)
			target := mustMR(t, p.pd, make([]byte, 64), tc.access)
			local := mustMR(t, p.pd, bytes.Repeat([]byte{0xee}, 8), rdma.AccessLocalWrite)
			stag := target.STag()
			if tc.stag != nil {
				stag = tc.stag(target)
			}
			post(t, p.cli, rdma.SendWR{ID: 5, Op: tc.op, Local: rdma.SGE{MR: local, Length: tc.n}, RemoteSTag: stag, RemoteAddr: target.Addr() + tc.off})
			refused(t, p.cli, 5, tc.op)
			if !bytes.Equal(target.Bytes(), make([]byte, 64)) {
				t.Fatalf("%s: data placed", tc.name)
			}
			ended(t, p.cli)
			ended(t, p.srv)
			p.cli.Close()
			p.srv.Close()
		}()
	}
}

// testQueueFullAndUnsignaled: the receive queue refuses work beyond its
// depth; unsignaled requests produce no completion.
func testQueueFullAndUnsignaled(t *testing.T, h Harness) {
	p := newCPair(t, h)
	ep, _ := p.pd.NewEndpoint(rdma.EndpointConfig{RecvQueueDepth: 2})
	defer ep.Close()
	m := mustMR(t, p.pd, make([]byte, 8), rdma.AccessLocalWrite)
	for range 2 {
		if err := ep.PostRecv(&rdma.RecvWR{Local: rdma.SGE{MR: m}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := ep.PostRecv(&rdma.RecvWR{Local: rdma.SGE{MR: m}}); !errors.Is(err, rdma.ErrQueueFull) {
		t.Fatalf("third receive: %v", err)
	}
	if err := ep.PostSend(&rdma.SendWR{Op: rdma.OpSend}); !errors.Is(err, rdma.ErrNotConnected) {
		t.Fatalf("send on an unconnected endpoint: %v", err)
	}
	if err := p.cli.PostSend(&rdma.SendWR{Op: rdma.OpRecv}); !errors.Is(err, rdma.ErrInvalidArgument) {
		t.Fatalf("receive opcode on the send queue: %v", err)
	}
	if err := p.cli.PostSend(&rdma.SendWR{Op: rdma.OpWrite, Solicited: true}); !errors.Is(err, rdma.ErrInvalidArgument) {
		t.Fatalf("solicited Write: %v", err)
	}
	sink := mustMR(t, p.pd, make([]byte, 8), rdma.AccessLocalWrite|rdma.AccessRemoteWrite|rdma.AccessRemoteRead)
	src := mustMR(t, p.pd, []byte("01234567"), 0)
	for i := range 5 {
		post(t, p.cli, rdma.SendWR{ID: uint64(i), Op: rdma.OpWrite, Local: rdma.SGE{MR: src, Offset: i, Length: 1},
			RemoteSTag: sink.STag(), RemoteAddr: sink.Addr() + uint64(i), Unsignaled: i < 4})
	}
	if c := poll1(t, p.cli); c.ID != 4 || c.Err != nil {
		t.Fatalf("%+v", c)
	}
	// A Write completes when sent (iWARP): a Read that follows it sees
	// the data placed.
	back := mustMR(t, p.pd, make([]byte, 5), rdma.AccessLocalWrite)
	post(t, p.cli, rdma.SendWR{ID: 5, Op: rdma.OpRead, Local: rdma.SGE{MR: back}, RemoteSTag: sink.STag(), RemoteAddr: sink.Addr()})
	if c := poll1(t, p.cli); c.ID != 5 || c.Err != nil {
		t.Fatalf("%+v", c)
	}
	if string(back.Bytes()) != "01234" {
		t.Fatalf("written %q", back.Bytes())
	}
}

// testLocalProtection: local SGEs are checked when posted.
func testLocalProtection(t *testing.T, h Harness) {
	p := newCPair(t, h)
	ro := mustMR(t, p.pd, make([]byte, 8), 0)
	if err := p.srv.PostRecv(&rdma.RecvWR{Local: rdma.SGE{MR: ro}}); !errors.Is(err, rdma.ErrLocalProtection) {
		t.Fatalf("receive into a region without local write: %v", err)
	}
	remote := mustMR(t, p.pd, make([]byte, 8), rdma.AccessRemoteRead)
	if err := p.cli.PostSend(&rdma.SendWR{Op: rdma.OpRead, Local: rdma.SGE{MR: ro}, RemoteSTag: remote.STag(), RemoteAddr: remote.Addr()}); !errors.Is(err, rdma.ErrLocalProtection) {
		t.Fatalf("read into a region without local write: %v", err)
	}
	if err := p.cli.PostSend(&rdma.SendWR{Op: rdma.OpSend, Local: rdma.SGE{MR: ro, Offset: 4, Length: 8}}); !errors.Is(err, rdma.ErrInvalidArgument) {
		t.Fatalf("SGE past the region: %v", err)
	}
	other, _ := h.Provider(t).NewPD()
	defer other.Close()
	foreign := mustMR(t, other, make([]byte, 8), rdma.AccessLocalWrite)
	if err := p.cli.PostSend(&rdma.SendWR{Op: rdma.OpSend, Local: rdma.SGE{MR: foreign}}); !errors.Is(err, rdma.ErrLocalProtection) {
		t.Fatalf("region of another PD: %v", err)
	}
	if err := foreign.Close(); err != nil {
		t.Fatal(err)
	}
	inv := mustMR(t, p.pd, make([]byte, 8), rdma.AccessLocalWrite)
	if err := inv.Invalidate(); err != nil || inv.Valid() {
		t.Fatalf("invalidate: %v, still valid %v", err, inv.Valid())
	}
	if err := p.srv.PostRecv(&rdma.RecvWR{Local: rdma.SGE{MR: inv}}); !errors.Is(err, rdma.ErrLocalProtection) {
		t.Fatalf("receive into an invalidated region: %v", err)
	}
	if inv.Access() != rdma.AccessLocalWrite || len(inv.Bytes()) != 8 {
		t.Fatalf("region %v, %d bytes", inv.Access(), len(inv.Bytes()))
	}
	if _, err := p.pd.RegisterMemory(nil, 0); !errors.Is(err, rdma.ErrInvalidArgument) {
		t.Fatalf("empty region: %v", err)
	}
	if _, err := p.pd.RegisterMemory(make([]byte, 8), rdma.AccessRemoteWrite); !errors.Is(err, rdma.ErrInvalidArgument) {
		t.Fatalf("remote write without local write: %v", err)
	}
}

// testDisconnectFlushes: a graceful disconnect by one side ends the other
// with ErrDisconnected; posted receives complete flushed, in order, then
// Poll says ErrClosed.
func testDisconnectFlushes(t *testing.T, h Harness) {
	p := newCPair(t, h)
	recv := mustMR(t, p.pd, make([]byte, 64), rdma.AccessLocalWrite)
	for i := range 3 {
		p.srv.PostRecv(&rdma.RecvWR{ID: uint64(i), Local: rdma.SGE{MR: recv}})
	}
	ctx := testCtx(t)
	if err := p.cli.Disconnect(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.srv.Done():
	case <-ctx.Done():
		t.Fatal("server did not see the disconnect")
	}
	if !errors.Is(p.srv.Err(), rdma.ErrDisconnected) {
		t.Fatalf("server error %v", p.srv.Err())
	}
	for i := range 3 {
		c := poll1(t, p.srv)
		if !errors.Is(c.Err, rdma.ErrFlushed) || c.ID != uint64(i) || c.Op != rdma.OpRecv {
			t.Fatalf("flushed receive %d: %+v", i, c)
		}
	}
	var wc [4]rdma.Completion
	if _, err := p.srv.Poll(ctx, wc[:]); !errors.Is(err, rdma.ErrClosed) {
		t.Fatalf("poll after drain: %v", err)
	}
	if err := p.srv.PostSend(&rdma.SendWR{Op: rdma.OpSend}); !errors.Is(err, rdma.ErrNotConnected) {
		t.Fatalf("post after disconnect: %v", err)
	}
}

// testCloseFlushes: Close flushes this side's receives too, and the
// regions can be closed afterwards.
func testCloseFlushes(t *testing.T, h Harness) {
	p := newCPair(t, h)
	recv, err := p.pd.RegisterMemory(make([]byte, 64), rdma.AccessLocalWrite)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		p.cli.PostRecv(&rdma.RecvWR{ID: uint64(i), Local: rdma.SGE{MR: recv}})
	}
	if err := p.cli.Close(); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if c := poll1(t, p.cli); !errors.Is(c.Err, rdma.ErrFlushed) || c.ID != uint64(i) {
			t.Fatalf("flushed receive %d: %+v", i, c)
		}
	}
	var wc [1]rdma.Completion
	if _, err := p.cli.Poll(testCtx(t), wc[:]); !errors.Is(err, rdma.ErrClosed) {
		t.Fatalf("poll after close: %v", err)
	}
	if err := p.cli.PostRecv(&rdma.RecvWR{Local: rdma.SGE{MR: recv}}); !errors.Is(err, rdma.ErrClosed) {
		t.Fatalf("receive after close: %v", err)
	}
	if err := recv.Close(); err != nil {
		t.Fatalf("region close after the flush: %v", err)
	}
	ended(t, p.srv)
	if !errors.Is(p.srv.Err(), rdma.ErrDisconnected) {
		t.Fatalf("peer error %v", p.srv.Err())
	}
}

// testConnectErrors: a rejection carries private data back; a closed
// listener refuses; oversized private data is an invalid argument.
func testConnectErrors(t *testing.T, h Harness) {
	ctx := testCtx(t)
	pd, _ := h.Provider(t).NewPD()
	defer pd.Close()
	ep, _ := pd.NewEndpoint(rdma.EndpointConfig{})
	defer ep.Close()
	ln, err := pd.Listen(ctx, h.ListenAddr, rdma.ListenConfig{})
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	go func() {
		r, err := ln.Accept(ctx)
		if err == nil {
			r.Reject([]byte("go away"))
		}
	}()
	err = ep.Connect(ctx, addr, rdma.ConnParams{PrivateData: []byte("let me in")})
	var re *rdma.RejectError
	if !errors.As(err, &re) || !errors.Is(err, rdma.ErrRejected) || string(re.PrivateData) != "go away" {
		t.Fatalf("rejected connect: %v", err)
	}
	ln.Close()
	if _, err := ln.Accept(ctx); err == nil {
		t.Fatal("accept on a closed listener")
	}
	if err := ep.Connect(ctx, addr, rdma.ConnParams{}); err == nil {
		t.Fatal("connect to a closed listener succeeded")
	}
	if err := ep.Connect(ctx, addr, rdma.ConnParams{PrivateData: make([]byte, rdma.MaxPrivateData+100)}); !errors.Is(err, rdma.ErrInvalidArgument) {
		t.Fatalf("oversized private data: %v", err)
	}
}

// testPeer: the raw Peer sends and receives messages on the provider.
func testPeer(t *testing.T, h Harness) {
	ctx := testCtx(t)
	prov := h.Provider(t)
	a, err := NewPeer(prov, PeerConfig{Receives: 4, ReceiveSize: 256})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := NewPeer(prov, PeerConfig{Receives: 4, ReceiveSize: 256})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	// The listener is b's: an endpoint accepts requests of its own PD.
	ln, err := b.PD().Listen(ctx, h.ListenAddr, rdma.ListenConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	errc := make(chan error, 1)
	go func() {
		req, err := ln.Accept(ctx)
		if err == nil {
			err = b.Accept(ctx, req, rdma.ConnParams{})
		}
		errc <- err
	}()
	if err := a.Connect(ctx, ln.Addr().String(), rdma.ConnParams{}); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	for i := range 10 { // more than the receives: they are reposted
		msg := pattern(1+i*20, byte(i))
		if err := a.Send(ctx, msg); err != nil {
			t.Fatal(i, err)
		}
		got, err := b.Recv(ctx)
		if err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("message %d: %x, %v", i, got, err)
		}
	}
	if err := b.Send(ctx, []byte("bye")); err != nil {
		t.Fatal(err)
	}
	if got, err := a.Recv(ctx); err != nil || string(got) != "bye" {
		t.Fatalf("%q %v", got, err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Recv(ctx); !errors.Is(err, rdma.ErrDisconnected) {
		t.Fatalf("recv after the peer closed: %v", err)
	}
}
