// Package rdmatest is an in-memory RDMA provider for tests, in the shape of
// wireguard-go's conn/bindtest: endpoints of one Network connect to each
// other by name, with no sockets and no goroutines of the provider's own
// (but one per endpoint that delivers to rdma.DirectReceiver's function,
// on a NewDirectNetwork, whose endpoints are rdma.Drivers too).
//
// A work request is carried out while PostSend runs: a Send lands in the
// peer's next posted receive, a Write or Read copies between the regions,
// and the completions are queued before PostSend returns, in posting
// order. Nothing depends on the scheduler, so tests of code above the rdma
// API (smbd's credits, keepalives, hostile peers) are deterministic, and
// they can run inside a testing/synctest bubble with a fake clock.
//
// The semantics are those of a reliable connected queue pair, strictly:
//   - a Send that finds no posted receive, or one too small, terminates the
//     connection (the receiver's error matches rdma.ErrProtocol or
//     rdma.ErrLocalLength, the sender's WR fails with
//     rdma.ErrRemoteOperation);
//   - a Write or Read of a region that is unknown, invalidated, out of
//     bounds or without the right fails with rdma.ErrRemoteAccess and
//     terminates the connection;
//   - send queue slots are freed when their completion is polled (an
//     unsignaled request's with the next signaled one), as in verbs, so
//     a consumer that overruns SendQueueDepth gets rdma.ErrQueueFull;
//   - a region with posted receives cannot be closed (rdma.ErrBusy);
//   - when a connection ends, posted receives complete with
//     rdma.ErrFlushed, then Poll returns rdma.ErrClosed.
//
// Peer is a raw endpoint for hostile-peer tests, and TestProvider is a
// conformance suite any provider can run.
package rdmatest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/smbdirect/smbdirect/rdma"
)

// Addr is an address on a Network: any name, "host:port" by convention.
type Addr string

// Network returns "rdmatest".
func (a Addr) Network() string { return "rdmatest" }
func (a Addr) String() string  { return string(a) }

// Defaults, as in the iwarp provider.
const (
	defaultSendQueueDepth = 128
	defaultRecvQueueDepth = 256
	defaultORD            = 16
	defaultIRD            = 16
	maxIRDORD             = 1024
	defaultBacklog        = 16
)

// Network is an rdma.Provider whose endpoints reach each other in memory.
// Use one per test; endpoints of different Networks never meet.
type Network struct {
	// mu guards every object of the network: one lock for all makes a
	// work request, which touches both ends of a connection, atomic
	// without lock ordering.
	mu        sync.Mutex
	listeners map[string]*listener
	stag      uint32 // last STag handed out, network-wide
	ports     int    // last port handed out for a ":0" address
	clients   int    // last initiator address handed out
	pds       []*pd  // every PD, for Leaks
	direct    bool   // endpoints implement rdma.DirectReceiver
}

// NewNetwork returns an empty network. Its endpoints deliver every
// completion through Poll.
func NewNetwork() *Network { return &Network{listeners: make(map[string]*listener)} }

// NewDirectNetwork returns an empty network whose endpoints also implement
// rdma.DirectReceiver and rdma.Driver, as iwarp's do: after OnRecv,
// receive completions go to its function, in order, on a goroutine of the
// endpoint (the only goroutine the provider has) or on a caller of Drive,
// and Close waits for both.
func NewDirectNetwork() *Network {
	n := NewNetwork()
	n.direct = true
	return n
}

// Name returns "rdmatest".
func (n *Network) Name() string { return "rdmatest" }

// NewPD allocates a protection domain.
func (n *Network) NewPD() (rdma.PD, error) {
	d := &pd{n: n, mrs: make(map[rdma.STag]*mr)}
	n.mu.Lock()
	n.pds = append(n.pds, d)
	n.mu.Unlock()
	return d, nil
}

// Leaks reports what was opened on the network and not closed: PDs,
// regions, endpoints and listeners, as an error naming the counts, or
// nil. A test calls it after closing what it used, to check that the
// code under test released everything.
func (n *Network) Leaks() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	var pds, mrs, eps int
	for _, d := range n.pds {
		if !d.closed {
			pds++
		}
		mrs += len(d.mrs)
		eps += d.eps
	}
	if pds+mrs+eps+len(n.listeners) == 0 {
		return nil
	}
	return fmt.Errorf("rdmatest: left open: %d PDs, %d regions, %d endpoints, %d listeners", pds, mrs, eps, len(n.listeners))
}

