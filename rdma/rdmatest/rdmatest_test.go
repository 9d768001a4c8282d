package rdmatest

import (
	"context"
	"errors"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/smbdirect/smbdirect/rdma"
)

func harness() Harness {
	return Harness{Provider: func(*testing.T) rdma.Provider { return NewNetwork() }, ListenAddr: "server:0"}
}

func TestConformance(t *testing.T) { TestProvider(t, harness()) }

// The conformance suite runs in a synctest bubble too: nothing of the
// provider waits on anything but channels of the bubble.
func TestConformanceSynctest(t *testing.T) {
	h := harness()
	h.Synctest = true
	TestProvider(t, h)
}

func TestConformanceDirect(t *testing.T) {
	h := Harness{Provider: func(*testing.T) rdma.Provider { return NewDirectNetwork() }, ListenAddr: "server:0", Synctest: true}
	TestProvider(t, h)
}

// TestDirectReceiver: receive completions before OnRecv come from Poll,
// then the marker; later ones go to the function, in order, on the
// endpoint's goroutine; none after Close returns. The flushes at the end
// go to Poll.
func TestDirectReceiver(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := NewDirectNetwork()
		p := connectPair(t, Harness{Provider: func(*testing.T) rdma.Provider { return n }, ListenAddr: "s:0"},
			rdma.ConnParams{}, rdma.ConnParams{}, nil)
		recv := mustMR(t, p.pd, make([]byte, 5*4), rdma.AccessLocalWrite)
		for i := range 5 {
			p.srv.PostRecv(&rdma.RecvWR{ID: uint64(i), Local: rdma.SGE{MR: recv, Offset: 4 * i, Length: 4}})
		}
		src := mustMR(t, p.pd, []byte("abcd"), 0)
		send := func(k int) {
			for range k {
				post(t, p.cli, rdma.SendWR{Op: rdma.OpSend, Local: rdma.SGE{MR: src}, Unsignaled: true})
			}
		}
		send(1)
		var got []uint64
		done := make(chan struct{})
		p.srv.(rdma.DirectReceiver).OnRecv(func(c *rdma.Completion) {
			if c.Err != nil || c.Bytes != 4 {
				t.Errorf("direct completion %+v", c)
			}
			got = append(got, c.ID)
			if len(got) == 3 {
				close(done)
			}
		})
		send(3)
		<-done
		if c := poll1(t, p.srv); c.ID != 0 || c.Op != rdma.OpRecv {
			t.Fatalf("first completion %+v", c)
		}
		if c := poll1(t, p.srv); c.Op != rdma.OpMarker {
			t.Fatalf("marker %+v", c)
		}
		if len(got) != 3 || got[0] != 1 || got[2] != 3 {
			t.Fatalf("direct IDs %v", got)
		}
		p.srv.Close()
		if c := poll1(t, p.srv); c.ID != 4 || !errors.Is(c.Err, rdma.ErrFlushed) {
			t.Fatalf("flush %+v", c)
		}
	})
}

