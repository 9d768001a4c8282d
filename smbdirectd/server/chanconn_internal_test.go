//go:build linux

package server

import (
	"bytes"
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/smbdirect/smbdirect/iwarp"
	"github.com/smbdirect/smbdirect/smb2rdma"
	"github.com/smbdirect/smbdirect/smbd"
)

func smbdPair(t *testing.T) (*smbd.Conn, *smbd.Conn) {
	t.Helper()
	cfg := func() *smbd.Config { return &smbd.Config{Provider: iwarp.New(iwarp.Config{FirstSendDelay: -1})} }
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	l, err := smbd.Listen(ctx, "127.0.0.1:0", cfg())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	acc := make(chan *smbd.Conn, 1)
	go func() { c, _ := l.AcceptSMBD(ctx); acc <- c }()
	c, err := smbd.Dial(ctx, l.Addr().String(), cfg())
	if err != nil {
		t.Fatal(err)
	}
	p := <-acc
	if p == nil {
		c.Close()
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { c.Close(); p.Close() })
	return c, p
}

// The client channel's registrations reuse the memory of closed ones of
// the same connection, a WRITE's copy of the data included, and keep none
// once no registration is open: a fresh buffer (all zeros) then.
func TestChanConnReuse(t *testing.T) {
	c, _ := smbdPair(t)
	var sent, received atomic.Int64
	ch := &chanConn{Conn: c, sent: &sent, received: &received}
	reg := func(n int, peerWrite bool, data []byte) smb2rdma.Region {
		t.Helper()
		r, err := ch.Register(n, peerWrite, data)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	const n = 1 << 20
	keep := reg(100, true, nil) // one stays open throughout
	a := reg(n, true, nil)
	b := reg(n, true, nil)
	if &a.Bytes()[0] == &b.Bytes()[0] {
		t.Fatal("two open registrations share memory")
	}
	a.Bytes()[0] = 0xaa
	first := &a.Bytes()[0]
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	a.Close() // a second Close does not give the memory back twice
	data := bytes.Repeat([]byte{7}, n/2)
	w := reg(len(data), false, data)
	if &w.Bytes()[0] != first || !bytes.Equal(w.Bytes(), data) || len(w.Bytes()) != len(data) {
		t.Fatalf("a WRITE's registration after a closed one: reused %v, data equal %v", &w.Bytes()[0] == first, bytes.Equal(w.Bytes(), data))
	}
	if d := w.AppendDescriptor(nil); len(d) != smbd.BufferDescriptorLen {
		t.Fatalf("descriptor of %d bytes", len(d))
	}
	c2 := reg(n, true, nil)
	if &c2.Bytes()[0] == first {
		t.Fatal("memory of an open registration handed out again")
	}
	for _, r := range []smb2rdma.Region{w, b, c2, keep} {
		r.Close()
	}
	ch.mu.Lock()
	free, open := len(ch.free), ch.open
	ch.mu.Unlock()
	if free != 0 || open != 0 {
		t.Fatalf("idle connection keeps %d buffers, %d registrations counted open", free, open)
	}
	z := reg(n, true, nil)
	defer z.Close()
	if !bytes.Equal(z.Bytes(), make([]byte, n)) {
		t.Fatal("a registration after the connection went idle is not fresh (zero) memory")
	}
}
