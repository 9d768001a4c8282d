package smbd

import (
	"context"
	"os"
	"runtime"
	"strconv"
	"testing"
	"time"
)

// idleConnCost opens n connection pairs, lets them settle, and returns
// what each connection end holds: heap and stack bytes, and goroutines.
func idleConnCost(t *testing.T, n int) (heap, stack int, goroutines float64) {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.GC()
	g0 := settledGoroutines()
	runtime.ReadMemStats(&before)
	conns := make([]*Conn, 0, 2*n)
	for range n {
		c, s := pair(t, testConfig(), testConfig())
		conns = append(conns, c, s)
	}
	g1 := settledGoroutines()
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(conns)
	k := 2 * n
	return int(after.HeapAlloc-before.HeapAlloc) / k, int(after.StackInuse-before.StackInuse) / k, float64(g1-g0) / float64(k)
}

// settledGoroutines counts goroutines once the count stops changing: the
// handshake's helpers (accept, dial) exit shortly after they hand over.
func settledGoroutines() int {
	n := runtime.NumGoroutine()
	for range 50 {
		time.Sleep(20 * time.Millisecond)
		m := runtime.NumGoroutine()
		if m == n {
			return n
		}
		n = m
	}
	return n
}

// TestIdleConnCost holds an idle connection end (connected, negotiated,
// nothing in flight) to the budget: 128 KiB, heap and goroutine
// stacks together, and at most 2 goroutines.
// SMBD_IDLE_CONNS=1000 measures that many pairs instead of 50.
func TestIdleConnCost(t *testing.T) {
	n := 50
	if s := os.Getenv("SMBD_IDLE_CONNS"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v <= 0 {
			t.Fatalf("SMBD_IDLE_CONNS=%q: want a positive count", s)
		}
		n = v
	}
	// The first batch in a process also pays one-time growth (about
	// 17 KiB a connection under -race: runtime and pool structures), which
	// is not what an idle connection holds: measure a second batch.
	t.Run("warm-up", func(t *testing.T) { idleConnCost(t, 20) })
	heap, stack, g := idleConnCost(t, n)
	t.Logf("idle connection end (%d pairs): %d KiB heap + %d KiB stacks = %d KiB, %.2f goroutines",
		n, heap>>10, stack>>10, (heap+stack)>>10, g)
	if heap+stack > 128<<10 {
		t.Errorf("an idle connection end holds %d KiB, budget 128 KiB", (heap+stack)>>10)
	}
	if g > 2 {
		t.Errorf("an idle connection end runs %.2f goroutines, budget 2", g)
	}
}

// TestClosedConnCollectable: a closed connection is garbage once the
// program drops it, although its keepalive timer would have fired only an
// interval later (the runtime may keep a stopped timer, and its function,
// until then).
func TestClosedConnCollectable(t *testing.T) {
	// Timers due before the keepalive's likely keep it from the head of the
	// runtime's timer heaps, where a stopped one is dropped at once.
	for range 2 * runtime.GOMAXPROCS(0) {
		guard := time.AfterFunc(time.Minute, func() {})
		defer guard.Stop()
	}
	collected := make(chan string, 2)
	func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		l, err := Listen(ctx, "127.0.0.1:0", testConfig())
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		accepted := make(chan *Conn, 1)
		go func() {
			s, _ := l.AcceptSMBD(ctx)
			accepted <- s
		}()
		c, err := Dial(ctx, l.Addr().String(), testConfig())
		if err != nil {
			t.Fatal(err)
		}
		s := <-accepted
		if s == nil {
			c.Close()
			t.Fatal("accept failed")
		}
		runtime.AddCleanup(c, func(name string) { collected <- name }, "client")
		runtime.AddCleanup(s, func(name string) { collected <- name }, "server")
		c.Close()
		s.Close()
	}()
	deadline := time.Now().Add(10 * time.Second)
	for got := 0; got < 2; {
		runtime.GC()
		select {
		case <-collected:
			got++
		case <-time.After(10 * time.Millisecond):
			if time.Now().After(deadline) {
				t.Fatal("a closed connection is still referenced 10 s after Close")
			}
		}
	}
}
