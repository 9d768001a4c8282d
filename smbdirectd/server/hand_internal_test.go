//go:build linux

package server

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/smbdirect/smbdirect/iwarp"
	"github.com/smbdirect/smbdirect/smbd"
)

// A connection made for a client that is gone by the time it is handed
// over (the reply carrying its fd fails) is closed, and Close does not
// wait for it: it was never started, so no pump releases its count.
func TestHandToGoneClient(t *testing.T) {
	cfg := func() *smbd.Config { return &smbd.Config{Provider: iwarp.New(iwarp.Config{FirstSendDelay: -1})} }
	s, err := Listen(Config{Socket: filepath.Join(t.TempDir(), "d.sock"), SMBD: cfg()})
	if err != nil {
		t.Fatal(err)
	}
	l, err := smbd.Listen(t.Context(), "127.0.0.1:0", cfg())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	acc := make(chan *smbd.Conn, 1)
	go func() { c, _ := l.AcceptSMBD(context.Background()); acc <- c }()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	sc, err := smbd.Dial(ctx, l.Addr().String(), cfg())
	if err != nil {
		t.Fatal(err)
	}
	peer := <-acc
	if peer == nil {
		t.Fatal("the peer accepted nothing")
	}
	defer peer.Close()

	// The client's end of its control socket is closed: the reply fails.
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	unix.Close(fds[1])
	f := os.NewFile(uintptr(fds[0]), "control")
	nc, err := net.FileConn(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	c := newClient(s, nc.(*net.UnixConn), &unix.Ucred{})
	c.reserveConn()
	c.hand(1, 0, sc, noChannel)
	c.release()

	if st := s.Stats(); st.Conns != 0 {
		t.Fatalf("%d connections after the hand-over failed, want 0", st.Conns)
	}
	peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := peer.ReadMessage(make([]byte, 64)); err == nil {
		t.Fatal("the peer read a message, want the connection closed")
	}
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close still waiting 10 s later for a connection that was never handed over")
	}
}
