package rdmatest

import (
	"context"
	"fmt"
	"io"
	"slices"

	"github.com/smbdirect/smbdirect/rdma"
)

type state uint8

const (
	stIdle state = iota
	stConnecting
	stConnected
	stEnded  // the connection ended; the queues are flushed
	stClosed // Close was called
)

type recvEntry struct {
	wr  rdma.RecvWR
	mr  *mr
	dst []byte
}

// cqEntry is a completion and the send queue slots its polling frees.
type cqEntry struct {
	c     rdma.Completion
	slots int
}

// endpoint is a queue pair. All its fields are guarded by n.mu.
type endpoint struct {
	n        *Network
	pd       *pd
	cfg      rdma.EndpointConfig
	state    state
	pending  *connRequest // while connecting
	ord, ird int          // asked for while connecting, negotiated after
	peer     *endpoint
	info     rdma.ConnInfo
	err      error
	done     chan struct{}

	rq []recvEntry
	// sqUsed counts send queue slots in use: requests whose completion
	// has not been polled. unsignaled counts those posted unsignaled
	// since the last signaled one; their slots free with its completion.
	sqUsed, unsignaled int

	// direct is the function of rdma.DirectReceiver.OnRecv; the receive
	// completions for it queue in dq, for the endpoint's delivery
	// goroutine (dgo), which ends after the connection, closing ddone.
	direct func(*rdma.Completion)
	dq     []rdma.Completion
	dwake  chan struct{}
	dgo    bool
	ddone  chan struct{}
	// The receive path (delivering dq) runs on one goroutine at a time:
	// the delivery goroutine while dbusy, or a caller of Drive while
	// driving (drvDone closes when it stops). drvWake wakes the driver:
	// data came, Interrupt (interrupted), or the end.
	dbusy, driving bool
	interrupted    bool
	drvWake        chan struct{}
	drvDone        chan struct{}

	cq       []cqEntry
	cqClosed bool          // ended and flushed: Poll says ErrClosed once empty
	wake     chan struct{} // one slot: a completion came, or the end
}

func (e *endpoint) Connect(ctx context.Context, addr string, p rdma.ConnParams) error {
	if len(p.PrivateData) > rdma.MaxPrivateData {
		return fmt.Errorf("%w: %d bytes of private data", rdma.ErrInvalidArgument, len(p.PrivateData))
	}
	n := e.n
	n.mu.Lock()
	switch e.state {
	case stIdle:
	case stClosed:
		n.mu.Unlock()
		return rdma.ErrClosed
	default:
		n.mu.Unlock()
		return fmt.Errorf("%w: endpoint already used", rdma.ErrInvalidArgument)
	}
	l := n.listeners[addr]
	if l == nil || len(l.queue) >= l.backlog {
		n.mu.Unlock()
		return fmt.Errorf("rdmatest: connect %s: %w", addr, errRefused)
	}
	n.clients++
	e.ord, e.ird = clamp(p.ORD, defaultORD), clamp(p.IRD, defaultIRD)
	r := &connRequest{l: l, from: e, local: Addr(fmt.Sprintf("client-%d:%d", n.clients, 49152+n.clients%16384)),
		pdata: slices.Clone(p.PrivateData), ord: e.ord, ird: e.ird, reply: make(chan error, 1)}
	e.state, e.pending = stConnecting, r
	l.queue = append(l.queue, r)
	signal(l.wake)
	n.mu.Unlock()
	select {
	case err := <-r.reply:
		return err
	case <-ctx.Done():
	}
	n.mu.Lock()
	r.answerLocked(fmt.Errorf("rdmatest: connect %s: %w", addr, ctx.Err()))
	n.mu.Unlock()
	return <-r.reply // ours, or the answer that came first
}

// connectLocked makes e one end of a connection to peer.
func (e *endpoint) connectLocked(peer *endpoint, info rdma.ConnInfo) {
	e.state, e.peer, e.info = stConnected, peer, info
	e.ord, e.ird = info.ORD, info.IRD
}

