package smbd

// Hostile SMB Direct peers: a raw endpoint (rdmatest.Peer) that speaks
// RDMA correctly but sends whatever MS-SMBD bytes a case wants. Each case
// must end in a clean disconnect and a clear error, with no goroutine
// left behind and memory bounded. Every case runs twice (hostileRun): on
// the in-memory provider in a synctest bubble ("mem": deterministic, fake
// clock, a leftover goroutine fails as a deadlock), and on iWARP over
// loopback ("iwarp": the real wire, where a Send without a posted receive
// is a Terminate).

import (
	"context"
	"encoding/binary"
	"errors"
	"os"
	"testing"
	"testing/synctest"
	"time"

	"github.com/smbdirect/smbdirect/internal/leakcheck"
	"github.com/smbdirect/smbdirect/iwarp"
	"github.com/smbdirect/smbdirect/rdma"
	"github.com/smbdirect/smbdirect/rdma/rdmatest"
	"github.com/smbdirect/smbdirect/smbd/internal/wire"
)

func checkLeaks(t *testing.T) { leakcheck.Check(t) }

// hostEnv is the transport a hostile case runs on.
type hostEnv struct {
	prov rdma.Provider // for the raw peer, and our Conn unless cfg says otherwise
	addr string        // where listeners listen
	cfg  func() *Config
}

// hostileRun runs f on the in-memory provider, then on iWARP.
func hostileRun(t *testing.T, f func(t *testing.T, env *hostEnv)) {
	t.Run("mem", func(t *testing.T) { memHostile(t, f) })
	t.Run("iwarp", func(t *testing.T) { iwarpHostile(t, f) })
}

func memHostile(t *testing.T, f func(t *testing.T, env *hostEnv)) {
	synctest.Test(t, func(t *testing.T) {
		n := rdmatest.NewDirectNetwork() // receives reach smbd as on iwarp
		t.Cleanup(func() {
			if err := n.Leaks(); err != nil {
				t.Error(err)
			}
		})
		f(t, &hostEnv{prov: n, addr: "server:0", cfg: func() *Config { return &Config{Provider: n} }})
	})
}

func iwarpHostile(t *testing.T, f func(t *testing.T, env *hostEnv)) {
	checkLeaks(t)
	f(t, &hostEnv{prov: iwarp.New(iwarp.Config{FirstSendDelay: -1}), addr: "127.0.0.1:0", cfg: testConfig})
}

// rawPeer is a raw endpoint driven byte by byte.
type rawPeer struct {
	t *testing.T
	*rdmatest.Peer
}

func newRaw(t *testing.T, env *hostEnv) *rawPeer {
	t.Helper()
	p, err := rdmatest.NewPeer(env.prov, rdmatest.PeerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Error("raw peer:", err)
		}
	})
	return &rawPeer{t: t, Peer: p}
}

// dial connects to addr and starts the completion loop.
func (p *rawPeer) dial(addr string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.Connect(ctx, addr, rdma.ConnParams{ORD: 16, IRD: 16}); err != nil {
		p.t.Fatal(err)
	}
}

// send sends b as one message. A send the connection ends under may fail;
// that is what several cases provoke, so it is not an error here.
func (p *rawPeer) send(b []byte) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	p.Send(ctx, b)
}

// recv waits for the next message.
func (p *rawPeer) recv() ([]byte, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	b, err := p.Recv(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		p.t.Fatal("raw peer: nothing received in 5 s")
	}
	return b, err == nil
}

// disconnected waits for the peer to end the connection.
func (p *rawPeer) disconnected() bool {
	select {
	case <-p.Done():
		return true
	case <-time.After(5 * time.Second):
		return false
	}
}

func dt(h wire.DataTransfer, payload []byte) []byte {
	if h.CreditsRequested == 0 {
		h.CreditsRequested = 255
	}
	h.DataLength = uint32(len(payload))
	return append(wire.AppendDataTransfer(nil, &h), payload...)
}

