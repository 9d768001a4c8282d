package smbd

// Deterministic tests on the in-memory provider of rdma/rdmatest: no
// sockets, and each runs in a testing/synctest bubble, so timers run on a
// fake clock (keepalive intervals and deadlines are exact) and a
// goroutine left behind fails the test as a deadlock. Their names start
// with TestMem; the iWARP versions elsewhere test the same over the wire.

import (
	"bytes"
	"errors"
	"os"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/smbdirect/smbdirect/rdma"
	"github.com/smbdirect/smbdirect/rdma/rdmatest"
	"github.com/smbdirect/smbdirect/smbd/internal/wire"
)

// memTest runs f in a synctest bubble with a fresh network, and checks at
// the end that everything opened on it was closed. It runs twice: with
// receives through Poll ("poll"), and through rdma.DirectReceiver
// ("direct", as smbd runs on iwarp).
func memTest(t *testing.T, f func(t *testing.T, n *rdmatest.Network)) {
	t.Helper()
	for _, mode := range []struct {
		name string
		net  func() *rdmatest.Network
	}{{"poll", rdmatest.NewNetwork}, {"direct", rdmatest.NewDirectNetwork}} {
		t.Run(mode.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				n := mode.net()
				t.Cleanup(func() {
					if err := n.Leaks(); err != nil {
						t.Error(err)
					}
				})
				f(t, n)
			})
		})
	}
}

func memConfig(n *rdmatest.Network) *Config { return &Config{Provider: n} }

// memPair is pair on the network n; cc and sc get n as their provider.
func memPair(t *testing.T, n *rdmatest.Network, cc, sc *Config) (*Conn, *Conn) {
	t.Helper()
	cc.Provider, sc.Provider = n, n
	l, err := Listen(t.Context(), "server:0", sc)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	type res struct {
		c   *Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := l.AcceptSMBD(t.Context())
		ch <- res{c, err}
	}()
	c, err := Dial(t.Context(), l.Addr().String(), cc)
	if err != nil {
		t.Fatal("dial:", err)
	}
	r := <-ch
	if r.err != nil {
		t.Fatal("accept:", r.err)
	}
	t.Cleanup(func() {
		c.Close()
		r.c.Close()
	})
	return c, r.c
}

func TestMemNegotiateAndStream(t *testing.T) {
	memTest(t, func(t *testing.T, n *rdmatest.Network) {
		c, s := memPair(t, n, &Config{}, &Config{})
		if ci := c.Info(); ci.MaxSendSize != 1364 || ci.PeerCreditTarget != 255 || ci.SendCredits < 1 {
			t.Fatalf("client %+v", ci)
		}
		for i, size := range []int{1, 1340, 1341, 65536, 1 << 20} {
			go c.Write(framed(pdu(size, byte(i))))
			b, err := readPDU(s)
			if err != nil || !bytes.Equal(b, pdu(size, byte(i))) {
				t.Fatalf("PDU %d (%d bytes): %d bytes, %v", i, size, len(b), err)
			}
		}
	})
}

// TestMemFewCredits is TestFewCredits without sockets: tiny credit
// windows, both sides writing before reading.
func TestMemFewCredits(t *testing.T) {
	memTest(t, func(t *testing.T, n *rdmatest.Network) {
		cfg := func() *Config {
			return &Config{ReceiveCreditMax: 3, SendCreditTarget: 3, InitialReceives: 2}
		}
		c, s := memPair(t, n, cfg(), cfg())
		const msgs = 300
		var wg sync.WaitGroup
		run := func(a, b *Conn) {
			defer wg.Done()
			done := make(chan error, 1)
			go func() {
				for i := range msgs {
					if err := a.WriteMessage(pdu(3000, byte(i))); err != nil {
						done <- err
						return
					}
				}
				done <- nil
			}()
			buf := make([]byte, 4000)
			for i := range msgs {
				k, err := b.ReadMessage(buf)
				if err != nil || !bytes.Equal(buf[:k], pdu(3000, byte(i))) {
					t.Errorf("message %d: %d bytes, %v", i, k, err)
					return
				}
			}
			if err := <-done; err != nil {
				t.Error(err)
			}
		}
		// In the bubble the clock moves only when every goroutine is
		// blocked: nothing here waits for time, so any time passing is a
		// stall (a keepalive would break it after 120 s and hide it).
		stall := time.AfterFunc(time.Second, func() {
			t.Errorf("credit stall:\n  client %s\n  server %s", c.creditState(), s.creditState())
		})
		defer stall.Stop()
		wg.Add(2)
		go run(c, s)
		go run(s, c)
		wg.Wait()
	})
}

