package rping

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/smbdirect/smbdirect/iwarp"
	"github.com/smbdirect/smbdirect/rdma"
)

func TestFillMatchesRping(t *testing.T) {
	b := make([]byte, 40)
	Fill(b, 0)
	if got := string(b[:39]); got != "rdma-ping-0: ABCDEFGHIJKLMNOPQRSTUVWXYZ" {
		t.Fatalf("ping 0: %q", got)
	}
	if b[39] != 0 {
		t.Fatal("no terminating NUL")
	}
	Fill(b, 59) // start wraps: 65 + 59%58 = 'B'
	if !strings.HasPrefix(string(b), "rdma-ping-59: BCD") {
		t.Fatalf("ping 59: %q", b)
	}
	Fill(b, 57) // starts at 'z' then wraps to 'A'
	if !strings.HasPrefix(string(b), "rdma-ping-57: zAB") {
		t.Fatalf("ping 57: %q", b)
	}
}

func run(t *testing.T, cfg iwarp.Config, size, count int) (Stats, Stats, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pd, _ := iwarp.New(cfg).NewPD()
	ln, err := pd.Listen(ctx, "127.0.0.1:0", rdma.ListenConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var sout, cout bytes.Buffer
	type res struct {
		st  Stats
		err error
	}
	sc := make(chan res, 1)
	go func() {
		st, err := Serve(ctx, pd, ln, Options{Size: size, Verbose: &sout})
		sc <- res{st, err}
	}()
	cst, err := Client(ctx, pd, Options{Addr: ln.Addr().String(), Size: size, Count: count, Validate: true, Verbose: &cout})
	if err != nil {
		t.Fatal("client:", err)
	}
	s := <-sc
	if s.err != nil {
		t.Fatal("server:", s.err)
	}
	return cst, s.st, cout.String(), sout.String()
}

func TestClientServer(t *testing.T) {
	base := runtime.NumGoroutine()
	for _, crc := range []bool{false, true} {
		for _, size := range []int{64, MaxSize} {
			t.Run(fmt.Sprintf("crc=%v/size=%d", crc, size), func(t *testing.T) {
				c, s, cout, sout := run(t, iwarp.Config{CRC: crc, FirstSendDelay: -1}, size, 100)
				if c.Pings != 100 || s.Pings != 100 || c.Validated != 100 || s.Validated != 100 {
					t.Fatalf("client %+v server %+v", c, s)
				}
				if s.BytesRead != int64(100*size) || c.CRC != crc || s.CRC != crc {
					t.Fatalf("server %+v", s)
				}
				if !strings.HasPrefix(cout, "ping data: rdma-ping-0: ABC") || !strings.Contains(sout, "server ping data: rdma-ping-99: ") {
					t.Fatalf("verbose output:\n%.200s\n%.200s", cout, sout)
				}
				if n := strings.Count(cout, "\n"); n != 100 {
					t.Fatalf("%d client lines", n)
				}
			})
		}
	}
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > base && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > base {
		buf := make([]byte, 1<<16)
		t.Fatalf("%d goroutines left (was %d):\n%s", n, base, buf[:runtime.Stack(buf, true)])
	}
}

// TestServerDetectsCorruption: a client that sends the wrong pattern is
// caught by the server's check.
func TestServerDetectsCorruption(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pd, _ := iwarp.New(iwarp.Config{FirstSendDelay: -1}).NewPD()
	ln, _ := pd.Listen(ctx, "127.0.0.1:0", rdma.ListenConfig{})
	defer ln.Close()
	sc := make(chan error, 1)
	go func() {
		_, err := Serve(ctx, pd, ln, Options{})
		sc <- err
	}()
	// A client that advertises a buffer holding the wrong ping number.
	ep, _ := pd.NewEndpoint(rdma.EndpointConfig{})
	defer ep.Close()
	recv, _ := pd.RegisterMemory(make([]byte, 16), rdma.AccessLocalWrite)
	src, _ := pd.RegisterMemory(make([]byte, 64), rdma.AccessRemoteRead)
	send, _ := pd.RegisterMemory(make([]byte, 16), 0)
	Fill(src.Bytes(), 5)
	putInfo(send.Bytes(), src, 64)
	ep.PostRecv(&rdma.RecvWR{Local: rdma.SGE{MR: recv}})
	if err := ep.Connect(ctx, ln.Addr().String(), rdma.ConnParams{}); err != nil {
		t.Fatal(err)
	}
	ep.PostSend(&rdma.SendWR{Op: rdma.OpSend, Local: rdma.SGE{MR: send}})
	if err := <-sc; !errors.Is(err, ErrMismatch) {
		t.Fatalf("server: %v, want ErrMismatch", err)
	}
}

func TestSizeLimits(t *testing.T) {
	pd, _ := iwarp.New(iwarp.Config{}).NewPD()
	for _, n := range []int{MinSize - 1, MaxSize + 1} {
		if _, err := Client(context.Background(), pd, Options{Size: n}); err == nil || !strings.Contains(err.Error(), "invalid size") {
			t.Fatalf("size %d: %v", n, err)
		}
	}
}

// batchEP is an endpoint whose Poll hands out prepared batches.
type batchEP struct {
	rdma.Endpoint // not called
	batches       [][]rdma.Completion
	err           error
	reposted      int
}

func (e *batchEP) Poll(ctx context.Context, wc []rdma.Completion) (int, error) {
	if len(e.batches) == 0 {
		return 0, rdma.ErrClosed
	}
	n := copy(wc, e.batches[0])
	e.batches = e.batches[1:]
	return n, nil
}

func (e *batchEP) Err() error { return e.err }

func (e *batchEP) PostRecv(*rdma.RecvWR) error { e.reposted++; return nil }

// The peer disconnects as soon as it has our last Send: that Send's
// completion and the flushed receive can come in one batch. The Send did
// complete; the end shows at the next wait. (The server failed its last
// ping this way under load: "rdma: disconnected by peer".)
func TestWaitSendThenFlushInOneBatch(t *testing.T) {
	flushed := &rdma.WorkError{Op: rdma.OpRecv, ID: 1, Err: rdma.ErrFlushed}
	ep := &batchEP{err: rdma.ErrDisconnected, batches: [][]rdma.Completion{{
		{ID: 5, Op: rdma.OpSend},
		{ID: 1, Op: rdma.OpRecv, Err: flushed},
	}}}
	c := &conn{ep: ep, got: map[rdma.Opcode]int{}}
	if err := c.wait(t.Context(), rdma.OpSend); err != nil {
		t.Fatalf("wait for the Send that completed: got %v, want nil", err)
	}
	if err := c.wait(t.Context(), rdma.OpRecv); !errors.Is(err, rdma.ErrDisconnected) || !ended(err) {
		t.Fatalf("next wait: got %v, want rdma.ErrDisconnected", err)
	}
	if ep.reposted != 0 {
		t.Fatalf("%d receives reposted after a flush, want 0", ep.reposted)
	}
}

// A failure that is not a flush is reported as such, even behind a
// completion in its batch, and received data of the wrong size too.
func TestWaitFailures(t *testing.T) {
	bad := &rdma.WorkError{Op: rdma.OpRead, ID: 2, Err: rdma.ErrRemoteAccess}
	ep := &batchEP{batches: [][]rdma.Completion{{{ID: 3, Op: rdma.OpSend}, {ID: 2, Op: rdma.OpRead, Err: bad}}}}
	c := &conn{ep: ep, got: map[rdma.Opcode]int{}}
	if err := c.wait(t.Context(), rdma.OpSend); err != nil {
		t.Fatalf("wait for the Send: got %v, want nil", err)
	}
	if err := c.wait(t.Context(), rdma.OpRead); !errors.Is(err, rdma.ErrRemoteAccess) || !strings.Contains(err.Error(), "rping: ") {
		t.Fatalf("wait for the Read: got %v, want an rping error wrapping rdma.ErrRemoteAccess", err)
	}
	ep = &batchEP{batches: [][]rdma.Completion{{{ID: 1, Op: rdma.OpRecv, Bytes: 3}}}}
	c = &conn{ep: ep, got: map[rdma.Opcode]int{}}
	if err := c.wait(t.Context(), rdma.OpRecv); err == nil || !strings.Contains(err.Error(), "bogus data, size 3") {
		t.Fatalf("a 3-byte receive: got %v, want \"received bogus data, size 3\"", err)
	}
}
