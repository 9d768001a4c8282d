package iwarp

import (
	"context"
	"testing"
	"time"

	"github.com/smbdirect/smbdirect/internal/leakcheck"
	"github.com/smbdirect/smbdirect/rdma"
)

// TestDrive: a goroutine running the receive path (rdma.Driver) gets the
// peer's Send delivered on its own goroutine, is woken by Interrupt, and
// returns when the endpoint closes under it, leaving no goroutine behind.
func TestDrive(t *testing.T) {
	leakcheck.Check(t)
	var buf rdma.MR
	p := newPair(t, Config{FirstSendDelay: -1}, func(ep rdma.Endpoint, server bool) {})
	buf = mustMR(t, p.pd, make([]byte, 4096), rdma.AccessLocalWrite)
	for i := 0; i < 8; i++ {
		p.srv.PostRecv(&rdma.RecvWR{ID: uint64(i), Local: rdma.SGE{MR: buf, Offset: 256 * i, Length: 256}})
	}
	d := p.srv.(rdma.Driver)
	now, cancel := context.WithCancel(context.Background())
	cancel()
	var wc [4]rdma.Completion
	send := func(msg string) {
		src := mustMR(t, p.pd, []byte(msg), 0)
		if err := p.cli.PostSend(&rdma.SendWR{Op: rdma.OpSend, Local: rdma.SGE{MR: src, Length: len(msg)}, Unsignaled: true}); err != nil {
			t.Fatal(err)
		}
	}
	// take drives until a receive completion is there, whichever goroutine
	// delivers it: the endpoint's own goroutine runs the receive path at
	// first and hands it over after a delivery.
	take := func(what string) (drove bool) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		for {
			n, _ := p.srv.Poll(now, wc[:1])
			if n == 0 && !d.Drive(nil) {
				// Another goroutine runs the receive path: wait for its
				// delivery, after which it hands the path over.
				n, _ = p.srv.Poll(ctx, wc[:1])
				if n == 0 {
					t.Fatalf("%s: no receive completion (endpoint error %v)", what, p.srv.Err())
				}
			} else if n == 0 {
				drove = true
				continue
			}
			id := wc[0].ID
			p.srv.PostRecv(&rdma.RecvWR{ID: id, Local: rdma.SGE{MR: buf, Offset: 256 * int(id), Length: 256}})
			return drove
		}
	}
	driven := false
	for i := 0; i < 20 && !driven; i++ {
		// The message comes while the receiver waits for it.
		go func() {
			time.Sleep(5 * time.Millisecond)
			send("hello")
		}()
		driven = take("hand-over")
		if wc[0].Err != nil || wc[0].Bytes != 5 {
			t.Fatalf("completion %+v", wc[0])
		}
	}
	if !driven {
		t.Fatal("the receive path was never handed over to a waiting goroutine")
	}

	// Interrupt wakes a Drive blocked for data that never comes.
	done := make(chan bool, 1)
	go func() { done <- d.Drive(func() bool { return false }) }()
	time.Sleep(50 * time.Millisecond)
	d.Interrupt()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Interrupt did not wake Drive")
	}
	// Data still flows after the interrupt.
	send("again")
	take("after interrupt")
	if wc[0].Err != nil || wc[0].Bytes != 5 {
		t.Fatalf("completion after interrupt %+v", wc[0])
	}

	// Close under a blocked Drive.
	go func() {
		for d.Drive(func() bool { return false }) {
		}
		done <- true
	}()
	time.Sleep(50 * time.Millisecond)
	p.srv.Close()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not end Drive")
	}
	if d.Drive(nil) {
		t.Fatal("Drive on a closed endpoint ran")
	}
}
