package smbd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/smbdirect/smbdirect/rdma"
	"github.com/smbdirect/smbdirect/smbd/internal/wire"
)

// Dial connects to an SMB Direct server at addr (host:port; 5445 is the
// iWARP port) and negotiates.
func Dial(ctx context.Context, addr string, cfg *Config) (*Conn, error) {
	if cfg == nil {
		cfg = &Config{}
	}
	rc, err := cfg.resolve(true)
	if err != nil {
		return nil, err
	}
	pd, err := rc.Provider.NewPD()
	if err != nil {
		return nil, err
	}
	c, err := newConn(rc, pd, true)
	if err != nil {
		pd.Close()
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, rc.NegotiateTimeout)
	defer cancel()
	if err := c.ep.Connect(ctx, addr, rdma.ConnParams{ORD: 16, IRD: 16}); err != nil {
		c.abort()
		return nil, fmt.Errorf("smbd: connecting to %s: %w", addr, err)
	}
	req := wire.NegotiateRequest{MinVersion: wire.ProtocolVersion, MaxVersion: wire.ProtocolVersion,
		CreditsRequested: uint16(rc.SendCreditTarget), PreferredSendSize: uint32(rc.MaxSendSize),
		MaxReceiveSize: uint32(rc.MaxReceiveSize), MaxFragmentedSize: uint32(rc.MaxFragmentedSize)}
	c.mu.Lock()
	c.maxSend = rc.MaxSendSize
	err = c.postRawLocked(wire.AppendNegotiateRequest(nil, &req))
	c.mu.Unlock()
	if err != nil {
		c.abort()
		return nil, err
	}
	msg, slot, err := c.negotiateRecv(ctx)
	if err != nil {
		c.abort()
		return nil, fmt.Errorf("%w: waiting for the response from %s: %w", ErrNegotiate, addr, err)
	}
	resp, err := wire.ParseNegotiateResponse(msg)
	if err == nil {
		err = resp.Validate(uint32(rc.MaxReceiveSize))
	}
	if err != nil {
		c.abort()
		return nil, fmt.Errorf("%w: response from %s: %w", ErrNegotiate, addr, err)
	}
	c.mu.Lock()
	c.freeRecv = append(c.freeRecv, slot)
	c.maxSend = min(rc.MaxSendSize, int(resp.MaxReceiveSize))
	c.peerMaxRecv = int(resp.MaxReceiveSize)
	c.sizeRecvLocked(resp.PreferredSendSize)
	c.maxFragSend = int(resp.MaxFragmentedSize)
	c.maxRW = min(rc.MaxReadWriteSize, int(resp.MaxReadWriteSize))
	c.cr.send = int(resp.CreditsGranted)
	c.cr.peerTarget = int(resp.CreditsRequested)
	c.mu.Unlock()
	c.start()
	return c, nil
}

// abort tears down a connection that never started.
func (c *Conn) abort() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.release()
}

// postRawLocked sends a negotiate message from a send slot (no credits).
func (c *Conn) postRawLocked(b []byte) error {
	slot, mr, off, err := c.takeSendLocked()
	if err != nil {
		return err
	}
	n := copy(mr.Bytes()[off:off+c.cfg.MaxSendSize], b)
	return c.ep.PostSend(&rdma.SendWR{ID: uint64(slot), Op: rdma.OpSend, Local: rdma.SGE{MR: mr, Offset: off, Length: n}})
}

// negotiateRecv polls until the peer's negotiate message arrives (send
// completions are absorbed) and returns it with its receive slot.
func (c *Conn) negotiateRecv(ctx context.Context) ([]byte, int, error) {
	var wc [4]rdma.Completion
	for {
		n, err := c.ep.Poll(ctx, wc[:])
		if err != nil {
			if e := c.ep.Err(); e != nil && errors.Is(err, rdma.ErrClosed) {
				err = e
			}
			return nil, 0, err
		}
		for _, w := range wc[:n] {
			if w.Err != nil {
				return nil, 0, w.Err
			}
			c.mu.Lock()
			if w.Op != rdma.OpRecv {
				c.sendDoneLocked(int(w.ID))
				c.mu.Unlock()
				continue
			}
			c.cr.posted--
			c.mu.Unlock()
			return c.recvMR[w.ID].Bytes()[:w.Bytes], int(w.ID), nil
		}
	}
}

// Listener accepts SMB Direct connections.
type Listener struct {
	cfg    Config
	pd     rdma.PD
	pdRefs atomic.Int64 // users of pd: the listener and its Conns (sharedPD)
	rl     rdma.Listener
	conns  chan *Conn
	closed chan struct{}
	once   sync.Once
	wg     sync.WaitGroup
}

// listenBacklog is the connection requests the provider queues for the
// listener. Its accept loop takes each one at once, so the queue only
// covers the moments that goroutine waits for a CPU; but a provider
// refuses what does not fit (as RDMA CM does), and with many clients
// connecting at once on a busy machine the providers' default (16 for
// iwarp) refused some (bench scale: 50 set-ups in flight).
const listenBacklog = 512