// TestDriver: a caller of Drive delivers receive completions to OnRecv's
// function itself; Interrupt and the end of the connection make it
// return.
func TestDriver(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := NewDirectNetwork()
		p := connectPair(t, Harness{Provider: func(*testing.T) rdma.Provider { return n }, ListenAddr: "s:0"},
			rdma.ConnParams{}, rdma.ConnParams{}, nil)
		recv := mustMR(t, p.pd, make([]byte, 64), rdma.AccessLocalWrite)
		for i := range 8 {
			p.srv.PostRecv(&rdma.RecvWR{ID: uint64(i), Local: rdma.SGE{MR: recv, Offset: 8 * i, Length: 8}})
		}
		src := mustMR(t, p.pd, []byte("x"), 0)
		drv := p.srv.(rdma.Driver)
		var inDrive atomic.Bool // set only around Drive: fn sees it when the driver runs fn
		var byDriver, total atomic.Int32
		p.srv.(rdma.DirectReceiver).OnRecv(func(c *rdma.Completion) {
			total.Add(1)
			if inDrive.Load() {
				byDriver.Add(1)
			}
		})
		poll1(t, p.srv) // the marker
		go func() {
			synctest.Wait() // the driver is blocked for data
			post(t, p.cli, rdma.SendWR{Op: rdma.OpSend, Local: rdma.SGE{MR: src}, Unsignaled: true})
		}()
		inDrive.Store(true)
		if !drv.Drive(nil) {
			t.Fatal("Drive refused with nobody on the receive path")
		}
		inDrive.Store(false)
		if byDriver.Load() != 1 || total.Load() != 1 {
			t.Fatalf("delivered %d, %d by the driver", total.Load(), byDriver.Load())
		}
		// Interrupt before Drive: it returns at once.
		drv.Interrupt()
		if !drv.Drive(func() bool { return false }) {
			t.Fatal("interrupted Drive refused")
		}
		// ready decides when to stop: after two more messages.
		post(t, p.cli, rdma.SendWR{Op: rdma.OpSend, Local: rdma.SGE{MR: src}, Unsignaled: true})
		synctest.Wait() // the delivery goroutine has delivered it
		if total.Load() != 2 || byDriver.Load() != 1 {
			t.Fatalf("delivered %d, %d by the driver", total.Load(), byDriver.Load())
		}
		go func() {
			synctest.Wait()
			post(t, p.cli, rdma.SendWR{Op: rdma.OpSend, Local: rdma.SGE{MR: src}, Unsignaled: true})
		}()
		inDrive.Store(true)
		drv.Drive(func() bool { return total.Load() == 3 })
		inDrive.Store(false)
		if total.Load() != 3 || byDriver.Load() != 2 {
			t.Fatalf("delivered %d, %d by the driver", total.Load(), byDriver.Load())
		}
		// The end of the connection ends a Drive.
		go func() {
			synctest.Wait()
			p.cli.Close()
		}()
		drv.Drive(func() bool { return false })
		p.srv.Close()
	})
}

// TestStrictSend: a Send with no receive posted, or one too small,
// terminates the connection with errors naming the fault.
func TestStrictSend(t *testing.T) {
	h := harness()
	t.Run("no-receive", func(t *testing.T) {
		p := newCPair(t, h)
		src := mustMR(t, p.pd, []byte("x"), 0)
		post(t, p.cli, rdma.SendWR{ID: 1, Op: rdma.OpSend, Local: rdma.SGE{MR: src}})
		if c := poll1(t, p.cli); c.ID != 1 || !errors.Is(c.Err, rdma.ErrRemoteOperation) {
			t.Fatalf("send completion %+v", c)
		}
		ended(t, p.srv)
		if !errors.Is(p.srv.Err(), rdma.ErrProtocol) || !errors.Is(p.cli.Err(), rdma.ErrRemoteOperation) {
			t.Fatalf("errors: receiver %v, sender %v", p.srv.Err(), p.cli.Err())
		}
	})
	t.Run("receive-too-small", func(t *testing.T) {
		p := newCPair(t, h)
		recv := mustMR(t, p.pd, make([]byte, 4), rdma.AccessLocalWrite)
		p.srv.PostRecv(&rdma.RecvWR{ID: 7, Local: rdma.SGE{MR: recv}})
		p.srv.PostRecv(&rdma.RecvWR{ID: 8, Local: rdma.SGE{MR: recv}})
		src := mustMR(t, p.pd, []byte("hello"), 0)
		post(t, p.cli, rdma.SendWR{ID: 1, Op: rdma.OpSend, Local: rdma.SGE{MR: src}})
		if c := poll1(t, p.srv); c.ID != 7 || !errors.Is(c.Err, rdma.ErrLocalLength) {
			t.Fatalf("recv completion %+v", c)
		}
		if c := poll1(t, p.srv); c.ID != 8 || !errors.Is(c.Err, rdma.ErrFlushed) {
			t.Fatalf("second receive %+v", c)
		}
		if string(recv.Bytes()) != "\x00\x00\x00\x00" {
			t.Fatalf("data placed: %q", recv.Bytes())
		}
		if !errors.Is(p.srv.Err(), rdma.ErrLocalLength) {
			t.Fatalf("receiver error %v", p.srv.Err())
		}
	})
	t.Run("invalidate-unknown", func(t *testing.T) {
		p := newCPair(t, h)
		recv := mustMR(t, p.pd, make([]byte, 4), rdma.AccessLocalWrite)
		p.srv.PostRecv(&rdma.RecvWR{ID: 7, Local: rdma.SGE{MR: recv}})
		post(t, p.cli, rdma.SendWR{ID: 1, Op: rdma.OpSendInvalidate, InvalidateSTag: 0x12345678})
		if c := poll1(t, p.srv); c.ID != 7 || !errors.Is(c.Err, rdma.ErrRemoteOperation) {
			t.Fatalf("recv completion %+v", c)
		}
		if c := poll1(t, p.cli); c.ID != 1 || !errors.Is(c.Err, rdma.ErrRemoteOperation) {
			t.Fatalf("send completion %+v", c)
		}
	})
}

