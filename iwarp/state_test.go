package iwarp

import (
	"errors"
	"testing"

	"github.com/smbdirect/smbdirect/rdma"
)

// TestEpLife walks the endpoint's transitions, including the ones that
// must refuse: a connection finished after Close must not bring the
// endpoint back (start used to set connected without looking).
func TestEpLife(t *testing.T) {
	var l epLife
	if err := l.postable(nil); !errors.Is(err, rdma.ErrNotConnected) {
		t.Fatalf("idle postable: %v", err)
	}
	if err := l.beginConnect(); err != nil || l.state != stConnecting {
		t.Fatalf("beginConnect: %v %v", err, l.state)
	}
	if err := l.beginConnect(); !errors.Is(err, rdma.ErrInvalidArgument) {
		t.Fatalf("second beginConnect: %v", err)
	}
	l.connectFailed()
	if l.state != stIdle || l.beginConnect() != nil {
		t.Fatalf("retry after a failed connect: %v", l.state)
	}
	if !l.establish(true, false) || l.state != stConnected || !l.started || !l.txHold {
		t.Fatalf("establish as responder: %+v", l)
	}
	if l.postable(nil) != nil {
		t.Fatal("connected, not postable")
	}
	if !l.heard() || l.heard() || l.txHold {
		t.Fatal("heard ends the hold once")
	}
	if !l.takeTx() || l.takeTx() {
		t.Fatal("takeTx is exclusive")
	}
	l.releaseTx()
	if !l.takeTx() {
		t.Fatal("takeTx after releaseTx")
	}
	if !l.disconnect() || !l.closing || !errors.Is(l.postable(nil), rdma.ErrNotConnected) {
		t.Fatalf("disconnect: %+v", l)
	}
	cause := errors.New("cause")
	if !l.end() || l.end() || !errors.Is(l.postable(cause), cause) || l.disconnect() {
		t.Fatalf("end: %+v", l)
	}
	l.close()
	if l.end() || !errors.Is(l.postable(nil), rdma.ErrClosed) {
		t.Fatalf("closed: %+v", l)
	}

	// Closed while connecting: the handshake's end does not revive it.
	var c epLife
	c.beginConnect()
	c.end()
	if c.establish(false, true) || c.state != stEnding || c.started {
		t.Fatalf("establish after end: %+v", c)
	}
	c.connectFailed()
	if c.state != stEnding {
		t.Fatalf("connectFailed after end: %+v", c)
	}
}