// Listen listens on addr (host:port) for SMB Direct connections.
func Listen(ctx context.Context, addr string, cfg *Config) (*Listener, error) {
	if cfg == nil {
		cfg = &Config{}
	}
	rc, err := cfg.resolve(false)
	if err != nil {
		return nil, err
	}
	pd, err := rc.Provider.NewPD()
	if err != nil {
		return nil, err
	}
	rl, err := pd.Listen(ctx, addr, rdma.ListenConfig{Backlog: listenBacklog})
	if err != nil {
		pd.Close()
		return nil, err
	}
	l := &Listener{cfg: rc, pd: pd, rl: rl, conns: make(chan *Conn), closed: make(chan struct{})}
	l.pdRefs.Store(1)
	l.wg.Add(1)
	go l.acceptLoop()
	return l, nil
}

// Addr is the listening address.
func (l *Listener) Addr() net.Addr { return l.rl.Addr() }

// Accept returns the next negotiated connection.
func (l *Listener) Accept() (net.Conn, error) { return l.AcceptSMBD(context.Background()) }

// AcceptSMBD is Accept with a context, returning the *Conn.
func (l *Listener) AcceptSMBD(ctx context.Context) (*Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Close stops listening; connections already accepted stay open. The
// PD they share is closed with the last of them.
func (l *Listener) Close() error {
	first := false
	l.once.Do(func() {
		first = true
		close(l.closed)
		l.rl.Close()
	})
	l.wg.Wait()
	if first {
		l.releasePD()
	}
	return nil
}

func (l *Listener) releasePD() {
	if l.pdRefs.Add(-1) == 0 {
		l.pd.Close()
	}
}

// sharedPD is the listener's PD as an accepted Conn holds it: the Conn
// closes it as its own, and the PD is closed with its last user.
type sharedPD struct {
	rdma.PD
	l    *Listener
	once sync.Once
}

func (s *sharedPD) Close() error {
	s.once.Do(s.l.releasePD)
	return nil
}

func (l *Listener) acceptLoop() {
	defer l.wg.Done()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-l.closed
		cancel()
	}()
	for {
		req, err := l.rl.Accept(ctx)
		if err != nil {
			return
		}
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			c, err := l.negotiate(ctx, req)
			if err != nil {
				l.cfg.Logger.Info("smbd: negotiation failed", "remote", req.RemoteAddr(), "err", err)
				return
			}
			select {
			case l.conns <- c:
			case <-l.closed:
				c.Close()
			}
		}()
	}
}

// negotiate runs the responder side (MS-SMBD 3.1.5.6): receive the
// request within the negotiation timeout, answer, start.
func (l *Listener) negotiate(ctx context.Context, req rdma.ConnRequest) (*Conn, error) {
	rc := l.cfg
	l.pdRefs.Add(1)
	spd := &sharedPD{PD: l.pd, l: l}
	c, err := newConn(rc, spd, true)
	if err != nil {
		spd.Close()
		req.Reject(nil)
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, rc.NegotiateTimeout)
	defer cancel()
	if err := req.Accept(ctx, c.ep, rdma.ConnParams{ORD: 16, IRD: 16}); err != nil {
		c.abort()
		return nil, err
	}
	msg, slot, err := c.negotiateRecv(ctx)
	if err != nil {
		c.abort()
		return nil, fmt.Errorf("%w: waiting for the request: %w", ErrNegotiate, err)
	}
	nr, err := wire.ParseNegotiateRequest(msg)
	if err == nil {
		err = nr.Validate()
	}
	c.mu.Lock()
	c.freeRecv = append(c.freeRecv, slot)
	c.maxSend = rc.MaxSendSize
	resp := wire.NegotiateResponse{MinVersion: wire.ProtocolVersion, MaxVersion: wire.ProtocolVersion}
	if err != nil {
		var re *wire.RuleError
		if errors.As(err, &re) && re.Rule == wire.RuleVersion {
			// Tell the peer we do not speak its version, then hang up.
			resp.Status = wire.StatusNotSupported
			c.postRawLocked(wire.AppendNegotiateResponse(nil, &resp))
			c.mu.Unlock()
			time.Sleep(50 * time.Millisecond) // let the answer leave before the disconnect
			c.abort()
			return nil, fmt.Errorf("%w: %w", ErrNegotiate, err)
		}
		c.mu.Unlock()
		c.abort()
		return nil, fmt.Errorf("%w: request: %w", ErrNegotiate, err)
	}
	c.maxSend = min(rc.MaxSendSize, int(nr.MaxReceiveSize))
	c.peerMaxRecv = int(nr.MaxReceiveSize)
	c.sizeRecvLocked(nr.PreferredSendSize)
	c.maxFragSend = int(nr.MaxFragmentedSize)
	c.maxRW = rc.MaxReadWriteSize
	c.cr.peerTarget = int(nr.CreditsRequested)
	c.replenishLocked()
	// Credits only for receives already posted.
	granted := c.cr.grantPosted()
	resp.NegotiatedVersion = wire.ProtocolVersion
	resp.CreditsRequested = uint16(rc.SendCreditTarget)
	resp.CreditsGranted = granted
	resp.MaxReadWriteSize = uint32(rc.MaxReadWriteSize)
	resp.PreferredSendSize = uint32(rc.MaxSendSize)
	resp.MaxReceiveSize = uint32(rc.MaxReceiveSize)
	resp.MaxFragmentedSize = uint32(rc.MaxFragmentedSize)
	err = c.postRawLocked(wire.AppendNegotiateResponse(nil, &resp))
	c.mu.Unlock()
	if err != nil {
		c.abort()
		return nil, err
	}
	c.start()
	return c, nil
}
