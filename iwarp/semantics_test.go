package iwarp

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/smbdirect/smbdirect/rdma"
)

// TestSendInvalidate: a Send with Invalidate invalidates the receiver's
// region; a later Write to it is refused with a Terminate that the writer
// sees as a remote access error.
func TestSendInvalidate(t *testing.T) {
	p := newPair(t, Config{}, nil)
	region := mustMR(t, p.pd, make([]byte, 4096), rdma.AccessLocalWrite|rdma.AccessRemoteWrite|rdma.AccessRemoteRead)
	recv := mustMR(t, p.pd, make([]byte, 64), rdma.AccessLocalWrite)
	p.srv.PostRecv(&rdma.RecvWR{ID: 1, Local: rdma.SGE{MR: recv}})
	msg := mustMR(t, p.pd, []byte("done"), 0)
	if err := p.cli.PostSend(&rdma.SendWR{ID: 9, Op: rdma.OpSendInvalidate, Local: rdma.SGE{MR: msg}, InvalidateSTag: region.STag()}); err != nil {
		t.Fatal(err)
	}
	c := poll1(t, p.srv)
	if c.Err != nil || !c.Invalidated || c.InvalidatedSTag != region.STag() || c.Bytes != 4 {
		t.Fatalf("recv completion %+v", c)
	}
	if region.Valid() {
		t.Fatal("region still valid after Send with Invalidate")
	}
	poll1(t, p.cli)
	// A Read of the invalidated region must fail as remote access error.
	dst := mustMR(t, p.pd, make([]byte, 16), rdma.AccessLocalWrite)
	p.cli.PostSend(&rdma.SendWR{ID: 10, Op: rdma.OpRead, Local: rdma.SGE{MR: dst}, RemoteSTag: region.STag(), RemoteAddr: region.Addr()})
	c = poll1(t, p.cli)
	if !errors.Is(c.Err, rdma.ErrRemoteAccess) {
		t.Fatalf("read of invalidated region: %+v (%v)", c, c.Err)
	}
	var te *TerminateError
	if !errors.As(p.cli.Err(), &te) || !te.Received {
		t.Fatalf("client error %v, want a received Terminate", p.cli.Err())
	}
	if !errors.As(p.srv.Err(), &te) || te.Received {
		t.Fatalf("server error %v, want a sent Terminate", p.srv.Err())
	}
}

// TestLocalInvalidate runs in send-queue order.
func TestLocalInvalidate(t *testing.T) {
	p := newPair(t, Config{}, nil)
	m := mustMR(t, p.pd, make([]byte, 64), rdma.AccessLocalWrite|rdma.AccessRemoteWrite)
	if err := p.cli.PostSend(&rdma.SendWR{ID: 1, Op: rdma.OpLocalInvalidate, InvalidateSTag: m.STag()}); err != nil {
		t.Fatal(err)
	}
	if c := poll1(t, p.cli); c.Err != nil || c.Op != rdma.OpLocalInvalidate {
		t.Fatalf("%+v", c)
	}
	if m.Valid() {
		t.Fatal("still valid")
	}
}

// TestManyReadsBeyondORD posts more Reads than the ORD: they queue and all
// complete, in order, with the right data.
func TestManyReadsBeyondORD(t *testing.T) {
	p := newPair(t, Config{MaxSegment: 1000}, nil)
	src := mustMR(t, p.pd, pattern(64*1024, 3), rdma.AccessRemoteRead)
	const n = 100
	dst := mustMR(t, p.pd, make([]byte, n*512), rdma.AccessLocalWrite)
	for i := 0; i < n; i++ {
		err := p.cli.PostSend(&rdma.SendWR{ID: uint64(i), Op: rdma.OpRead, Local: rdma.SGE{MR: dst, Offset: i * 512, Length: 512},
			RemoteSTag: src.STag(), RemoteAddr: src.Addr() + uint64(i*600)})
		if err != nil {
			t.Fatal(i, err)
		}
	}
	for i := 0; i < n; i++ {
		c := poll1(t, p.cli)
		if c.Err != nil || c.ID != uint64(i) || c.Bytes != 512 {
			t.Fatalf("completion %d: %+v", i, c)
		}
	}
	for i := 0; i < n; i++ {
		if !bytes.Equal(dst.Bytes()[i*512:(i+1)*512], src.Bytes()[i*600:i*600+512]) {
			t.Fatalf("read %d: data differs", i)
		}
	}
}