// TestFileSource: a Send or Write may take its data from a file range.
func TestFileSource(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "src")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.WriteString("0123456789")
	p := newCPair(t, harness())
	recv := mustMR(t, p.pd, make([]byte, 8), rdma.AccessLocalWrite)
	p.srv.PostRecv(&rdma.RecvWR{ID: 1, Local: rdma.SGE{MR: recv}})
	post(t, p.cli, rdma.SendWR{ID: 2, Op: rdma.OpSend, File: &rdma.FileRange{File: f, Offset: 2, Length: 4}})
	if c := poll1(t, p.srv); c.Err != nil || c.Bytes != 4 || string(recv.Bytes()[:4]) != "2345" {
		t.Fatalf("%+v %q", c, recv.Bytes())
	}
	sink := mustMR(t, p.pd, make([]byte, 8), rdma.AccessLocalWrite|rdma.AccessRemoteWrite)
	post(t, p.cli, rdma.SendWR{ID: 3, Op: rdma.OpWrite, File: &rdma.FileRange{File: f, Offset: 6, Length: 4}, RemoteSTag: sink.STag(), RemoteAddr: sink.Addr() + 1})
	if string(sink.Bytes()) != "\x006789\x00\x00\x00" {
		t.Fatalf("written %q", sink.Bytes())
	}
	if err := p.cli.PostSend(&rdma.SendWR{Op: rdma.OpSend, File: &rdma.FileRange{File: f, Offset: 8, Length: 4}}); !errors.Is(err, rdma.ErrInvalidArgument) {
		t.Fatalf("range past the end: %v", err)
	}
}

// TestAbort ends the connection at once, as Close.
func TestAbort(t *testing.T) {
	p := newCPair(t, harness())
	p.cli.(interface{ Abort() }).Abort()
	ended(t, p.srv)
	if !errors.Is(p.srv.Err(), rdma.ErrDisconnected) || !errors.Is(p.cli.Err(), rdma.ErrClosed) {
		t.Fatalf("errors %v, %v", p.srv.Err(), p.cli.Err())
	}
}