var _ rdma.Provider = (*Network)(nil)

type pd struct {
	n      *Network
	mrs    map[rdma.STag]*mr
	eps    int
	closed bool
}

func (d *pd) RegisterMemory(buf []byte, access rdma.Access) (rdma.MR, error) {
	if len(buf) == 0 {
		return nil, fmt.Errorf("%w: empty memory region", rdma.ErrInvalidArgument)
	}
	if access&^(rdma.AccessLocalWrite|rdma.AccessRemoteRead|rdma.AccessRemoteWrite) != 0 {
		return nil, fmt.Errorf("%w: unknown access bits %v", rdma.ErrInvalidArgument, access)
	}
	if access&rdma.AccessRemoteWrite != 0 && access&rdma.AccessLocalWrite == 0 {
		return nil, fmt.Errorf("%w: remote write needs local write", rdma.ErrInvalidArgument)
	}
	d.n.mu.Lock()
	defer d.n.mu.Unlock()
	if d.closed {
		return nil, rdma.ErrClosed
	}
	// STags are unique in the network, so one region's STag used through
	// another PD's endpoint finds nothing instead of a stranger's region;
	// the tagged offsets of two regions never overlap either.
	d.n.stag++
	s := rdma.STag(d.n.stag)
	m := &mr{pd: d, buf: buf, stag: s, addr: uint64(s) << 32, access: access, valid: true}
	d.mrs[s] = m
	return m, nil
}

func (d *pd) NewEndpoint(cfg rdma.EndpointConfig) (rdma.Endpoint, error) {
	d.n.mu.Lock()
	defer d.n.mu.Unlock()
	if d.closed {
		return nil, rdma.ErrClosed
	}
	if cfg.SendQueueDepth <= 0 {
		cfg.SendQueueDepth = defaultSendQueueDepth
	}
	if cfg.RecvQueueDepth <= 0 {
		cfg.RecvQueueDepth = defaultRecvQueueDepth
	}
	d.eps++
	e := &endpoint{n: d.n, pd: d, cfg: cfg, done: make(chan struct{}), wake: make(chan struct{}, 1),
		dwake: make(chan struct{}, 1), ddone: make(chan struct{})}
	if d.n.direct {
		return directEndpoint{e}, nil
	}
	return e, nil
}

func (d *pd) Close() error {
	d.n.mu.Lock()
	defer d.n.mu.Unlock()
	if d.closed {
		return nil
	}
	if len(d.mrs) > 0 || d.eps > 0 {
		return fmt.Errorf("%w: PD has %d regions and %d endpoints", rdma.ErrBusy, len(d.mrs), d.eps)
	}
	d.closed = true
	return nil
}

type mr struct {
	pd     *pd
	buf    []byte
	stag   rdma.STag
	addr   uint64
	access rdma.Access
	valid  bool
	recvs  int // posted receives that use the region
}

func (m *mr) STag() rdma.STag     { return m.stag }
func (m *mr) Addr() uint64        { return m.addr }
func (m *mr) Bytes() []byte       { return m.buf }
func (m *mr) Access() rdma.Access { return m.access }

func (m *mr) Valid() bool {
	m.pd.n.mu.Lock()
	defer m.pd.n.mu.Unlock()
	return m.valid
}

func (m *mr) Invalidate() error {
	m.pd.n.mu.Lock()
	m.valid = false
	m.pd.n.mu.Unlock()
	return nil
}

func (m *mr) Close() error {
	m.pd.n.mu.Lock()
	defer m.pd.n.mu.Unlock()
	if m.recvs > 0 {
		return fmt.Errorf("%w: region %v has %d receives posted", rdma.ErrBusy, m.stag, m.recvs)
	}
	m.valid = false
	if m.pd.mrs[m.stag] == m {
		delete(m.pd.mrs, m.stag)
	}
	return nil
}

func (m *mr) String() string {
	return fmt.Sprintf("MR{stag %v, %d bytes, %v}", m.stag, len(m.buf), m.access)
}