// negReq is the raw peer's negotiate request. It announces 8192-byte
// sends, the most our side receives, since tests send messages that large.
func negReq(v uint16) []byte {
	return negReqSend(v, 8192)
}

func negReqSend(v uint16, preferredSend uint32) []byte {
	return wire.AppendNegotiateRequest(nil, &wire.NegotiateRequest{MinVersion: v, MaxVersion: v,
		CreditsRequested: 255, PreferredSendSize: preferredSend, MaxReceiveSize: 8192, MaxFragmentedSize: 1 << 20})
}

// serverCase starts our Listener, connects a raw client and returns both,
// with the accepted Conn once negotiation succeeds (nil if it fails).
func hostileListener(t *testing.T, env *hostEnv, cfg *Config) (*Listener, *rawPeer) {
	t.Helper()
	if cfg == nil {
		cfg = env.cfg()
	}
	l, err := Listen(t.Context(), env.addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	p := newRaw(t, env)
	p.dial(l.Addr().String())
	return l, p
}

func noConn(t *testing.T, l *Listener) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	if c, err := l.AcceptSMBD(ctx); err == nil {
		c.Close()
		t.Fatal("a connection was accepted")
	}
}

// Negotiation refused by our listener: the raw client is disconnected
// and no connection is handed to Accept.
func TestHostileNegotiateRequest(t *testing.T) {
	for _, tc := range []struct {
		name   string
		msg    []byte
		status uint32 // a Negotiate Response with this status comes first
	}{
		{"wrong-version", negReq(0x0200), wire.StatusNotSupported},
		{"data-transfer-first", dt(wire.DataTransfer{CreditsGranted: 10}, []byte("hello")), 0},
		{"short", []byte{1, 0, 1}, 0},
		{"zero-credits-requested", func() []byte { b := negReq(0x0100); b[6], b[7] = 0, 0; return b }(), 0},
		{"tiny-max-receive", func() []byte { b := negReq(0x0100); binary.LittleEndian.PutUint32(b[12:], 127); return b }(), 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hostileRun(t, func(t *testing.T, env *hostEnv) {
				l, p := hostileListener(t, env, nil)
				p.send(tc.msg)
				if tc.status != 0 {
					b, ok := p.recv()
					r, err := wire.ParseNegotiateResponse(b)
					if !ok || err != nil || r.Status != tc.status {
						t.Fatalf("response %+v, %v", r, err)
					}
				}
				if !p.disconnected() {
					t.Fatal("raw client still connected")
				}
				noConn(t, l)
			})
		})
	}
}

// negotiated returns our accepted Conn and the raw client after a valid
// negotiation; the raw client then holds the response's credits.
func negotiated(t *testing.T, env *hostEnv, cfg *Config) (*Conn, *rawPeer, wire.NegotiateResponse) {
	t.Helper()
	return negotiatedReq(t, env, cfg, negReq(0x0100))
}

func negotiatedReq(t *testing.T, env *hostEnv, cfg *Config, req []byte) (*Conn, *rawPeer, wire.NegotiateResponse) {
	t.Helper()
	l, p := hostileListener(t, env, cfg)
	p.send(req)
	b, _ := p.recv()
	r, err := wire.ParseNegotiateResponse(b)
	if err != nil || r.Status != 0 {
		t.Fatalf("negotiate: %+v %v", r, err)
	}
	c, err := l.AcceptSMBD(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, p, r
}

// expectFailure reads from c until the connection ends and checks the
// error, then that the raw peer was disconnected.
func expectFailure(t *testing.T, c *Conn, p *rawPeer, want error) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var err error
	buf := make([]byte, 2<<20)
	for err == nil {
		_, err = c.ReadMessage(buf)
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal("connection not ended")
	}
	if want != nil && !errors.Is(err, want) {
		t.Fatalf("got %v, want %v", err, want)
	}
	t.Logf("ended with: %v", err)
	if !p.disconnected() {
		t.Fatal("raw peer still connected")
	}
}