func (e *endpoint) postableLocked() error {
	switch e.state {
	case stConnected:
		return nil
	case stEnded:
		if e.err != nil {
			return fmt.Errorf("%w: %w", rdma.ErrNotConnected, e.err)
		}
	case stClosed:
		return rdma.ErrClosed
	}
	return rdma.ErrNotConnected
}

func (e *endpoint) PostSend(wr *rdma.SendWR) error {
	switch wr.Op {
	case rdma.OpSend, rdma.OpSendInvalidate, rdma.OpWrite, rdma.OpRead, rdma.OpLocalInvalidate:
	default:
		return fmt.Errorf("%w: opcode %v on the send queue", rdma.ErrInvalidArgument, wr.Op)
	}
	if wr.Solicited && wr.Op != rdma.OpSend && wr.Op != rdma.OpSendInvalidate {
		return fmt.Errorf("%w: solicited event on %v", rdma.ErrInvalidArgument, wr.Op)
	}
	var file []byte
	if wr.File != nil {
		if wr.Op != rdma.OpSend && wr.Op != rdma.OpSendInvalidate && wr.Op != rdma.OpWrite {
			return fmt.Errorf("%w: file source on %v", rdma.ErrInvalidArgument, wr.Op)
		}
		f := wr.File
		if f.File == nil || f.Length < 0 || f.Offset < 0 {
			return fmt.Errorf("%w: bad file range", rdma.ErrInvalidArgument)
		}
		// Read before taking the lock: a file may be slow.
		file = make([]byte, f.Length)
		if _, err := f.File.ReadAt(file, f.Offset); err != nil && err != io.EOF {
			return fmt.Errorf("%w: reading the file range: %w", rdma.ErrInvalidArgument, err)
		} else if err == io.EOF {
			return fmt.Errorf("%w: file range past the end of the file", rdma.ErrInvalidArgument)
		}
	}
	n := e.n
	n.mu.Lock()
	defer n.mu.Unlock()
	var local []byte
	var err error
	switch wr.Op {
	case rdma.OpSend, rdma.OpSendInvalidate, rdma.OpWrite:
		if file != nil {
			local = file
		} else {
			local, _, err = e.pd.localSGE(wr.Local, 0)
		}
	case rdma.OpRead:
		local, _, err = e.pd.localSGE(wr.Local, rdma.AccessLocalWrite)
	}
	if err != nil {
		return err
	}
	if err := e.postableLocked(); err != nil {
		return err
	}
	if e.sqUsed == e.cfg.SendQueueDepth {
		return rdma.ErrQueueFull
	}
	e.sqUsed++
	p := e.peer
	switch wr.Op {
	case rdma.OpSend, rdma.OpSendInvalidate:
		e.sendLocked(wr, local)
	case rdma.OpWrite:
		m := p.pd.mrs[wr.RemoteSTag]
		if m == nil {
			e.terminateLocked(wr, rdma.ErrRemoteAccess, fmt.Errorf("RDMA Write to unknown STag %v", wr.RemoteSTag))
			return nil
		}
		dst, err := m.remote(wr.RemoteAddr, len(local), rdma.AccessRemoteWrite)
		if err != nil {
			e.terminateLocked(wr, rdma.ErrRemoteAccess, fmt.Errorf("RDMA Write: %w", err))
			return nil
		}
		copy(dst, local)
		e.completeLocked(wr, len(local))
	case rdma.OpRead:
		m := p.pd.mrs[wr.RemoteSTag]
		if m == nil {
			e.terminateLocked(wr, rdma.ErrRemoteAccess, fmt.Errorf("RDMA Read of unknown STag %v", wr.RemoteSTag))
			return nil
		}
		src, err := m.remote(wr.RemoteAddr, len(local), rdma.AccessRemoteRead)
		if err != nil {
			e.terminateLocked(wr, rdma.ErrRemoteAccess, fmt.Errorf("RDMA Read: %w", err))
			return nil
		}
		copy(local, src)
		e.completeLocked(wr, len(local))
	case rdma.OpLocalInvalidate:
		m := e.pd.mrs[wr.InvalidateSTag]
		if m == nil {
			e.failLocked(wr, fmt.Errorf("%w: local invalidate of unknown STag %v", rdma.ErrLocalProtection, wr.InvalidateSTag))
			return nil
		}
		m.valid = false
		e.completeLocked(wr, 0)
	}
	return nil
}

