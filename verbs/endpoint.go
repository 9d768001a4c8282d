//go:build linux && cgo && verbs

package verbs

/*
#include <stdlib.h>
#include "cverbs.h"
*/
import "C"

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"github.com/smbdirect/smbdirect/rdma"
)

const (
	stIdle = iota
	stConnecting
	stConnected
	stEnded
)

// recvBit marks a receive's wr_id; a send's wr_id is its sequence number.
const recvBit = 1 << 63

type sendSlot struct {
	id       uint64
	op       rdma.Opcode
	mr       *mr
	signaled bool
	hidden   bool      // unsignaled by the caller, signaled by us (see PostSend)
	inv      rdma.STag // of a local invalidate
	n        int       // bytes: a send queue completion's byte_len is not defined
}

type recvSlot struct {
	id  uint64
	seq uint64 // posting order, for the flushes Close makes up
	mr  *mr
}

type endpoint struct {
	pd  *pd
	cm  *cmChannel
	cch *C.struct_ibv_comp_channel
	cq  *C.struct_ibv_cq
	cqw *fdWaiter

	sqDepth, rqDepth int

	mu           sync.Mutex
	state        int
	closed       bool
	id           *C.struct_rdma_cm_id
	qp           *C.struct_ibv_qp
	sends        []sendSlot // a ring in posting order: sends complete in order
	sHead        uint64     // next sequence number to post
	sTail        uint64     // oldest not retired
	lastSignaled uint64     // sequence number of the last signaled send
	recvs        []recvSlot
	free         []int32 // free receive slots
	rSeq         uint64
	pending      []int32 // receives posted before the queue pair existed
	info         rdma.ConnInfo
	err          error
	done         chan struct{}
	watch        chan struct{} // closed when the event watcher has ended

	pollMu  sync.Mutex // one Poll at a time reaps the CQ
	cwc     [32]C.struct_vb_wc
	out     []rdma.Completion
	nOut    int
	pollErr error
	tryFn   func(uintptr) bool
	flushed []rdma.Completion // what Close flushed, for Poll
}

func (d *pd) NewEndpoint(cfg rdma.EndpointConfig) (rdma.Endpoint, error) {
	sq, rq := cfg.SendQueueDepth, cfg.RecvQueueDepth
	if sq <= 0 {
		sq = 128
	}
	if rq <= 0 {
		rq = 256
	}
	if sq > d.maxWR || rq > d.maxWR {
		return nil, fmt.Errorf("%w: queue depths %d/%d, device %s allows %d", rdma.ErrInvalidArgument, sq, rq, d.name, d.maxWR)
	}
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil, rdma.ErrClosed
	}
	d.eps++
	d.mu.Unlock()
	e := &endpoint{pd: d, sqDepth: sq, rqDepth: rq, done: make(chan struct{}),
		sends: make([]sendSlot, sq), recvs: make([]recvSlot, rq),
		free: make([]int32, rq), pending: make([]int32, 0, rq)}
	for i := range e.free {
		e.free[i] = int32(rq - 1 - i)
	}
	e.tryFn = e.tryPoll
	fail := func(err error) (rdma.Endpoint, error) {
		e.release()
		return nil, err
	}
	var err error
	if e.cm, err = newCMChannel(); err != nil {
		return fail(err)
	}
	if e.cch = C.ibv_create_comp_channel(d.ctx); e.cch == nil {
		return fail(fmt.Errorf("verbs: ibv_create_comp_channel: %w", rdma.ErrQueueFull))
	}
	if e.cqw, err = newWaiter(e.cch.fd, "verbs-cq"); err != nil {
		return fail(err)
	}
	if e.cq = C.ibv_create_cq(d.ctx, C.int(sq+rq), nil, e.cch, 0); e.cq == nil {
		return fail(fmt.Errorf("verbs: ibv_create_cq of %d entries: %w", sq+rq, rdma.ErrQueueFull))
	}
	if rc := C.ibv_req_notify_cq(e.cq, 0); rc != 0 {
		return fail(fmt.Errorf("verbs: ibv_req_notify_cq: %w", errnoErr(syscall.Errno(rc))))
	}
	return e, nil
}

