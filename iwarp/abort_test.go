package iwarp

import (
	"errors"
	"testing"
	"time"

	"github.com/smbdirect/smbdirect/internal/leakcheck"
	"github.com/smbdirect/smbdirect/rdma"
)

// TestAbortFromReceiveHandler: Abort called while the receive path sits in
// a DirectReceiver function returns at once (Close would wait for that
// function to return), ends the connection, and leaves the flush to the
// receive path's end; Close then releases the endpoint.
func TestAbortFromReceiveHandler(t *testing.T) {
	leakcheck.Check(t)
	var buf rdma.MR
	p := newPair(t, Config{FirstSendDelay: -1}, func(ep rdma.Endpoint, server bool) {})
	buf = mustMR(t, p.pd, make([]byte, 1024), rdma.AccessLocalWrite)
	for i := 0; i < 2; i++ {
		p.srv.PostRecv(&rdma.RecvWR{ID: uint64(i), Local: rdma.SGE{MR: buf, Offset: 512 * i, Length: 512}})
	}
	entered, release := make(chan struct{}), make(chan struct{})
	p.srv.(rdma.DirectReceiver).OnRecv(func(wc *rdma.Completion) {
		if wc.Err == nil {
			close(entered)
			<-release
		}
	})
	src := mustMR(t, p.pd, []byte("ping"), 0)
	if err := p.cli.PostSend(&rdma.SendWR{Op: rdma.OpSend, Local: rdma.SGE{MR: src, Length: 4}, Unsignaled: true}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("no receive")
	}
	aborted := make(chan struct{})
	go func() { p.srv.Abort(); close(aborted) }()
	select {
	case <-aborted:
	case <-time.After(10 * time.Second):
		close(release)
		t.Fatal("Abort waited for the receive handler")
	}
	select {
	case <-p.srv.Done():
	default:
		t.Fatal("Done open after Abort")
	}
	if err := p.srv.PostSend(&rdma.SendWR{Op: rdma.OpSend}); !errors.Is(err, rdma.ErrNotConnected) {
		t.Fatalf("PostSend after Abort: %v", err)
	}
	if !errors.Is(p.srv.Err(), rdma.ErrClosed) {
		t.Fatalf("Err after Abort: %v", p.srv.Err())
	}
	// The peer sees the end.
	select {
	case <-p.cli.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("peer did not see the abort")
	}
	close(release)
	// The other receive is flushed once the receive path has wound up.
	wc := poll1(t, p.srv)
	if wc.Op == rdma.OpMarker { // OnRecv's
		wc = poll1(t, p.srv)
	}
	if wc.ID != 1 || !errors.Is(wc.Err, rdma.ErrFlushed) {
		t.Fatalf("after Abort: %+v", wc)
	}
	if err := p.srv.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestAbortUnconnected: an endpoint that never connected flushes its
// receives on Abort, and Abort and Close may follow each other.
func TestAbortUnconnected(t *testing.T) {
	pd, _ := New(Config{}).NewPD()
	ep, _ := pd.NewEndpoint(rdma.EndpointConfig{})
	m := mustMR(t, pd, make([]byte, 64), rdma.AccessLocalWrite)
	ep.PostRecv(&rdma.RecvWR{ID: 7, Local: rdma.SGE{MR: m}})
	ep.Abort()
	if wc := poll1(t, ep); wc.ID != 7 || !errors.Is(wc.Err, rdma.ErrFlushed) {
		t.Fatalf("%+v", wc)
	}
	if err := ep.Connect(testCtx(t), "127.0.0.1:1", rdma.ConnParams{}); err == nil {
		t.Fatal("Connect after Abort")
	}
	ep.Abort()
	if err := ep.Close(); err != nil {
		t.Fatal(err)
	}
	ep.Abort()
}