func TestHostileDataTransfer(t *testing.T) {
	header := func(h wire.DataTransfer, off, n uint32, payload int) []byte {
		h.CreditsRequested = 255
		b := wire.AppendDataTransfer(nil, &h)
		b = append(b, make([]byte, 24-len(b))...)
		binary.LittleEndian.PutUint32(b[12:], off)
		binary.LittleEndian.PutUint32(b[16:], n)
		return append(b, make([]byte, payload)...)
	}
	for _, tc := range []struct {
		name string
		msgs [][]byte
		want error
	}{
		{"data-offset-past-end", [][]byte{header(wire.DataTransfer{}, 24, 100, 50)}, ErrProtocol},
		{"data-offset-in-header", [][]byte{header(wire.DataTransfer{}, 8, 16, 0)}, ErrProtocol},
		{"data-offset-unaligned", [][]byte{header(wire.DataTransfer{}, 25, 1, 8)}, ErrProtocol},
		{"data-length-overflow", [][]byte{header(wire.DataTransfer{}, 24, 0xffffffff, 8)}, ErrProtocol},
		{"zero-credits-requested", [][]byte{func() []byte { b := dt(wire.DataTransfer{}, []byte("x")); b[0], b[1] = 0, 0; return b }()}, ErrProtocol},
		{"remaining-lies", [][]byte{
			dt(wire.DataTransfer{RemainingDataLength: 100}, make([]byte, 50)),
			dt(wire.DataTransfer{RemainingDataLength: 10}, make([]byte, 50)),
		}, ErrProtocol},
		{"remaining-grows", [][]byte{
			dt(wire.DataTransfer{RemainingDataLength: 100}, make([]byte, 50)),
			dt(wire.DataTransfer{RemainingDataLength: 500}, make([]byte, 50)),
		}, ErrProtocol},
		{"empty-in-the-middle", [][]byte{
			dt(wire.DataTransfer{RemainingDataLength: 100}, make([]byte, 50)),
			dt(wire.DataTransfer{RemainingDataLength: 50}, nil),
		}, ErrProtocol},
		{"beyond-max-fragmented", [][]byte{dt(wire.DataTransfer{RemainingDataLength: 1 << 20}, make([]byte, 100))}, ErrMessageTooLarge},
		{"oversize-message", [][]byte{dt(wire.DataTransfer{}, make([]byte, 9000))}, nil},
		{"credits-past-limit", [][]byte{
			dt(wire.DataTransfer{CreditsGranted: 0xffff}, nil),
			dt(wire.DataTransfer{CreditsGranted: 0xffff}, nil),
		}, ErrProtocol},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hostileRun(t, func(t *testing.T, env *hostEnv) {
				c, p, _ := negotiated(t, env, nil)
				for _, m := range tc.msgs {
					p.send(m)
				}
				expectFailure(t, c, p, tc.want)
			})
		})
	}
}

// A peer that sends more messages than it was granted credits for.
func TestHostileWithoutCredits(t *testing.T) {
	hostileRun(t, func(t *testing.T, env *hostEnv) {
		cfg := env.cfg()
		cfg.InitialReceives = 4
		c, p, r := negotiated(t, env, cfg)
		for range int(r.CreditsGranted) + 8 {
			p.send(dt(wire.DataTransfer{}, []byte("x")))
		}
		expectFailure(t, c, p, nil)
	})
}

// A peer that never grants credits: our writes wait, a write deadline
// ends the wait, and the connection stays usable.
func TestHostileNeverGrants(t *testing.T) {
	hostileRun(t, testHostileNeverGrants)
}

func testHostileNeverGrants(t *testing.T, env *hostEnv) {
	c, p, _ := negotiated(t, env, nil)
	c.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
	start := time.Now()
	err := c.WriteMessage([]byte("hello"))
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("write without credits: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("deadline honoured after %v", d)
	}
	// One credit is kept for a message that grants credits: with a single
	// credit and nothing to grant, data still does not go.
	p.send(dt(wire.DataTransfer{CreditsGranted: 2}, nil))
	c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if err := c.WriteMessage([]byte("hello")); err != nil {
		t.Fatalf("write after a grant: %v", err)
	}
	b, _ := p.recv()
	h, payload, err := wire.ParseDataTransfer(b)
	if err != nil || string(payload) != "hello" {
		t.Fatalf("%+v %q %v", h, payload, err)
	}
}