// sendLocked places a Send into the peer's next posted receive.
func (e *endpoint) sendLocked(wr *rdma.SendWR, data []byte) {
	p := e.peer
	if len(p.rq) == 0 {
		e.terminateLocked(wr, rdma.ErrRemoteOperation, fmt.Errorf("%w: Send with no receive posted", rdma.ErrProtocol))
		return
	}
	r := p.rq[0]
	p.rq[0] = recvEntry{}
	p.rq = p.rq[1:]
	if r.mr != nil {
		r.mr.recvs--
	}
	var bad error
	switch {
	case r.mr != nil && !r.mr.valid:
		bad = fmt.Errorf("%w: receive buffer's region %v is invalidated", rdma.ErrLocalProtection, r.mr.stag)
	case len(data) > len(r.dst):
		bad = fmt.Errorf("%w: %d-byte Send into a %d-byte receive", rdma.ErrLocalLength, len(data), len(r.dst))
	}
	wc := rdma.Completion{ID: r.wr.ID, Op: rdma.OpRecv, Solicited: wr.Solicited}
	if bad == nil && wr.Op == rdma.OpSendInvalidate {
		// The peer's region must exist in its PD; invalidating a region
		// of the peer's own choosing is what Send with Invalidate is for.
		if m := p.pd.mrs[wr.InvalidateSTag]; m != nil {
			m.valid = false
			wc.Invalidated, wc.InvalidatedSTag = true, m.stag
		} else {
			bad = fmt.Errorf("%w: peer asked to invalidate STag %v, which it cannot", rdma.ErrRemoteOperation, wr.InvalidateSTag)
		}
	}
	if bad != nil {
		wc.Err = &rdma.WorkError{Op: rdma.OpRecv, ID: r.wr.ID, Err: bad}
		p.recvLocked(wc)
		e.terminateLocked(wr, rdma.ErrRemoteOperation, bad)
		return
	}
	copy(r.dst, data)
	wc.Bytes = len(data)
	p.recvLocked(wc)
	e.completeLocked(wr, len(data))
}

// completeLocked queues the success completion of wr, unless unsignaled.
func (e *endpoint) completeLocked(wr *rdma.SendWR, n int) {
	if wr.Unsignaled {
		e.unsignaled++
		return
	}
	e.pushLocked(cqEntry{c: rdma.Completion{ID: wr.ID, Op: wr.Op, Bytes: n}, slots: 1 + e.unsignaled})
	e.unsignaled = 0
}

// failLocked queues the error completion of wr (errors always complete).
func (e *endpoint) failLocked(wr *rdma.SendWR, err error) {
	e.pushLocked(cqEntry{c: rdma.Completion{ID: wr.ID, Op: wr.Op, Err: &rdma.WorkError{Op: wr.Op, ID: wr.ID, Err: err}}, slots: 1 + e.unsignaled})
	e.unsignaled = 0
}

// terminateLocked fails wr with kind and ends the connection, as an
// iWARP Terminate does: this side ends with kind, the peer (which found
// the fault) with a protocol error.
func (e *endpoint) terminateLocked(wr *rdma.SendWR, kind error, why error) {
	e.failLocked(wr, fmt.Errorf("%w: %w", kind, why))
	p := e.peer
	e.endLocked(fmt.Errorf("rdmatest: connection terminated by the peer: %w: %w", kind, why))
	p.endLocked(fmt.Errorf("rdmatest: connection terminated: %w", protocolErr(why)))
}

// protocolErr makes why match rdma.ErrProtocol unless it names a more
// precise kind.
func protocolErr(why error) error {
	for _, k := range []error{rdma.ErrProtocol, rdma.ErrLocalLength, rdma.ErrLocalProtection, rdma.ErrRemoteOperation} {
		if errorsIs(why, k) {
			return why
		}
	}
	return fmt.Errorf("%w: %w", rdma.ErrProtocol, why)
}