// release frees what the endpoint holds; the queue pair and id are gone.
func (e *endpoint) release() {
	if e.cqw != nil {
		e.cqw.close()
	}
	if e.cq != nil {
		C.ibv_destroy_cq(e.cq)
	}
	if e.cch != nil {
		C.ibv_destroy_comp_channel(e.cch)
	}
	if e.cm != nil {
		e.cm.close()
	}
	e.pd.mu.Lock()
	e.pd.eps--
	e.pd.mu.Unlock()
}

func (e *endpoint) Connect(ctx context.Context, addr string, params rdma.ConnParams) error {
	if len(params.PrivateData) > rdma.MaxPrivateData {
		return fmt.Errorf("%w: %d bytes of private data", rdma.ErrInvalidArgument, len(params.PrivateData))
	}
	host, port, err := splitAddr(addr)
	if err != nil {
		return err
	}
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return rdma.ErrClosed
	}
	if e.state != stIdle {
		e.mu.Unlock()
		return fmt.Errorf("%w: endpoint already used", rdma.ErrInvalidArgument)
	}
	e.state = stConnecting
	e.mu.Unlock()
	var id *C.struct_rdma_cm_id
	if C.rdma_create_id(e.cm.ch, &id, nil, C.RDMA_PS_TCP) != 0 {
		e.end(fmt.Errorf("%w: rdma_create_id failed", rdma.ErrQueueFull))
		return e.Err()
	}
	e.mu.Lock()
	e.id = id
	e.mu.Unlock()
	ms := 5000
	if dl, ok := ctx.Deadline(); ok {
		ms = max(1, min(ms, int(time.Until(dl)/time.Millisecond)))
	}
	ch, cp := C.CString(host), C.CString(port)
	rc := C.vb_resolve(id, ch, cp, C.int(ms))
	C.free(unsafe.Pointer(ch))
	C.free(unsafe.Pointer(cp))
	if rc != 0 {
		return e.fail(fmt.Errorf("verbs: resolving %s: %w", addr, errnoErr(syscall.Errno(rc))))
	}
	if err := e.cm.await(ctx, id, C.RDMA_CM_EVENT_ADDR_RESOLVED, "address resolution", false); err != nil {
		return e.fail(err)
	}
	if id.verbs != e.pd.ctx {
		return e.fail(fmt.Errorf("%w: %s is reached through device %s, the PD is on %s", rdma.ErrInvalidArgument,
			addr, C.GoString(C.vb_dev_name(id.verbs)), e.pd.name))
	}
	if rc, err := C.rdma_resolve_route(id, C.int(ms)); rc != 0 {
		return e.fail(fmt.Errorf("verbs: rdma_resolve_route to %s: %w", addr, errnoErr(err)))
	}
	if err := e.cm.await(ctx, id, C.RDMA_CM_EVENT_ROUTE_RESOLVED, "route resolution", false); err != nil {
		return e.fail(err)
	}
	ird, ord := e.pd.clamp(params)
	return e.establish(ctx, id, false, params.PrivateData, ird, ord, nil)
}

// fail ends a connection attempt with err.
func (e *endpoint) fail(err error) error {
	e.end(err)
	return err
}