// A peer floods data we do not read: receive buffers are not reposted,
// so it runs out of credits; memory stays bounded by MaxQueuedBytes, and
// when it sends anyway the connection ends.
func TestHostileFlood(t *testing.T) {
	hostileRun(t, testHostileFlood)
}

func testHostileFlood(t *testing.T, env *hostEnv) {
	cfg := env.cfg()
	cfg.MaxQueuedBytes = 64 << 10
	c, p, r := negotiated(t, env, cfg)
	credits := int(r.CreditsGranted)
	// The peer grants credits too, one per receive buffer it has (the
	// raw peer keeps 64 posted): without them our Conn could not send
	// the messages that grant it credits, and the flood would stop at
	// the negotiated few.
	grant := 32
	payload := make([]byte, 8192-24)
	sent := 0
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		// Collect grants the way a well-behaved peer would.
		for drained := false; !drained; {
			select {
			case b, ok := <-p.Messages():
				if !ok {
					t.Fatal("disconnected while behaving")
				}
				h, _, err := wire.ParseDataTransfer(b)
				if err != nil {
					t.Fatal(err)
				}
				credits += int(h.CreditsGranted)
				grant++ // its buffer is reposted
			default:
				drained = true
			}
		}
		if credits == 0 {
			time.Sleep(5 * time.Millisecond)
			continue
		}
		p.send(dt(wire.DataTransfer{CreditsGranted: uint16(grant)}, payload))
		grant = 0
		credits--
		sent++
	}
	c.mu.Lock()
	queued, bufs := c.queued, len(c.recvMR)
	c.mu.Unlock()
	t.Logf("flood: %d messages accepted, %d bytes queued, %d receive buffers", sent, queued, bufs)
	// Unread data lives in the receive buffers themselves, and every
	// posted receive counts as a full buffer against MaxQueuedBytes: what
	// is queued is at most MaxQueuedBytes, and the buffers are those that
	// fit in it (8 of 8 KiB), or the first ones and the negotiate
	// message's.
	maxBufs := max(c.cfg.MaxQueuedBytes/c.cfg.MaxReceiveSize, c.cfg.InitialReceives+1)
	if queued > c.cfg.MaxQueuedBytes || bufs > maxBufs {
		t.Fatalf("flood not bounded: %d bytes queued (at most %d), %d receive buffers (at most %d), %d messages accepted",
			queued, c.cfg.MaxQueuedBytes, bufs, maxBufs, sent)
	}
	// The flood did reach the limit: all the buffers that fit were filled.
	if want := c.cfg.MaxQueuedBytes / c.cfg.MaxReceiveSize * len(payload); queued != want {
		t.Fatalf("flood stopped early: %d bytes queued, want %d", queued, want)
	}
	// Now it sends without credits.
	for i := 0; i < 300 && p.Endpoint().Err() == nil; i++ {
		p.send(dt(wire.DataTransfer{}, payload))
	}
	expectFailure(t, c, p, nil)
}