// recvLocked hands a receive completion to OnRecv's function, or queues
// it for Poll.
func (e *endpoint) recvLocked(wc rdma.Completion) {
	if e.direct == nil {
		e.pushLocked(cqEntry{c: wc})
		return
	}
	e.dq = append(e.dq, wc)
	signal(e.dwake)
	if e.driving {
		signal(e.drvWake)
	}
}

func (e *endpoint) pushLocked(c cqEntry) {
	e.cq = append(e.cq, c)
	signal(e.wake)
}

// endLocked ends e's side of the connection with err: Done closes, and
// posted receives complete flushed. The first reason wins.
func (e *endpoint) endLocked(err error) {
	if e.state >= stEnded {
		return
	}
	if e.pending != nil {
		e.pending.answerLocked(fmt.Errorf("rdmatest: connect: %w", err))
	}
	e.err = err
	e.state = stEnded
	close(e.done)
	for i, r := range e.rq {
		if r.mr != nil {
			r.mr.recvs--
		}
		e.pushLocked(cqEntry{c: rdma.Completion{ID: r.wr.ID, Op: rdma.OpRecv,
			Err: &rdma.WorkError{Op: rdma.OpRecv, ID: r.wr.ID, Err: rdma.ErrFlushed}}})
		e.rq[i] = recvEntry{}
	}
	e.rq = nil
	e.cqClosed = true
	signal(e.wake)
	if e.dgo {
		signal(e.dwake) // the delivery goroutine drains dq and ends
	}
	if e.driving {
		signal(e.drvWake)
	}
}

func (e *endpoint) PostRecv(wr *rdma.RecvWR) error {
	e.n.mu.Lock()
	defer e.n.mu.Unlock()
	dst, m, err := e.pd.localSGE(wr.Local, rdma.AccessLocalWrite)
	if err != nil {
		return err
	}
	switch e.state {
	case stClosed:
		return rdma.ErrClosed
	case stEnded:
		return rdma.ErrNotConnected
	}
	if len(e.rq) == e.cfg.RecvQueueDepth {
		return rdma.ErrQueueFull
	}
	if m != nil {
		m.recvs++
	}
	e.rq = append(e.rq, recvEntry{wr: *wr, mr: m, dst: dst})
	return nil
}