// remote resolves a peer's access to [to, to+n) with right a.
func (m *mr) remote(to uint64, n int, a rdma.Access) ([]byte, error) {
	switch {
	case !m.valid:
		return nil, fmt.Errorf("STag %v is invalidated", m.stag)
	case m.access&a == 0:
		return nil, fmt.Errorf("STag %v lacks %v", m.stag, a)
	case to < m.addr || to+uint64(n) < to || to+uint64(n) > m.addr+uint64(len(m.buf)):
		return nil, fmt.Errorf("[0x%x,+%d) outside STag %v", to, n, m.stag)
	}
	off := int(to - m.addr)
	return m.buf[off : off+n], nil
}

// localSGE resolves an SGE of d to its bytes and region. Called with
// n.mu held.
func (d *pd) localSGE(s rdma.SGE, need rdma.Access) ([]byte, *mr, error) {
	if s.MR == nil {
		if s.Length != 0 || s.Offset != 0 {
			return nil, nil, fmt.Errorf("%w: SGE with length but no region", rdma.ErrInvalidArgument)
		}
		return nil, nil, nil
	}
	m, ok := s.MR.(*mr)
	if !ok || m.pd != d {
		return nil, nil, fmt.Errorf("%w: region of another protection domain", rdma.ErrLocalProtection)
	}
	if !m.valid {
		return nil, nil, fmt.Errorf("%w: region %v is invalidated", rdma.ErrLocalProtection, m.stag)
	}
	if m.access&need != need {
		return nil, nil, fmt.Errorf("%w: region %v lacks %v", rdma.ErrLocalProtection, m.stag, need)
	}
	k := s.Len()
	if s.Offset < 0 || k < 0 || s.Offset+k > len(m.buf) {
		return nil, nil, fmt.Errorf("%w: SGE [%d,+%d) outside region of %d bytes", rdma.ErrInvalidArgument, s.Offset, k, len(m.buf))
	}
	return m.buf[s.Offset : s.Offset+k], m, nil
}

// Listen opens a listener. An address ending in ":0" gets the next free
// port of the network, as on TCP.
func (d *pd) Listen(ctx context.Context, addr string, cfg rdma.ListenConfig) (rdma.Listener, error) {
	d.n.mu.Lock()
	defer d.n.mu.Unlock()
	if d.closed {
		return nil, rdma.ErrClosed
	}
	if host, ok := strings.CutSuffix(addr, ":0"); ok {
		for {
			d.n.ports++
			addr = host + ":" + strconv.Itoa(d.n.ports)
			if d.n.listeners[addr] == nil {
				break
			}
		}
	}
	if d.n.listeners[addr] != nil {
		return nil, fmt.Errorf("rdmatest: listen %s: %w", addr, syscall.EADDRINUSE)
	}
	if cfg.Backlog <= 0 {
		cfg.Backlog = defaultBacklog
	}
	l := &listener{n: d.n, addr: Addr(addr), backlog: cfg.Backlog, wake: make(chan struct{}, 1)}
	d.n.listeners[addr] = l
	return l, nil
}

type listener struct {
	n       *Network
	addr    Addr
	backlog int
	queue   []*connRequest
	closed  bool
	wake    chan struct{}
}

func (l *listener) Addr() net.Addr { return l.addr }