// Our Dial against hostile responders.
func TestHostileNegotiateResponse(t *testing.T) {
	good := wire.NegotiateResponse{MinVersion: 0x100, MaxVersion: 0x100, NegotiatedVersion: 0x100,
		CreditsRequested: 255, CreditsGranted: 255, MaxReadWriteSize: 1 << 20, PreferredSendSize: 1364,
		MaxReceiveSize: 8192, MaxFragmentedSize: 1 << 20}
	for _, tc := range []struct {
		name string
		mod  func(*wire.NegotiateResponse) []byte
	}{
		{"not-supported", func(r *wire.NegotiateResponse) []byte {
			*r = wire.NegotiateResponse{MinVersion: 0x100, MaxVersion: 0x100, Status: wire.StatusNotSupported}
			return nil
		}},
		{"wrong-version", func(r *wire.NegotiateResponse) []byte { r.NegotiatedVersion = 0x200; return nil }},
		{"no-credits", func(r *wire.NegotiateResponse) []byte { r.CreditsGranted = 0; return nil }},
		{"tiny-receive", func(r *wire.NegotiateResponse) []byte { r.MaxReceiveSize = 100; return nil }},
		{"short", func(r *wire.NegotiateResponse) []byte { return []byte{0, 1, 0, 1} }},
		{"silent", func(r *wire.NegotiateResponse) []byte { return []byte{} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hostileRun(t, func(t *testing.T, env *hostEnv) {
				p := newRaw(t, env)
				// The listener is the raw peer's: an endpoint accepts
				// requests of its own PD.
				rl, err := p.PD().Listen(t.Context(), env.addr, rdma.ListenConfig{})
				if err != nil {
					t.Fatal(err)
				}
				defer rl.Close()
				done := make(chan struct{})
				go func() {
					defer close(done)
					req, err := rl.Accept(t.Context())
					if err != nil {
						return
					}
					if err := p.Accept(t.Context(), req, rdma.ConnParams{ORD: 16, IRD: 16}); err != nil {
						return
					}
					if _, err := p.Recv(t.Context()); err != nil { // the request
						return
					}
					r := good
					msg := tc.mod(&r)
					if msg == nil {
						msg = wire.AppendNegotiateResponse(nil, &r)
					}
					if len(msg) > 0 {
						p.send(msg)
					}
					p.disconnected()
				}()
				cfg := env.cfg()
				// The timer starts before the TCP connect and the MPA
				// exchange (MS-SMBD: from the connection's start), which
				// on a loaded machine took more than 500 ms; only the
				// silent peer waits it out.
				cfg.NegotiateTimeout = 5 * time.Second
				c, err := Dial(t.Context(), rl.Addr().String(), cfg)
				if err == nil {
					c.Close()
					t.Fatal("negotiated with a hostile responder")
				}
				if !errors.Is(err, ErrNegotiate) {
					t.Fatalf("got %v, want ErrNegotiate", err)
				}
				t.Logf("%v", err)
				<-done
			})
		})
	}
}

// A peer that announced 1364-byte sends gets receive buffers of 1364
// bytes once negotiated, and a longer message ends the connection: with
// ErrProtocol when it lands in the one larger buffer, the negotiate
// message's (reposted first), with the provider's length error in the
// others.
func TestHostileOversizeMessage(t *testing.T) {
	for _, tc := range []struct {
		name string
		good int // whole messages sent before the long one
		want error
	}{
		{"negotiate-buffer", 0, ErrProtocol},
		{"sized-buffer", 1, rdma.ErrLocalLength},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hostileRun(t, func(t *testing.T, env *hostEnv) {
				c, p, r := negotiatedReq(t, env, nil, negReqSend(0x0100, 1364))
				if r.CreditsGranted < 2 {
					t.Fatalf("%d credits granted", r.CreditsGranted)
				}
				c.mu.Lock()
				size, bufSize := c.recvSize, c.cr.bufSize
				c.mu.Unlock()
				if size != 1364 || bufSize != 1364 {
					t.Fatalf("receive size %d, budget counts %d; want 1364", size, bufSize)
				}
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				buf := make([]byte, 2048)
				for range tc.good {
					p.send(dt(wire.DataTransfer{}, make([]byte, 1364-wire.DataTransferHeaderLen)))
					if n, err := c.ReadMessage(buf); err != nil || n != 1364-wire.DataTransferHeaderLen {
						t.Fatalf("read %d, %v", n, err)
					}
				}
				p.send(dt(wire.DataTransfer{}, make([]byte, 1365-wire.DataTransferHeaderLen)))
				expectFailure(t, c, p, tc.want)
			})
		})
	}
}