func (e *endpoint) Poll(ctx context.Context, wc []rdma.Completion) (int, error) {
	if len(wc) == 0 {
		return 0, nil
	}
	for {
		e.n.mu.Lock()
		k := 0
		for k < len(wc) && len(e.cq) > 0 {
			wc[k] = e.cq[0].c
			e.sqUsed -= e.cq[0].slots
			e.cq[0] = cqEntry{}
			e.cq = e.cq[1:]
			k++
		}
		closed, more := e.cqClosed, len(e.cq) > 0
		e.n.mu.Unlock()
		if more {
			signal(e.wake) // for another poller
		}
		if k > 0 {
			return k, nil
		}
		if closed {
			return 0, rdma.ErrClosed
		}
		select {
		case <-e.wake:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

func (e *endpoint) Info() rdma.ConnInfo {
	e.n.mu.Lock()
	defer e.n.mu.Unlock()
	return e.info
}

func (e *endpoint) Done() <-chan struct{} { return e.done }

func (e *endpoint) Err() error {
	e.n.mu.Lock()
	defer e.n.mu.Unlock()
	return e.err
}

// Disconnect ends the connection. Every posted Send has been delivered
// already, so there is nothing to wait for.
func (e *endpoint) Disconnect(ctx context.Context) error { return e.Close() }

// Abort ends the connection at once, as Close does, but does not wait for
// the receive path (rdma.Endpoint's contract): a caller may hold a lock
// that OnRecv's function takes, or be that function. Close still releases
// the endpoint.
func (e *endpoint) Abort() {
	e.n.mu.Lock()
	defer e.n.mu.Unlock()
	if e.state == stConnected {
		e.peer.endLocked(rdma.ErrDisconnected)
	}
	e.endLocked(rdma.ErrClosed)
}

// Close ends the connection: the peer sees rdma.ErrDisconnected, posted
// receives on both sides complete flushed.
func (e *endpoint) Close() error {
	e.n.mu.Lock()
	if e.state == stClosed {
		e.n.mu.Unlock()
		return nil
	}
	if e.state == stConnected {
		e.peer.endLocked(rdma.ErrDisconnected)
	}
	e.endLocked(rdma.ErrClosed)
	e.state = stClosed
	e.pd.eps--
	dgo := e.dgo
	var drv chan struct{}
	if e.driving {
		drv = e.drvDone
	}
	e.n.mu.Unlock()
	// As on a real provider, no OnRecv function runs after Close.
	if dgo {
		<-e.ddone
	}
	if drv != nil {
		<-drv
	}
	return nil
}

// directEndpoint is an endpoint that implements rdma.DirectReceiver:
// receive completions go to OnRecv's function on a goroutine of the
// endpoint, as they would from a provider's receive path. (The sender's
// goroutine could not run it: it may hold a lock the function takes.)
type directEndpoint struct{ *endpoint }

func (d directEndpoint) OnRecv(fn func(*rdma.Completion)) {
	e := d.endpoint
	e.n.mu.Lock()
	defer e.n.mu.Unlock()
	e.direct = fn
	e.pushLocked(cqEntry{c: rdma.Completion{Op: rdma.OpMarker}})
	if fn != nil && !e.dgo && e.state < stEnded {
		e.dgo = true
		go e.deliver()
	}
}

// deliver runs OnRecv's function on each receive completion, in order,
// until the connection has ended and every one is delivered.
func (e *endpoint) deliver() {
	defer close(e.ddone)
	for {
		e.n.mu.Lock()
		if e.driving {
			// A caller of Drive runs the receive path; it wakes us
			// when it stops.
			e.n.mu.Unlock()
			<-e.dwake
			continue
		}
		q, fn, end := e.dq, e.direct, e.state >= stEnded
		e.dq = nil
		e.dbusy = len(q) > 0
		e.n.mu.Unlock()
		for i := range q {
			if fn != nil {
				fn(&q[i])
			}
		}
		if len(q) > 0 {
			e.n.mu.Lock()
			e.dbusy = false
			e.n.mu.Unlock()
			continue
		}
		if end {
			return
		}
		<-e.dwake
	}
}

// Drive implements rdma.Driver: the caller delivers the receive
// completions to OnRecv's function itself, while the delivery goroutine
// stands aside.
func (d directEndpoint) Drive(ready func() bool) bool {
	e := d.endpoint
	e.n.mu.Lock()
	if e.driving || e.dbusy {
		e.n.mu.Unlock()
		return false // the delivery wakes the caller; then it drives
	}
	if e.interrupted {
		e.interrupted = false
		e.n.mu.Unlock()
		return true
	}
	e.driving = true
	e.drvDone = make(chan struct{})
	if e.drvWake == nil {
		e.drvWake = make(chan struct{}, 1)
	}
	e.n.mu.Unlock()
	defer func() {
		e.n.mu.Lock()
		e.driving = false
		close(e.drvDone)
		e.n.mu.Unlock()
		signal(e.dwake) // the delivery goroutine takes over
	}()
	delivered := false
	for {
		e.n.mu.Lock()
		q, fn, end, intr := e.dq, e.direct, e.state >= stEnded, e.interrupted
		e.dq, e.interrupted = nil, false
		e.n.mu.Unlock()
		for i := range q {
			if fn != nil {
				fn(&q[i])
			}
			delivered = true
		}
		if len(q) > 0 {
			continue // more may have come meanwhile
		}
		if intr || end || (ready == nil && delivered) || (ready != nil && ready()) {
			return true
		}
		<-e.drvWake
	}
}

// Interrupt makes a Drive in progress, or the next one, return.
func (d directEndpoint) Interrupt() {
	e := d.endpoint
	e.n.mu.Lock()
	e.interrupted = true
	if e.driving {
		signal(e.drvWake)
	}
	e.n.mu.Unlock()
}

// Background does nothing: the only completion that needs incoming data
// on a real wire, an RDMA Read's, is here complete when posted.
func (d directEndpoint) Background() {}

var _ rdma.Driver = directEndpoint{}

var _ rdma.DirectReceiver = directEndpoint{}

var _ rdma.Endpoint = (*endpoint)(nil)
