package smbd

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/smbdirect/smbdirect/internal/leakcheck"
)

// warmUp exchanges messages until c's reader runs the receive path itself
// (the provider's goroutine hands it over after a delivery).
func warmUp(t *testing.T, c, s *Conn) {
	t.Helper()
	buf := make([]byte, 64)
	for i := 0; i < 20; i++ {
		if err := s.WriteMessage([]byte("warm-up")); err != nil {
			t.Fatal(err)
		}
		if _, err := c.ReadMessage(buf); err != nil {
			t.Fatal(err)
		}
	}
}

// blockedDriving waits until a reader (readSkippingNudges) of c is
// blocked in the provider's receive path (c.drivers) rather than on
// c.cond. A reader that came after an idle spell waits on c.cond until the
// provider's goroutine delivers something: s nudges it.
func blockedDriving(t *testing.T, c, s *Conn) {
	t.Helper()
	for i := 0; ; i++ {
		time.Sleep(time.Millisecond)
		c.mu.Lock()
		n := c.drivers
		c.mu.Unlock()
		if n == 1 {
			return
		}
		if i == 5000 {
			t.Fatal("the reader never ran the receive path itself")
		}
		if i%50 == 49 {
			s.WriteMessage([]byte("nudge"))
		}
	}
}

// readSkippingNudges reads the next message that is not a nudge.
func readSkippingNudges(c *Conn, buf []byte) (int, error) {
	for {
		n, err := c.ReadMessage(buf)
		if err != nil || string(buf[:n]) != "nudge" {
			return n, err
		}
	}
}

// TestDrivingReaderWakes: a reader blocked while running the receive path
// on its own goroutine still honours deadlines set before and during the
// wait, receives later messages (an interrupt leaves no deadline behind on
// the socket), and returns when the connection is closed under it.
func TestDrivingReaderWakes(t *testing.T) {
	leakcheck.Check(t)
	c, s := pair(t, testConfig(), testConfig())
	defer s.Close()
	warmUp(t, c, s)
	buf := make([]byte, 64)

	// A deadline that passes while the reader drives.
	c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	t0 := time.Now()
	if _, err := c.ReadMessage(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past deadline: %v", err)
	}
	if d := time.Since(t0); d > 2*time.Second {
		t.Fatalf("deadline of 100ms noticed after %v", d)
	}

	// A deadline moved into the past by another goroutine.
	c.SetReadDeadline(time.Time{})
	errc := make(chan error, 1)
	go func() {
		_, err := readSkippingNudges(c, buf)
		errc <- err
	}()
	blockedDriving(t, c, s)
	c.SetReadDeadline(time.Now().Add(-time.Second))
	select {
	case err := <-errc:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("read with deadline moved to the past: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("moving the deadline did not wake the reader")
	}

	// Messages still arrive afterwards.
	c.SetReadDeadline(time.Time{})
	go func() {
		time.Sleep(20 * time.Millisecond)
		s.WriteMessage([]byte("after the interrupts"))
	}()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := readSkippingNudges(c, buf)
	if err != nil || string(buf[:n]) != "after the interrupts" {
		t.Fatalf("read after interrupts: %q, %v", buf[:n], err)
	}
	c.SetReadDeadline(time.Time{})

	// Close under a driving reader.
	go func() {
		_, err := readSkippingNudges(c, buf)
		errc <- err
	}()
	blockedDriving(t, c, s)
	c.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("read on a closed connection: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not wake the reader")
	}
}