// TestQueueFullAndUnsignaled: the send queue refuses work beyond its depth;
// unsignaled requests produce no completion.
func TestQueueFullAndUnsignaled(t *testing.T) {
	p := newPair(t, Config{}, nil)
	ep, _ := p.pd.NewEndpoint(rdma.EndpointConfig{RecvQueueDepth: 2})
	defer ep.Close()
	m := mustMR(t, p.pd, make([]byte, 8), rdma.AccessLocalWrite)
	for i := 0; i < 2; i++ {
		if err := ep.PostRecv(&rdma.RecvWR{Local: rdma.SGE{MR: m}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := ep.PostRecv(&rdma.RecvWR{Local: rdma.SGE{MR: m}}); !errors.Is(err, rdma.ErrQueueFull) {
		t.Fatalf("third receive: %v", err)
	}
	if err := ep.PostSend(&rdma.SendWR{Op: rdma.OpSend}); !errors.Is(err, rdma.ErrNotConnected) {
		t.Fatalf("send on unconnected endpoint: %v", err)
	}
	// Unsignaled writes then a signaled one: only the last completes.
	sink := mustMR(t, p.pd, make([]byte, 8), rdma.AccessLocalWrite|rdma.AccessRemoteWrite)
	for i := 0; i < 5; i++ {
		p.cli.PostSend(&rdma.SendWR{ID: uint64(i), Op: rdma.OpWrite, Local: rdma.SGE{MR: m}, RemoteSTag: sink.STag(), RemoteAddr: sink.Addr(), Unsignaled: i < 4})
	}
	if c := poll1(t, p.cli); c.ID != 4 || c.Err != nil {
		t.Fatalf("%+v", c)
	}
}

// TestDisconnectFlushes: a graceful disconnect by one side ends the other
// with ErrDisconnected; posted receives complete flushed, then Poll says
// ErrClosed.
func TestDisconnectFlushes(t *testing.T) {
	var recv rdma.MR
	p := newPair(t, Config{}, nil)
	recv = mustMR(t, p.pd, make([]byte, 64), rdma.AccessLocalWrite)
	for i := 0; i < 3; i++ {
		p.srv.PostRecv(&rdma.RecvWR{ID: uint64(i), Local: rdma.SGE{MR: recv}})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
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
	for i := 0; i < 3; i++ {
		c := poll1(t, p.srv)
		if !errors.Is(c.Err, rdma.ErrFlushed) || c.ID != uint64(i) {
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

// TestConnectRefused and cancellation give clear errors.
func TestConnectErrors(t *testing.T) {
	pd, _ := New(Config{}).NewPD()
	ep, _ := pd.NewEndpoint(rdma.EndpointConfig{})
	defer ep.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	ln, _ := pd.Listen(ctx, "127.0.0.1:0", rdma.ListenConfig{})
	addr := ln.Addr().String()
	// A request that is rejected carries the private data back.
	go func() {
		r, err := ln.Accept(ctx)
		if err == nil {
			r.Reject([]byte("go away"))
		}
	}()
	err := ep.Connect(ctx, addr, rdma.ConnParams{})
	var re *rdma.RejectError
	if !errors.As(err, &re) || !errors.Is(err, rdma.ErrRejected) || string(re.PrivateData) != "go away" {
		t.Fatalf("rejected connect: %v", err)
	}
	ln.Close()
	if err := ep.Connect(ctx, addr, rdma.ConnParams{}); err == nil {
		t.Fatal("connect to a closed listener succeeded")
	}
	if err := ep.Connect(ctx, addr, rdma.ConnParams{PrivateData: make([]byte, 600)}); !errors.Is(err, rdma.ErrInvalidArgument) {
		t.Fatalf("oversized private data: %v", err)
	}
}

// TestMoreBatches: requests posted with More wait for the last of their
// batch and then all arrive, in order.
func TestMoreBatches(t *testing.T) {
	p := newPair(t, Config{FirstSendDelay: -1}, nil)
	recv := mustMR(t, p.pd, make([]byte, 3*8), rdma.AccessLocalWrite)
	for i := 0; i < 3; i++ {
		p.srv.PostRecv(&rdma.RecvWR{ID: uint64(i), Local: rdma.SGE{MR: recv, Offset: 8 * i, Length: 8}})
	}
	src := mustMR(t, p.pd, []byte("aaaaaaaabbbbbbbbcccccccc"), 0)
	for i := 0; i < 3; i++ {
		if err := p.cli.PostSend(&rdma.SendWR{ID: uint64(i), Op: rdma.OpSend, Local: rdma.SGE{MR: src, Offset: 8 * i, Length: 8}, More: i < 2}); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 3; i++ {
		if c := poll1(t, p.srv); c.Err != nil || c.ID != uint64(i) || c.Bytes != 8 {
			t.Fatalf("receive %d: %+v", i, c)
		}
	}
	if string(recv.Bytes()) != "aaaaaaaabbbbbbbbcccccccc" {
		t.Fatalf("received %q", recv.Bytes())
	}
}