// establish creates the queue pair on id, posts the receives posted so
// far, and connects (or accepts) and waits for the connection.
func (e *endpoint) establish(ctx context.Context, id *C.struct_rdma_cm_id, accept bool, pdata []byte, ird, ord int, peerData []byte) error {
	e.mu.Lock()
	if e.closed || (accept && e.state != stIdle) {
		e.mu.Unlock()
		C.rdma_reject(id, nil, 0)
		C.rdma_destroy_id(id)
		if e.closed {
			return rdma.ErrClosed
		}
		return fmt.Errorf("%w: endpoint already used", rdma.ErrInvalidArgument)
	}
	e.state = stConnecting
	e.id = id
	qp := C.vb_create_qp(id, e.pd.pd, e.cq, C.uint32_t(e.sqDepth), C.uint32_t(e.rqDepth))
	if qp == nil {
		e.mu.Unlock()
		if accept {
			C.rdma_reject(id, nil, 0)
		}
		return e.fail(fmt.Errorf("verbs: rdma_create_qp: %w", rdma.ErrQueueFull))
	}
	e.qp = qp
	for _, i := range e.pending {
		s := &e.recvs[i]
		if rc := C.vb_post_recv(qp, C.uint64_t(recvBit|uint64(i)), C.uint64_t(s.mr.addr), C.uint32_t(len(s.mr.buf)), C.uint32_t(s.mr.lkey)); rc != 0 {
			e.mu.Unlock()
			return e.fail(fmt.Errorf("verbs: ibv_post_recv: %w", errnoErr(postErr(rc))))
		}
	}
	e.pending = e.pending[:0]
	e.mu.Unlock()
	var p unsafe.Pointer
	if len(pdata) > 0 {
		p = C.CBytes(pdata)
		defer C.free(p)
	}
	acc := C.int(0)
	if accept {
		acc = 1
	}
	if rc := C.vb_connect(id, p, C.uint8_t(len(pdata)), C.uint8_t(ird), C.uint8_t(ord), acc); rc != 0 {
		return e.fail(fmt.Errorf("verbs: connecting: %w", errnoErr(syscall.Errno(rc))))
	}
	if err := e.cm.await(ctx, id, C.RDMA_CM_EVENT_ESTABLISHED, "the connection", !e.pd.iwarp); err != nil {
		return e.fail(err)
	}
	if !accept {
		// The responder fits its values to ours (see Accept): ours stand.
		peerData = e.cm.privateData(!e.pd.iwarp)
	}
	e.mu.Lock()
	if e.state != stConnecting {
		e.mu.Unlock()
		return e.Err()
	}
	e.state = stConnected
	e.info = rdma.ConnInfo{LocalAddr: idAddr(id, false), RemoteAddr: idAddr(id, true), ORD: ord, IRD: ird,
		PrivateData: peerData, Provider: Name, Detail: fmt.Sprintf("device %s (%s)", e.pd.name, e.pd.transport())}
	e.watch = make(chan struct{})
	e.mu.Unlock()
	go e.watchEvents()
	return nil
}

// watchEvents ends the connection on the peer's disconnect or the device's
// removal. It runs until the endpoint is closed.
func (e *endpoint) watchEvents() {
	defer close(e.watch)
	for {
		if err := e.cm.next(context.Background()); err != nil {
			if !errors.Is(err, rdma.ErrClosed) {
				e.end(err)
			}
			return
		}
		switch e.cm.ev._type {
		case C.RDMA_CM_EVENT_DISCONNECTED:
			e.end(rdma.ErrDisconnected)
		case C.RDMA_CM_EVENT_DEVICE_REMOVAL:
			e.end(fmt.Errorf("%w: the RDMA device %s was removed", rdma.ErrDisconnected, e.pd.name))
		}
	}
}

// end records why the connection ended, moves the queue pair to the error
// state (its outstanding work completes as flushed, the peer is told) and
// wakes Poll.
func (e *endpoint) end(err error) {
	e.mu.Lock()
	if e.state == stEnded {
		e.mu.Unlock()
		return
	}
	was := e.state
	e.state = stEnded
	e.err = err
	close(e.done)
	id := e.id
	e.mu.Unlock()
	if id != nil && was >= stConnecting {
		C.rdma_disconnect(id)
	}
	// Poll may wait for a completion that will not come: with nothing
	// outstanding there is nothing to flush. The past deadline wakes it to
	// look at the state (see fdWaiter.wait).
	e.cqw.f.SetReadDeadline(past)
}

func (e *endpoint) Info() rdma.ConnInfo {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.info
}

func (e *endpoint) Done() <-chan struct{} { return e.done }

func (e *endpoint) Err() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.err
}

