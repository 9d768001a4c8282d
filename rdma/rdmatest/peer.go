package rdmatest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/smbdirect/smbdirect/rdma"
)

// Peer is a raw endpoint for hostile-peer tests: it keeps receive buffers
// posted, hands every received message over as bytes and sends whatever
// bytes a test crafts, with no protocol of its own above RDMA. It works
// on any provider (a Network, or iwarp for tests of the real wire).
type Peer struct {
	pd        rdma.PD
	ep        rdma.Endpoint
	mrs       []rdma.MR
	msgs      chan []byte
	wcs       chan rdma.Completion
	once      sync.Once
	closeOnce sync.Once
	loop      chan struct{} // closed when the poll loop has ended
	quit      chan struct{} // closed by Close: the loop stops handing over

	mu     sync.Mutex
	nextID uint64
}

// PeerConfig sizes a Peer. Zero values take the defaults.
type PeerConfig struct {
	// Receives is the number of receive buffers kept posted (default 64).
	Receives int
	// ReceiveSize is the size of each (default 64 KiB).
	ReceiveSize int
}

// peerSendBase numbers the Peer's own sends apart from receive IDs.
const peerSendBase = 1 << 32

// NewPeer returns an unconnected Peer on a PD of its own from prov,
// with its receives posted.
func NewPeer(prov rdma.Provider, cfg PeerConfig) (*Peer, error) {
	if cfg.Receives <= 0 {
		cfg.Receives = 64
	}
	if cfg.ReceiveSize <= 0 {
		cfg.ReceiveSize = 64 << 10
	}
	pd, err := prov.NewPD()
	if err != nil {
		return nil, err
	}
	p := &Peer{pd: pd, msgs: make(chan []byte, 1024), wcs: make(chan rdma.Completion, 1024),
		loop: make(chan struct{}), quit: make(chan struct{}), nextID: peerSendBase}
	p.ep, err = pd.NewEndpoint(rdma.EndpointConfig{RecvQueueDepth: cfg.Receives})
	if err != nil {
		pd.Close()
		return nil, err
	}
	for i := range cfg.Receives {
		m, err := pd.RegisterMemory(make([]byte, cfg.ReceiveSize), rdma.AccessLocalWrite)
		if err == nil {
			p.mrs = append(p.mrs, m)
			err = p.ep.PostRecv(&rdma.RecvWR{ID: uint64(i), Local: rdma.SGE{MR: m}})
		}
		if err != nil {
			close(p.loop) // no loop to wait for
			p.release()
			return nil, err
		}
	}
	return p, nil
}

// Endpoint is the Peer's endpoint, for work beyond Send (Writes, Reads).
// Their completions come from Completion.
func (p *Peer) Endpoint() rdma.Endpoint { return p.ep }

// PD is the Peer's protection domain, for regions of such work.
func (p *Peer) PD() rdma.PD { return p.pd }

// Connect connects the Peer to addr and starts taking its completions.
func (p *Peer) Connect(ctx context.Context, addr string, params rdma.ConnParams) error {
	if err := p.ep.Connect(ctx, addr, params); err != nil {
		return err
	}
	p.start()
	return nil
}

// Accept accepts req on the Peer's endpoint and starts taking its
// completions.
func (p *Peer) Accept(ctx context.Context, req rdma.ConnRequest, params rdma.ConnParams) error {
	if err := req.Accept(ctx, p.ep, params); err != nil {
		return err
	}
	p.start()
	return nil
}

func (p *Peer) start() {
	p.once.Do(func() { go p.pollLoop() })
}

func (p *Peer) pollLoop() {
	defer close(p.loop)
	defer close(p.msgs)
	defer close(p.wcs)
	var wc [16]rdma.Completion
	for {
		n, err := p.ep.Poll(context.Background(), wc[:])
		if err != nil {
			return // closed and drained
		}
		for _, c := range wc[:n] {
			if c.Op != rdma.OpRecv {
				select {
				case p.wcs <- c:
				case <-p.quit:
				}
				continue
			}
			if c.Err != nil {
				continue // flushed, or failed: the connection ends
			}
			m := p.mrs[c.ID]
			select {
			case p.msgs <- slices.Clone(m.Bytes()[:c.Bytes]):
			case <-p.quit:
			}
			// Reposting fails once the connection has ended; the loop
			// then ends with Poll.
			p.ep.PostRecv(&rdma.RecvWR{ID: c.ID, Local: rdma.SGE{MR: m}})
		}
	}
}

// Send sends b as one message and waits for its completion, returning
// its error (a send the connection ends under fails, which is what many
// hostile cases provoke). Completions of other work that come first are
// dropped.
func (p *Peer) Send(ctx context.Context, b []byte) error {
	return p.SendWR(ctx, &rdma.SendWR{Op: rdma.OpSend}, b)
}

// SendWR is Send with a work request of the caller's (a Send with
// Invalidate, a solicited one): its Local is set to b, its ID to the
// Peer's own.
func (p *Peer) SendWR(ctx context.Context, wr *rdma.SendWR, b []byte) error {
	var mr rdma.MR
	if len(b) > 0 {
		var err error
		if mr, err = p.pd.RegisterMemory(slices.Clone(b), 0); err != nil {
			return err
		}
		defer mr.Close()
	}
	p.mu.Lock()
	id := p.nextID
	p.nextID++
	p.mu.Unlock()
	w := *wr
	w.ID, w.Local, w.Unsignaled = id, rdma.SGE{MR: mr}, false
	if err := p.ep.PostSend(&w); err != nil {
		return err
	}
	for {
		select {
		case c, ok := <-p.wcs:
			if !ok {
				return fmt.Errorf("rdmatest: peer: send: %w", rdma.ErrFlushed)
			}
			if c.ID == id {
				return c.Err
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Completion returns the next completion of work posted on Endpoint
// directly, or an error matching rdma.ErrClosed once the connection has
// ended and all are taken.
func (p *Peer) Completion(ctx context.Context) (rdma.Completion, error) {
	select {
	case c, ok := <-p.wcs:
		if !ok {
			return c, rdma.ErrClosed
		}
		return c, nil
	case <-ctx.Done():
		return rdma.Completion{}, ctx.Err()
	}
}

// Recv returns the next message received. Once the connection has ended
// and every message is taken, it returns the reason (rdma.ErrClosed
// after Close).
func (p *Peer) Recv(ctx context.Context) ([]byte, error) {
	select {
	case b, ok := <-p.msgs:
		if !ok {
			if err := p.ep.Err(); err != nil {
				return nil, err
			}
			return nil, rdma.ErrClosed
		}
		return b, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Messages is the channel Recv reads, for a select; it is closed when
// the connection has ended and every message is taken.
func (p *Peer) Messages() <-chan []byte { return p.msgs }

// Done is closed when the connection has ended.
func (p *Peer) Done() <-chan struct{} { return p.ep.Done() }

// Close ends the connection, waits for the poll loop and releases the
// Peer's regions and PD. Regions the caller registered on PD must be
// closed first.
func (p *Peer) Close() error {
	p.closeOnce.Do(func() { close(p.quit) })
	p.ep.Close()
	p.start() // an unconnected Peer's loop drains the flushes, then ends
	<-p.loop
	return p.release()
}

func (p *Peer) release() error {
	p.ep.Close()
	var errs []error
	for _, m := range p.mrs {
		errs = append(errs, m.Close())
	}
	p.mrs = nil
	errs = append(errs, p.pd.Close())
	return errors.Join(errs...)
}
