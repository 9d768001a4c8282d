package iwarp

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/smbdirect/smbdirect/rdma"
)

// TestPollDriveInterrupts: a Poll that runs the receive path while it
// waits (a receive is posted, no data comes) still returns a completion
// another goroutine produces, and returns at the end of its context.
func TestPollDriveInterrupts(t *testing.T) {
	checkLeaks(t)
	p := newPair(t, Config{FirstSendDelay: -1}, nil)
	rbuf := mustMR(t, p.pd, make([]byte, 64), rdma.AccessLocalWrite)
	if err := p.cli.PostRecv(&rdma.RecvWR{ID: 9, Local: rdma.SGE{MR: rbuf}}); err != nil {
		t.Fatal(err)
	}
	// A Write larger than the inline limit: the transmit goroutine
	// completes it while this goroutine drives.
	const size = 4 << 20
	src := mustMR(t, p.pd, make([]byte, size), 0)
	dst := mustMR(t, p.pd, make([]byte, size), rdma.AccessLocalWrite|rdma.AccessRemoteWrite)
	for i := range 20 {
		if err := p.cli.PostSend(&rdma.SendWR{ID: uint64(i), Op: rdma.OpWrite, Local: rdma.SGE{MR: src}, RemoteSTag: dst.STag(), RemoteAddr: dst.Addr()}); err != nil {
			t.Fatal(err)
		}
		if c := poll1(t, p.cli); c.Err != nil || c.ID != uint64(i) || c.Op != rdma.OpWrite {
			t.Fatalf("write completion %+v", c)
		}
	}
	for _, ctxOf := range []func() (context.Context, context.CancelFunc){
		func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 50*time.Millisecond)
		},
		func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(50*time.Millisecond, cancel)
			return ctx, cancel
		},
	} {
		ctx, cancel := ctxOf()
		t0 := time.Now()
		var wc [1]rdma.Completion
		n, err := p.cli.Poll(ctx, wc[:])
		cancel()
		if n != 0 || (!errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled)) {
			t.Fatalf("poll: %d %v", n, err)
		}
		if d := time.Since(t0); d > 5*time.Second {
			t.Fatalf("poll returned %v after its context ended", d)
		}
	}
	// The receive still works after the interrupted drives.
	sbuf := mustMR(t, p.pd, []byte("ping"), 0)
	if err := p.srv.PostSend(&rdma.SendWR{Op: rdma.OpSend, Local: rdma.SGE{MR: sbuf}, Unsignaled: true}); err != nil {
		t.Fatal(err)
	}
	if c := poll1(t, p.cli); c.Err != nil || c.ID != 9 || c.Bytes != 4 {
		t.Fatalf("recv completion %+v", c)
	}
}

// TestPollPingPongAllocs: a Send ping-pong with both sides in Poll (with a
// cancellable context, whose watch is kept across Polls) allocates
// nothing per round trip.
func TestPollPingPongAllocs(t *testing.T) {
	checkLeaks(t)
	p := newPair(t, Config{FirstSendDelay: -1}, nil)
	poll := func(ctx context.Context, ep rdma.Endpoint, wc []rdma.Completion) (int, error) {
		return ep.Poll(ctx, wc)
	}
	roundTrip, stop := startPingPong(t, p.pd, p.cli, p.srv, poll)
	var perr error
	rt := func() {
		if err := roundTrip(); err != nil && perr == nil {
			perr = err
		}
	}
	for range 50 {
		rt() // the watch of ctx, the rings and buffers settle
	}
	if a := testing.AllocsPerRun(500, rt); a != 0 {
		t.Errorf("%v allocations per round trip", a)
	}
	if perr != nil {
		t.Fatal(perr)
	}
	stop()
}