// TestMemWriteDeadlineMidMessage: a write deadline in the middle of a
// fragmented message ends the connection, one before a message does not;
// on the fake clock the deadline is exact.
func TestMemWriteDeadlineMidMessage(t *testing.T) {
	memTest(t, func(t *testing.T, n *rdmatest.Network) {
		c, s := memPair(t, n, &Config{}, &Config{InitialReceives: 2, ReceiveCreditMax: 2})
		start := time.Now()
		c.SetWriteDeadline(start.Add(300 * time.Millisecond))
		if err := c.WriteMessage(pdu(100_000, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("write: %v", err)
		}
		if d := time.Since(start); d != 300*time.Millisecond {
			t.Fatalf("deadline honoured after %v", d)
		}
		c.SetWriteDeadline(time.Time{})
		if err := c.WriteMessage([]byte("x")); err == nil {
			t.Fatal("the connection went on after a message was cut short")
		}
		var rerr error
		for rerr == nil {
			_, rerr = s.ReadMessage(make([]byte, 200_000))
		}
		t.Logf("peer: %v", rerr)

		c2, s2 := memPair(t, n, &Config{}, &Config{})
		c2.SetWriteDeadline(time.Now().Add(-time.Second))
		if err := c2.WriteMessage([]byte("late")); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("expired deadline: %v", err)
		}
		c2.SetWriteDeadline(time.Time{})
		if err := c2.WriteMessage([]byte("on time")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 64)
		if k, err := s2.ReadMessage(buf); err != nil || string(buf[:k]) != "on time" {
			t.Fatal(string(buf[:k]), err)
		}
	})
}

// TestMemKeepalive: two idle connections keep each other alive for many
// intervals; the keepalives are answered.
func TestMemKeepalive(t *testing.T) {
	memTest(t, func(t *testing.T, n *rdmatest.Network) {
		const iv = 100 * time.Millisecond
		c, s := memPair(t, n, &Config{KeepaliveInterval: iv}, &Config{KeepaliveInterval: iv})
		time.Sleep(50 * iv)
		synctest.Wait()
		if err := c.WriteMessage([]byte("still here")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 64)
		if k, err := s.ReadMessage(buf); err != nil || string(buf[:k]) != "still here" {
			t.Fatalf("%q %v", buf[:k], err)
		}
	})
}

// TestMemKeepaliveDetectsSilentPeer: a peer that negotiates and then never
// answers is declared dead two keepalive intervals later: one of silence
// before the keepalive, one waiting for its answer.
func TestMemKeepaliveDetectsSilentPeer(t *testing.T) {
	memTest(t, func(t *testing.T, n *rdmatest.Network) {
		const iv = 100 * time.Millisecond
		pd, _ := n.NewPD()
		rl, _ := pd.Listen(t.Context(), "silent:0", rdma.ListenConfig{})
		defer pd.Close()
		defer rl.Close()
		p, err := rdmatest.NewPeer(n, rdmatest.PeerConfig{Receives: 32, ReceiveSize: 2048})
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		go func() {
			req, err := rl.Accept(t.Context())
			if err != nil {
				return
			}
			// The peer accepts on its own PD's endpoint: a listener of
			// another PD hands it the request.
			if err := p.Accept(t.Context(), req, rdma.ConnParams{}); err != nil {
				return
			}
			p.Recv(t.Context()) // the negotiate request
			resp := wire.NegotiateResponse{MinVersion: 0x100, MaxVersion: 0x100, NegotiatedVersion: 0x100, CreditsRequested: 255,
				CreditsGranted: 10, MaxReadWriteSize: 1 << 20, PreferredSendSize: 1364, MaxReceiveSize: 1364, MaxFragmentedSize: 1 << 20}
			p.Send(t.Context(), wire.AppendNegotiateResponse(nil, &resp))
		}()
		c, err := Dial(t.Context(), rl.Addr().String(), &Config{Provider: n, KeepaliveInterval: iv})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		start := time.Now()
		_, err = c.Read(make([]byte, 10))
		if !errors.Is(err, ErrKeepalive) {
			t.Fatalf("read: %v, want ErrKeepalive", err)
		}
		if d := time.Since(start); d != 2*iv {
			t.Fatalf("dead peer detected after %v, want %v", d, 2*iv)
		}
		// A keepalive went out, asking for a response (after a message
		// granting credits).
		var kept bool
		for !kept {
			b, err := p.Recv(t.Context())
			if err != nil {
				t.Fatal("no keepalive:", err)
			}
			h, payload, err := wire.ParseDataTransfer(b)
			if err != nil || len(payload) != 0 {
				t.Fatalf("%+v %q %v", h, payload, err)
			}
			kept = h.Flags&wire.FlagResponseRequested != 0
		}
	})
}