// checkSGE checks a local SGE against the endpoint's PD, the region's
// bounds and rights.
func (e *endpoint) checkSGE(s rdma.SGE, write bool) (*mr, uint64, int, error) {
	if s.MR == nil {
		if s.Length != 0 || s.Offset != 0 {
			return nil, 0, 0, fmt.Errorf("%w: SGE without a region", rdma.ErrInvalidArgument)
		}
		return nil, 0, 0, nil
	}
	m, ok := s.MR.(*mr)
	if !ok || m.pd != e.pd {
		return nil, 0, 0, fmt.Errorf("%w: region of another PD", rdma.ErrLocalProtection)
	}
	n := s.Len()
	if s.Offset < 0 || n < 0 || s.Offset+n > len(m.buf) {
		return nil, 0, 0, fmt.Errorf("%w: SGE [%d, +%d) outside the region's %d bytes", rdma.ErrInvalidArgument, s.Offset, n, len(m.buf))
	}
	if !m.valid.Load() {
		return nil, 0, 0, fmt.Errorf("%w: region %v is invalidated", rdma.ErrLocalProtection, m.stag)
	}
	if write && m.access&rdma.AccessLocalWrite == 0 {
		return nil, 0, 0, fmt.Errorf("%w: region %v lacks local write", rdma.ErrLocalProtection, m.stag)
	}
	return m, m.addr + uint64(s.Offset), n, nil
}