func (l *listener) Accept(ctx context.Context) (rdma.ConnRequest, error) {
	for {
		l.n.mu.Lock()
		if l.closed {
			l.n.mu.Unlock()
			return nil, rdma.ErrClosed
		}
		if len(l.queue) > 0 {
			r := l.queue[0]
			l.queue = l.queue[1:]
			if len(l.queue) > 0 {
				signal(l.wake) // for another Accept
			}
			l.n.mu.Unlock()
			return r, nil
		}
		l.n.mu.Unlock()
		select {
		case <-l.wake:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (l *listener) Close() error {
	l.n.mu.Lock()
	defer l.n.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	if l.n.listeners[string(l.addr)] == l {
		delete(l.n.listeners, string(l.addr))
	}
	for len(l.queue) > 0 {
		l.queue[0].answerLocked(fmt.Errorf("rdmatest: connect %s: listener closed: %w", l.addr, syscall.ECONNREFUSED))
	}
	signal(l.wake)
	return nil
}

// connRequest is a Connect waiting for Accept or Reject.
type connRequest struct {
	l        *listener
	from     *endpoint
	local    Addr // the initiator's address
	pdata    []byte
	ord, ird int
	answered bool
	reply    chan error // Connect's answer, buffered
}

// answerLocked ends the initiator's wait; the first answer wins.
func (r *connRequest) answerLocked(err error) bool {
	if r.answered {
		return false
	}
	r.answered = true
	// An Accept that comes too late finds nothing in the backlog.
	r.l.queue = slices.DeleteFunc(r.l.queue, func(q *connRequest) bool { return q == r })
	if err != nil && r.from.state == stConnecting {
		r.from.state = stIdle
	}
	r.from.pending = nil
	r.reply <- err
	return true
}

func (r *connRequest) PrivateData() []byte  { return r.pdata }
func (r *connRequest) RemoteORD() int       { return r.ord }
func (r *connRequest) RemoteIRD() int       { return r.ird }
func (r *connRequest) RemoteAddr() net.Addr { return r.local }
func (r *connRequest) LocalAddr() net.Addr  { return r.l.addr }

func (r *connRequest) Accept(ctx context.Context, ep rdma.Endpoint, p rdma.ConnParams) error {
	var e *endpoint
	switch x := ep.(type) {
	case *endpoint:
		e = x
	case directEndpoint:
		e = x.endpoint
	}
	if e == nil || e.n != r.l.n {
		return fmt.Errorf("%w: endpoint of another provider", rdma.ErrInvalidArgument)
	}
	if len(p.PrivateData) > rdma.MaxPrivateData {
		return fmt.Errorf("%w: %d bytes of private data", rdma.ErrInvalidArgument, len(p.PrivateData))
	}
	n := r.l.n
	n.mu.Lock()
	defer n.mu.Unlock()
	switch {
	case e.state == stClosed:
		return rdma.ErrClosed
	case e.state != stIdle:
		return fmt.Errorf("%w: endpoint already used", rdma.ErrInvalidArgument)
	case r.answered:
		return fmt.Errorf("%w: request already answered", rdma.ErrInvalidArgument)
	case r.from.state != stConnecting:
		// The initiator gave up (its context ended, or it closed).
		return fmt.Errorf("rdmatest: accept: %w", rdma.ErrDisconnected)
	}
	// As the iwarp provider negotiates (MPA v2): our IRD at least what the
	// initiator wants to read at once, our ORD at most what it accepts.
	ird := min(max(clamp(p.IRD, defaultIRD), r.ord), maxIRDORD)
	ord := min(clamp(p.ORD, defaultORD), r.ird)
	i := r.from
	iord := min(i.ord, ird)
	iird := min(max(i.ird, ord), maxIRDORD)
	e.connectLocked(i, rdma.ConnInfo{LocalAddr: r.l.addr, RemoteAddr: r.local, ORD: ord, IRD: ird,
		PrivateData: r.pdata, Provider: "rdmatest", Detail: "in-memory"})
	i.connectLocked(e, rdma.ConnInfo{LocalAddr: r.local, RemoteAddr: r.l.addr, ORD: iord, IRD: iird,
		PrivateData: slices.Clone(p.PrivateData), Provider: "rdmatest", Detail: "in-memory"})
	r.answerLocked(nil)
	return nil
}

func (r *connRequest) Reject(privateData []byte) error {
	if len(privateData) > rdma.MaxPrivateData {
		return fmt.Errorf("%w: %d bytes of private data", rdma.ErrInvalidArgument, len(privateData))
	}
	r.l.n.mu.Lock()
	defer r.l.n.mu.Unlock()
	if !r.answerLocked(&rdma.RejectError{PrivateData: slices.Clone(privateData)}) {
		return fmt.Errorf("%w: request already answered", rdma.ErrInvalidArgument)
	}
	return nil
}

func clamp(v, def int) int {
	if v <= 0 {
		return def
	}
	return min(v, maxIRDORD)
}

// errRefused is what connecting to no listener gives, as on TCP.
var errRefused = syscall.ECONNREFUSED

func errorsIs(err, target error) bool { return errors.Is(err, target) }

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}