// TestAbortFromReceiveHandler: Abort called by OnRecv's function, which
// Close would wait for, returns and ends the connection.
func TestAbortFromReceiveHandler(t *testing.T) {
	ctx := context.Background()
	n := NewDirectNetwork()
	pd, _ := n.NewPD()
	ln, _ := pd.Listen(ctx, "s:1", rdma.ListenConfig{})
	defer ln.Close()
	srv, _ := pd.NewEndpoint(rdma.EndpointConfig{})
	cli, _ := pd.NewEndpoint(rdma.EndpointConfig{})
	buf, _ := pd.RegisterMemory(make([]byte, 8), rdma.AccessLocalWrite)
	if err := srv.PostRecv(&rdma.RecvWR{ID: 1, Local: rdma.SGE{MR: buf, Length: 8}}); err != nil {
		t.Fatal(err)
	}
	aborted := make(chan struct{})
	srv.(rdma.DirectReceiver).OnRecv(func(c *rdma.Completion) {
		srv.Abort()
		close(aborted)
	})
	go func() {
		if r, err := ln.Accept(ctx); err == nil {
			r.Accept(ctx, srv, rdma.ConnParams{})
		}
	}()
	if err := cli.Connect(ctx, "s:1", rdma.ConnParams{}); err != nil {
		t.Fatal(err)
	}
	src, _ := pd.RegisterMemory([]byte("x"), 0)
	if err := cli.PostSend(&rdma.SendWR{ID: 2, Op: rdma.OpSend, Local: rdma.SGE{MR: src, Length: 1}}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-aborted:
	case <-time.After(10 * time.Second):
		t.Fatal("Abort inside the receive handler did not return")
	}
	ended(t, cli)
	if !errors.Is(cli.Err(), rdma.ErrDisconnected) || !errors.Is(srv.Err(), rdma.ErrClosed) {
		t.Fatalf("errors %v, %v", cli.Err(), srv.Err())
	}
	srv.Close()
	cli.Close()
	buf.Close()
	src.Close()
	ln.Close()
	pd.Close()
	if err := n.Leaks(); err != nil {
		t.Fatal(err)
	}
}

// TestSendQueueSlots: a send queue slot is freed when its completion is
// polled, an unsignaled request's with the next signaled one.
func TestSendQueueSlots(t *testing.T) {
	ctx := context.Background()
	n := NewNetwork()
	pd, _ := n.NewPD()
	ln, _ := pd.Listen(ctx, "s:1", rdma.ListenConfig{})
	defer ln.Close()
	srv, _ := pd.NewEndpoint(rdma.EndpointConfig{})
	defer srv.Close()
	cli, _ := pd.NewEndpoint(rdma.EndpointConfig{SendQueueDepth: 3})
	defer cli.Close()
	go func() {
		if r, err := ln.Accept(ctx); err == nil {
			r.Accept(ctx, srv, rdma.ConnParams{})
		}
	}()
	if err := cli.Connect(ctx, "s:1", rdma.ConnParams{}); err != nil {
		t.Fatal(err)
	}
	sink, _ := pd.RegisterMemory(make([]byte, 8), rdma.AccessLocalWrite|rdma.AccessRemoteWrite)
	defer sink.Close()
	w := func(id uint64, unsig bool) error {
		return cli.PostSend(&rdma.SendWR{ID: id, Op: rdma.OpWrite, RemoteSTag: sink.STag(), RemoteAddr: sink.Addr(), Unsignaled: unsig})
	}
	for i := range 3 {
		if err := w(uint64(i), i < 2); err != nil {
			t.Fatal(i, err)
		}
	}
	if err := w(3, false); !errors.Is(err, rdma.ErrQueueFull) {
		t.Fatalf("fourth request: %v", err)
	}
	var wc [4]rdma.Completion
	if k, err := cli.Poll(ctx, wc[:]); k != 1 || err != nil || wc[0].ID != 2 {
		t.Fatalf("poll: %d %v %+v", k, err, wc[0])
	}
	for i := range 3 {
		if err := w(uint64(10+i), false); err != nil {
			t.Fatal("after the poll:", i, err)
		}
	}
}