func (e *endpoint) PostSend(wr *rdma.SendWR) error {
	var op C.int
	switch wr.Op {
	case rdma.OpSend:
		op = C.VB_SEND
	case rdma.OpSendInvalidate:
		op = C.VB_SEND_INV
	case rdma.OpWrite:
		op = C.VB_WRITE
	case rdma.OpRead:
		op = C.VB_READ
	case rdma.OpLocalInvalidate:
		// User space cannot fast-register a region, and rxe and siw
		// refuse to invalidate one from ibv_reg_mr: MR.Invalidate
		// deregisters instead.
		return fmt.Errorf("%w: local invalidate work requests (use MR.Invalidate)", rdma.ErrNotSupported)
	default:
		return fmt.Errorf("%w: opcode %v on the send queue", rdma.ErrInvalidArgument, wr.Op)
	}
	if wr.Solicited && op != C.VB_SEND && op != C.VB_SEND_INV {
		return fmt.Errorf("%w: solicited %v", rdma.ErrInvalidArgument, wr.Op)
	}
	if wr.File != nil {
		return fmt.Errorf("%w: file sources", rdma.ErrNotSupported)
	}
	m, addr, n, err := e.checkSGE(wr.Local, wr.Op == rdma.OpRead)
	if err != nil {
		return err
	}
	var lkey uint32
	if m != nil {
		lkey = m.lkey
	}
	flags := C.int(0)
	if !wr.Unsignaled {
		flags |= C.VB_F_SIGNALED
	}
	hidden := false
	if wr.Solicited {
		flags |= C.VB_F_SOLICITED
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	switch {
	case e.closed:
		return rdma.ErrClosed
	case e.state == stEnded:
		return fmt.Errorf("%w: %v", rdma.ErrNotConnected, e.err)
	case e.state != stConnected:
		return rdma.ErrNotConnected
	case e.sHead-e.sTail >= uint64(e.sqDepth):
		return rdma.ErrQueueFull
	}
	seq := e.sHead
	if wr.Unsignaled && seq-e.lastSignaled >= uint64(e.sqDepth/2) {
		// Unsignaled requests leave the send queue only when a later
		// signaled one completes: one in half a queue is signaled here,
		// its completion kept from the caller, so a caller that never
		// signals does not fill the queue.
		flags |= C.VB_F_SIGNALED
		hidden = true
	}
	if flags&C.VB_F_SIGNALED != 0 {
		e.lastSignaled = seq
	}
	if rc := C.vb_post_send(e.qp, C.uint64_t(seq), op, C.uint64_t(addr), C.uint32_t(n), C.uint32_t(lkey),
		C.uint32_t(wr.RemoteSTag), C.uint64_t(wr.RemoteAddr), C.uint32_t(wr.InvalidateSTag), flags); rc != 0 {
		return fmt.Errorf("verbs: ibv_post_send: %w", errnoErr(postErr(rc)))
	}
	e.sends[seq%uint64(e.sqDepth)] = sendSlot{id: wr.ID, op: wr.Op, mr: m, signaled: !wr.Unsignaled, hidden: hidden, inv: wr.InvalidateSTag, n: n}
	if m != nil {
		m.refs.Add(1)
	}
	e.sHead++
	return nil
}

func (e *endpoint) PostRecv(wr *rdma.RecvWR) error {
	if wr.Local.MR == nil {
		return fmt.Errorf("%w: receive without a region", rdma.ErrInvalidArgument)
	}
	m, addr, n, err := e.checkSGE(wr.Local, true)
	if err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	switch {
	case e.closed:
		return rdma.ErrClosed
	case e.state == stEnded:
		return fmt.Errorf("%w: %v", rdma.ErrNotConnected, e.err)
	case len(e.free) == 0:
		return rdma.ErrQueueFull
	}
	i := e.free[len(e.free)-1]
	if e.qp != nil {
		if rc := C.vb_post_recv(e.qp, C.uint64_t(recvBit|uint64(i)), C.uint64_t(addr), C.uint32_t(n), C.uint32_t(m.lkey)); rc != 0 {
			return fmt.Errorf("verbs: ibv_post_recv: %w", errnoErr(postErr(rc)))
		}
	} else {
		e.pending = append(e.pending, i)
	}
	e.free = e.free[:len(e.free)-1]
	e.rSeq++
	e.recvs[i] = recvSlot{id: wr.ID, seq: e.rSeq, mr: m}
	m.refs.Add(1)
	return nil
}

func (e *endpoint) Poll(ctx context.Context, wc []rdma.Completion) (int, error) {
	if len(wc) == 0 {
		return 0, nil
	}
	e.pollMu.Lock()
	defer e.pollMu.Unlock()
	e.mu.Lock()
	closed := e.closed
	e.mu.Unlock()
	if closed {
		n := copy(wc, e.flushed)
		e.flushed = e.flushed[n:]
		if n > 0 {
			return n, nil
		}
		return 0, rdma.ErrClosed
	}
	e.out, e.nOut, e.pollErr = wc, 0, nil
	err := e.cqw.wait(ctx, e.tryFn)
	n := e.nOut
	e.out = nil
	if n > 0 {
		return n, nil
	}
	if err != nil {
		return 0, err
	}
	return 0, e.pollErr
}

// tryPoll reaps completions into e.out; false means wait for the channel.
// It runs under pollMu.
func (e *endpoint) tryPoll(uintptr) bool {
	if e.reap() {
		return true
	}
	e.mu.Lock()
	closed := e.closed
	e.mu.Unlock()
	if closed {
		e.pollErr = rdma.ErrClosed
		return true
	}
	if rc := C.vb_cq_rearm(e.cch, e.cq); rc != 0 {
		e.pollErr = fmt.Errorf("verbs: completion channel: %w", syscall.Errno(rc))
		return true
	}
	return e.reap()
}

// reap moves completions from the CQ into e.out and reports whether Poll
// has something to return (completions, or the end once drained).
func (e *endpoint) reap() bool {
	if got := e.reapCQ(); got < 0 {
		e.pollErr = fmt.Errorf("verbs: ibv_poll_cq: %w", rdma.ErrProtocol)
		return true
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.nOut > 0 {
		return true
	}
	if e.state == stEnded && len(e.free) == e.rqDepth-len(e.pending) && e.onlyUnsignaledLocked() {
		// Unsignaled sends that succeeded leave no completion: once the
		// connection has ended and only they remain, they are done (a
		// flush of one still to come is dropped, see reapCQ).
		for ; e.sTail < e.sHead; e.sTail++ {
			if s := &e.sends[e.sTail%uint64(e.sqDepth)]; s.mr != nil {
				s.mr.refs.Add(-1)
			}
			e.sends[e.sTail%uint64(e.sqDepth)] = sendSlot{}
		}
		// Receives posted before a queue pair existed are flushed here.
		for len(e.pending) > 0 && e.nOut < len(e.out) {
			k := e.pending[len(e.pending)-1]
			e.pending = e.pending[:len(e.pending)-1]
			s := &e.recvs[k]
			e.out[e.nOut] = rdma.Completion{ID: s.id, Op: rdma.OpRecv,
				Err: &rdma.WorkError{Op: rdma.OpRecv, ID: s.id, Err: rdma.ErrFlushed}}
			s.mr.refs.Add(-1)
			*s = recvSlot{}
			e.free = append(e.free, k)
			e.nOut++
		}
		if e.nOut == 0 {
			e.pollErr = rdma.ErrClosed
		}
		return true
	}
	return false
}

// onlyUnsignaledLocked reports whether every outstanding send is
// unsignaled (true when none is outstanding).
func (e *endpoint) onlyUnsignaledLocked() bool {
	for i := e.sTail; i < e.sHead; i++ {
		if e.sends[i%uint64(e.sqDepth)].signaled {
			return false
		}
	}
	return true
}

// reapCQ polls the CQ into e.out and returns how many entries it took (<0
// when polling failed).
func (e *endpoint) reapCQ() int {
	want := min(len(e.out)-e.nOut, len(e.cwc))
	if want == 0 {
		return 0
	}
	got := int(C.vb_poll(e.cq, &e.cwc[0], C.int(want)))
	if got <= 0 {
		return got
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	var failed error
	for i := range got {
		w := &e.cwc[i]
		c := &e.out[e.nOut]
		*c = rdma.Completion{}
		wrid := uint64(w.wr_id)
		if wrid&recvBit != 0 {
			k := int32(wrid &^ recvBit)
			s := &e.recvs[k]
			c.ID, c.Op, c.Bytes = s.id, rdma.OpRecv, int(w.byte_len)
			if w.invalidated != 0 {
				c.Invalidated, c.InvalidatedSTag = true, rdma.STag(w.rkey)
				e.pd.invalidated(c.InvalidatedSTag)
			}
			s.mr.refs.Add(-1)
			*s = recvSlot{}
			e.free = append(e.free, k)
		} else {
			if wrid < e.sTail {
				// An unsignaled send retired at the end of the
				// connection (see reap), flushed after all.
				continue
			}
			// Completions of a send queue come in order: an unsignaled
			// request before this one has completed too.
			var s sendSlot
			for e.sTail <= wrid && e.sTail < e.sHead {
				s = e.sends[e.sTail%uint64(e.sqDepth)]
				e.sends[e.sTail%uint64(e.sqDepth)] = sendSlot{}
				if s.mr != nil {
					s.mr.refs.Add(-1)
				}
				e.sTail++
			}
			c.ID, c.Op = s.id, s.op
			if s.op == rdma.OpRead || s.op == rdma.OpWrite {
				c.Bytes = s.n
			}
			if s.op == rdma.OpLocalInvalidate && w.status == C.IBV_WC_SUCCESS {
				e.pd.invalidated(s.inv)
			}
			if s.hidden && w.status == C.IBV_WC_SUCCESS {
				continue
			}
		}
		if w.status != C.IBV_WC_SUCCESS {
			c.Err = &rdma.WorkError{Op: c.Op, ID: c.ID, Err: statusErr(w)}
			if failed == nil {
				failed = c.Err
				if w.status == C.IBV_WC_WR_FLUSH_ERR {
					// The device flushed before the CM told of the end
					// (siw does when the peer's TCP connection closes):
					// the connection has ended all the same, and Err
					// must say so by the time a flush is seen.
					failed = fmt.Errorf("%w: the queue pair was flushed", rdma.ErrDisconnected)
				}
			}
		}
		e.nOut++
	}
	if failed != nil && e.state != stEnded {
		// The queue pair is in the error state: the connection is over.
		e.mu.Unlock()
		e.end(failed)
		e.mu.Lock()
	}
	return got
}

// statusErr maps a work completion's status to the rdma errors.
func statusErr(w *C.struct_vb_wc) error {
	var s error
	switch w.status {
	case C.IBV_WC_WR_FLUSH_ERR:
		return rdma.ErrFlushed
	case C.IBV_WC_LOC_LEN_ERR:
		s = rdma.ErrLocalLength
	case C.IBV_WC_LOC_PROT_ERR, C.IBV_WC_MW_BIND_ERR:
		s = rdma.ErrLocalProtection
	case C.IBV_WC_REM_ACCESS_ERR:
		s = rdma.ErrRemoteAccess
	case C.IBV_WC_REM_INV_REQ_ERR, C.IBV_WC_REM_OP_ERR, C.IBV_WC_RNR_RETRY_EXC_ERR, C.IBV_WC_REM_ABORT_ERR:
		s = rdma.ErrRemoteOperation
	case C.IBV_WC_RETRY_EXC_ERR, C.IBV_WC_RESP_TIMEOUT_ERR:
		s = rdma.ErrDisconnected
	default:
		s = rdma.ErrProtocol
	}
	return fmt.Errorf("%w: %s (vendor error %#x)", s, C.GoString(C.ibv_wc_status_str(uint32(w.status))), uint32(w.vendor_err))
}

func (e *endpoint) Disconnect(ctx context.Context) error {
	e.mu.Lock()
	st, closed := e.state, e.closed
	e.mu.Unlock()
	if closed {
		return rdma.ErrClosed
	}
	if st != stConnected {
		if st == stEnded {
			return nil
		}
		return rdma.ErrNotConnected
	}
	e.end(rdma.ErrClosed)
	return nil
}

func (e *endpoint) Abort() {
	e.end(fmt.Errorf("%w: aborted", rdma.ErrClosed))
}

func (e *endpoint) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.mu.Unlock()
	e.end(rdma.ErrClosed)
	e.mu.Lock()
	e.closed = true
	watch := e.watch
	e.mu.Unlock()
	// Wake and wait out the event watcher and any Poll before the
	// resources they use go.
	e.cm.w.close()
	if watch != nil {
		<-watch
	}
	e.cqw.close()
	e.pollMu.Lock()
	defer e.pollMu.Unlock()
	e.mu.Lock()
	id := e.id
	if e.qp != nil {
		// After this no data is placed into any region anymore.
		C.rdma_destroy_qp(id)
		e.qp = nil
	}
	e.mu.Unlock()
	// What the CQ holds is delivered; what never completed is flushed,
	// in posting order, so every work request completes once.
	buf := make([]rdma.Completion, len(e.cwc))
	for {
		e.out, e.nOut = buf, 0
		if e.reapCQ() <= 0 {
			break
		}
		e.flushed = append(e.flushed, buf[:e.nOut]...)
	}
	e.out = nil
	e.mu.Lock()
	for ; e.sTail < e.sHead; e.sTail++ {
		s := &e.sends[e.sTail%uint64(e.sqDepth)]
		if s.mr != nil {
			s.mr.refs.Add(-1)
		}
		if s.signaled {
			e.flushed = append(e.flushed, rdma.Completion{ID: s.id, Op: s.op, Err: &rdma.WorkError{Op: s.op, ID: s.id, Err: rdma.ErrFlushed}})
		}
		*s = sendSlot{}
	}
	var rs []recvSlot
	for i := range e.recvs {
		if s := &e.recvs[i]; s.mr != nil {
			s.mr.refs.Add(-1)
			rs = append(rs, *s)
			*s = recvSlot{}
		}
	}
	slices.SortFunc(rs, func(a, b recvSlot) int { return cmp.Compare(a.seq, b.seq) })
	for _, s := range rs {
		e.flushed = append(e.flushed, rdma.Completion{ID: s.id, Op: rdma.OpRecv, Err: &rdma.WorkError{Op: rdma.OpRecv, ID: s.id, Err: rdma.ErrFlushed}})
	}
	e.mu.Unlock()
	if id != nil {
		C.rdma_destroy_id(id)
	}
	C.ibv_destroy_cq(e.cq)
	C.ibv_destroy_comp_channel(e.cch)
	C.rdma_destroy_event_channel(e.cm.ch)
	e.pd.mu.Lock()
	e.pd.eps--
	e.pd.mu.Unlock()
	return nil
}

// postErr turns ibv_post_send/recv's result into an errno: providers
// return it positive or, as siw does, negative.
func postErr(rc C.int) syscall.Errno {
	if rc < 0 {
		rc = -rc
	}
	return syscall.Errno(rc)
}
