package iwarp

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/smbdirect/smbdirect/rdma"
)

// TestConnectFollowsContextDeadline: against a peer that accepts TCP and
// never answers the MPA request, Connect waits for the caller's deadline,
// not the (shorter) HandshakeTimeout, and fails with
// context.DeadlineExceeded.
func TestConnectFollowsContextDeadline(t *testing.T) {
	checkLeaks(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	pd, _ := New(Config{HandshakeTimeout: 50 * time.Millisecond}).NewPD()
	ep, _ := pd.NewEndpoint(rdma.EndpointConfig{})
	defer ep.Close()
	const wait = 400 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	deadline, _ := ctx.Deadline()
	err = ep.Connect(ctx, l.Addr().String(), rdma.ConnParams{})
	// Measured against the deadline itself: a start time read after
	// WithTimeout is late by however long the goroutine was descheduled,
	// and under load that made a correct Connect look early.
	early := deadline.Sub(time.Now())
	if c := <-accepted; c != nil {
		c.Close()
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("connect: %v, want context.DeadlineExceeded", err)
	}
	if early > 0 {
		t.Fatalf("connect gave up %v before the context's deadline (%v)", early, wait)
	}
}