// TestBusyAndClosed: regions with posted receives and PDs in use are busy.
func TestBusyAndClosed(t *testing.T) {
	n := NewNetwork()
	pd, _ := n.NewPD()
	ep, _ := pd.NewEndpoint(rdma.EndpointConfig{})
	m, _ := pd.RegisterMemory(make([]byte, 8), rdma.AccessLocalWrite)
	ep.PostRecv(&rdma.RecvWR{Local: rdma.SGE{MR: m}})
	if err := m.Close(); !errors.Is(err, rdma.ErrBusy) {
		t.Fatalf("region with a posted receive: %v", err)
	}
	if err := pd.Close(); !errors.Is(err, rdma.ErrBusy) {
		t.Fatalf("PD in use: %v", err)
	}
	ep.Close()
	var wc [2]rdma.Completion
	if k, err := ep.Poll(context.Background(), wc[:]); k != 1 || err != nil || !errors.Is(wc[0].Err, rdma.ErrFlushed) {
		t.Fatalf("poll: %d %v %+v", k, err, wc[0])
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := n.Leaks(); err == nil {
		t.Fatal("an open PD is not reported")
	}
	if err := pd.Close(); err != nil {
		t.Fatal(err)
	}
	if err := n.Leaks(); err != nil {
		t.Fatal(err)
	}
	if _, err := pd.NewEndpoint(rdma.EndpointConfig{}); !errors.Is(err, rdma.ErrClosed) {
		t.Fatalf("endpoint of a closed PD: %v", err)
	}
}

// TestConnectFailures: no listener refuses as on TCP, an address is taken
// once, a Connect ends with its context, and a request its initiator gave
// up cannot be accepted.
func TestConnectFailures(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := NewNetwork()
		pd, _ := n.NewPD()
		ep, _ := pd.NewEndpoint(rdma.EndpointConfig{})
		defer ep.Close()
		if err := ep.Connect(t.Context(), "nobody:1", rdma.ConnParams{}); !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("connect to nobody: %v", err)
		}
		ln, _ := pd.Listen(t.Context(), "s:1", rdma.ListenConfig{})
		defer ln.Close()
		if _, err := pd.Listen(t.Context(), "s:1", rdma.ListenConfig{}); !errors.Is(err, syscall.EADDRINUSE) {
			t.Fatalf("second listener: %v", err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		start := time.Now()
		if err := ep.Connect(ctx, "s:1", rdma.ConnParams{}); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("connect not accepted: %v", err)
		}
		if d := time.Since(start); d != time.Second {
			t.Fatalf("connect gave up after %v", d)
		}
		// The request was withdrawn: the listener has nothing.
		actx, acancel := context.WithTimeout(t.Context(), time.Millisecond)
		defer acancel()
		if _, err := ln.Accept(actx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("accept of a withdrawn request: %v", err)
		}
		// An endpoint closed while connecting withdraws its request too.
		ep2, _ := pd.NewEndpoint(rdma.EndpointConfig{})
		errc := make(chan error, 1)
		go func() { errc <- ep2.Connect(t.Context(), "s:1", rdma.ConnParams{}) }()
		synctest.Wait()
		ep2.Close()
		if err := <-errc; !errors.Is(err, rdma.ErrClosed) {
			t.Fatalf("connect of a closed endpoint: %v", err)
		}
		actx2, acancel2 := context.WithTimeout(t.Context(), time.Millisecond)
		defer acancel2()
		if _, err := ln.Accept(actx2); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("accept of a closed endpoint's request: %v", err)
		}
		// The first endpoint can try again.
		go func() {
			if r, err := ln.Accept(t.Context()); err == nil {
				srv, _ := pd.NewEndpoint(rdma.EndpointConfig{})
				r.Accept(t.Context(), srv, rdma.ConnParams{})
				<-srv.Done()
				srv.Close()
			}
		}()
		if err := ep.Connect(t.Context(), "s:1", rdma.ConnParams{}); err != nil {
			t.Fatal(err)
		}
		ep.Close()
	})
}