// TestIdleReaderKeepsConnectionServed: after the reader stopped reading,
// the provider's goroutine takes the receive path up again, so the peer's
// messages are still taken in (and keepalives answered).
func TestIdleReaderKeepsConnectionServed(t *testing.T) {
	leakcheck.Check(t)
	cc := testConfig()
	cc.KeepaliveInterval = 100 * time.Millisecond
	c, s := pair(t, cc, testConfig())
	defer s.Close()
	defer c.Close()
	warmUp(t, c, s)
	// Nobody reads c now. s sends; the messages must be received (queued)
	// without a reader.
	for i := 0; i < 5; i++ {
		if err := s.WriteMessage([]byte("unread")); err != nil {
			t.Fatal(err)
		}
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		c.mu.Lock()
		n := len(c.queue) - c.qhead
		c.mu.Unlock()
		if n == 5 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of 5 messages taken in without a reader", n)
		}
	}
	// c's keepalives go out and are answered while nobody reads c.
	time.Sleep(500 * time.Millisecond)
	if err := c.WriteMessage([]byte("still alive")); err != nil {
		t.Fatalf("connection after idle keepalive intervals: %v", err)
	}
}

// TestDriveStress: several connections, both directions at once, readers
// that pause now and then (so the provider's goroutine takes the receive
// path back and hands it over again) and random sizes and credit windows.
// Every PDU arrives intact and no write waits for long: a lost wake-up of
// a goroutine driving the receive path would show as a stall here.
func TestDriveStress(t *testing.T) {
	leakcheck.Check(t)
	const pairs, perDir = 3, 60
	var wg sync.WaitGroup
	for p := 0; p < pairs; p++ {
		cfg := func() *Config {
			c := testConfig()
			if p == 1 {
				c.ReceiveCreditMax, c.SendCreditTarget, c.InitialReceives = 4, 4, 2
			}
			if p == 2 {
				c.MaxSendSize, c.MaxReceiveSize = 65536, 65536
			}
			return c
		}
		c, s := pair(t, cfg(), cfg())
		rng := rand.New(rand.NewPCG(uint64(p), 7))
		sizes := make([]int, perDir)
		for i := range sizes {
			sizes[i] = 1 + rng.IntN(150000)
		}
		dir := func(name string, w, r *Conn) {
			defer wg.Done()
			go func() {
				for i, n := range sizes {
					w.SetWriteDeadline(time.Now().Add(10 * time.Second))
					if _, err := w.Write(framed(pdu(n, byte(i)))); err != nil {
						t.Errorf("%s write %d: %v (%s)", name, i, err, w.creditState())
						return
					}
				}
			}()
			for i, n := range sizes {
				if i%7 == 3 {
					time.Sleep(time.Duration(i%3) * time.Millisecond)
				}
				r.SetReadDeadline(time.Now().Add(10 * time.Second))
				b, err := readPDU(r)
				if err != nil {
					t.Errorf("%s read %d: %v (reader %s / writer %s)", name, i, err, r.creditState(), w.creditState())
					return
				}
				if !bytes.Equal(b, pdu(n, byte(i))) {
					t.Errorf("%s: PDU %d (%d bytes) differs", name, i, n)
				}
			}
		}
		wg.Add(2)
		go dir(fmt.Sprintf("pair %d c->s", p), c, s)
		go dir(fmt.Sprintf("pair %d s->c", p), s, c)
	}
	wg.Wait()
}

// TestDriveFromLockedThread: a reader locked to its OS thread (as a cgo
// callback is) runs the receive path like any other goroutine. (An earlier
// version ran it as an iter.Pull coroutine, which the runtime refuses to
// switch to from a locked thread, with a fatal error.)
func TestDriveFromLockedThread(t *testing.T) {
	leakcheck.Check(t)
	c, s := pair(t, testConfig(), testConfig())
	defer s.Close()
	defer c.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		buf := make([]byte, 64)
		for i := 0; i < 50; i++ {
			n, err := c.ReadMessage(buf)
			if err != nil || string(buf[:n]) != fmt.Sprint(i) {
				errc <- fmt.Errorf("message %d: %q, %v", i, buf[:n], err)
				return
			}
			if err := c.WriteMessage(buf[:n]); err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	buf := make([]byte, 64)
	for i := 0; i < 50; i++ {
		if err := s.WriteMessage([]byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
		if _, err := s.ReadMessage(buf); err != nil {
			t.Fatal(err)
		}
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}
