package iwarp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/smbdirect/smbdirect/rdma"
)

// txRunning reports whether e's transmit goroutine runs.
func txRunning(e *endpoint) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.txRun
}

// waitTxIdle waits for e's transmit goroutine to exit.
func waitTxIdle(t *testing.T, e *endpoint) {
	t.Helper()
	for t0 := time.Now(); txRunning(e); {
		if time.Since(t0) > 10*time.Second {
			t.Fatal("the transmit goroutine still runs with nothing to send")
		}
		time.Sleep(time.Millisecond)
	}
}

// TestTxGoroutineOnDemand: a connection's transmit goroutine runs only
// while there is something to send. A small Send goes out inline without
// it; a Write over the inline limit starts it, without allocating, and it
// exits once the Write is written. The last goroutine out reaps: Close
// returns with everything flushed and nothing left running (checkLeaks).
func TestTxGoroutineOnDemand(t *testing.T) {
	checkLeaks(t)
	p := newPair(t, Config{FirstSendDelay: -1}, nil)
	cli, srv := p.cli.(*endpoint), p.srv.(*endpoint)
	waitTxIdle(t, cli)
	waitTxIdle(t, srv)

	rbuf := mustMR(t, p.pd, make([]byte, 64), rdma.AccessLocalWrite)
	if err := p.srv.PostRecv(&rdma.RecvWR{ID: 1, Local: rdma.SGE{MR: rbuf}}); err != nil {
		t.Fatal(err)
	}
	sbuf := mustMR(t, p.pd, []byte("ping"), 0)
	if err := p.cli.PostSend(&rdma.SendWR{ID: 2, Op: rdma.OpSend, Local: rdma.SGE{MR: sbuf}}); err != nil {
		t.Fatal(err)
	}
	if runtime.GOOS == "linux" && txRunning(cli) {
		t.Error("a small Send started the transmit goroutine instead of going out inline")
	}
	if c := poll1(t, p.cli); c.Err != nil || c.ID != 2 || c.Op != rdma.OpSend || c.Bytes != 4 {
		t.Fatalf("send completion %+v", c)
	}
	if c := poll1(t, p.srv); c.Err != nil || c.ID != 1 || c.Bytes != 4 || string(rbuf.Bytes()[:4]) != "ping" {
		t.Fatalf("recv completion %+v", c)
	}

	const size = 2 * inlineMax
	src := mustMR(t, p.pd, pattern(size, 3), 0)
	dst := mustMR(t, p.pd, make([]byte, size), rdma.AccessLocalWrite|rdma.AccessRemoteWrite)
	wr := rdma.SendWR{ID: 3, Op: rdma.OpWrite, Local: rdma.SGE{MR: src}, RemoteSTag: dst.STag(), RemoteAddr: dst.Addr()}
	var wc [1]rdma.Completion
	var werr error
	write := func() {
		if err := p.cli.PostSend(&wr); err != nil {
			werr = err
			return
		}
		n, err := p.cli.Poll(context.Background(), wc[:])
		if err != nil || n != 1 || wc[0].Err != nil || wc[0].ID != 3 || wc[0].Bytes != size {
			werr = fmt.Errorf("write: %d %v %+v", n, err, wc[0])
		}
	}
	write()
	if werr != nil {
		t.Fatal(werr)
	}
	waitTxIdle(t, cli)
	if a := testing.AllocsPerRun(20, func() { waitTxIdleQuiet(cli); write() }); a != 0 {
		t.Errorf("%v allocations per Write through the transmit goroutine", a)
	}
	if werr != nil {
		t.Fatal(werr)
	}
	waitTxIdle(t, cli)
	// The Write's bytes are placed on the server by its receive goroutine;
	// a Send after them completes once they are.
	if err := p.srv.PostRecv(&rdma.RecvWR{ID: 4, Local: rdma.SGE{MR: rbuf}}); err != nil {
		t.Fatal(err)
	}
	if err := p.cli.PostSend(&rdma.SendWR{ID: 5, Op: rdma.OpSend, Local: rdma.SGE{MR: sbuf}, Unsignaled: true}); err != nil {
		t.Fatal(err)
	}
	if c := poll1(t, p.srv); c.Err != nil || c.ID != 4 {
		t.Fatalf("recv completion %+v", c)
	}
	if !bytes.Equal(dst.Bytes(), src.Bytes()) {
		t.Fatal("written bytes differ")
	}

	// Posted but never sent: flushed by the last goroutine out.
	if err := p.srv.PostRecv(&rdma.RecvWR{ID: 6, Local: rdma.SGE{MR: rbuf}}); err != nil {
		t.Fatal(err)
	}
	p.srv.Close()
	if c := poll1(t, p.srv); !errors.Is(c.Err, rdma.ErrFlushed) || c.ID != 6 {
		t.Fatalf("flushed receive %+v", c)
	}
	if txRunning(srv) || srv.rxRun || !srv.reaping {
		t.Fatalf("closed endpoint: transmit goroutine %v, receive goroutine %v, reaped %v", srv.txRun, srv.rxRun, srv.reaping)
	}
}

// waitTxIdleQuiet is waitTxIdle for inside AllocsPerRun (no t.Helper).
func waitTxIdleQuiet(e *endpoint) {
	for t0 := time.Now(); txRunning(e) && time.Since(t0) < 10*time.Second; {
		runtime.Gosched()
	}
}
