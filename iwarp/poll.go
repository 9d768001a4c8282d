package iwarp

import (
	"context"
	"sync"

	"github.com/smbdirect/smbdirect/rdma"
)

// Poll waits for completions the way Drive waits for a message: when what
// it waits for needs incoming data (a posted receive, an RDMA Read) and no
// DirectReceiver takes the receives, the waiting goroutine runs the
// receive path itself, so a completion reaches it with no goroutine
// hand-off (on loopback a 64-byte Send ping-pong through Poll took twice
// TCP's round trip with the hand-off). A completion another goroutine
// produces meanwhile (a Send or Write written by the transmit goroutine)
// interrupts it; so does the end of ctx.

// pollCtx watches the context of a driving Poll, so that its end
// interrupts the drive. The registration is kept for the next Poll with
// the same context (a poll loop's): registering one per Poll would
// allocate per wait.
type pollCtx struct {
	pollMu     sync.Mutex
	pollWatch  context.Context
	pollStop   func() bool
	pollReady  func() bool // e.cq.ready, bound once
	pollCancel func()      // e.interruptPoll, bound once
}

func (e *endpoint) Poll(ctx context.Context, wc []rdma.Completion) (int, error) {
	if len(wc) == 0 {
		return 0, nil
	}
	q := e.cq
	for {
		n, closed := q.take(wc)
		if n > 0 {
			return n, nil
		}
		if closed {
			return 0, rdma.ErrClosed
		}
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		if e.pollDrive(ctx) {
			continue
		}
		select {
		case <-q.wake:
		case <-ctx.Done():
			// Completions that came with the end of ctx go first.
			if n, _ := q.take(wc); n > 0 {
				return n, nil
			}
			return 0, ctx.Err()
		}
	}
}

// pollDrive runs the receive path until a completion is queued, when the
// completion Poll waits for may come from it. It returns false when Poll
// is to wait on the queue instead.
func (e *endpoint) pollDrive(ctx context.Context) bool {
	e.mu.Lock()
	d := e.drv
	rx := e.rqHead != e.rqTail || len(e.orq) > 0
	e.mu.Unlock()
	if !rx || d == nil || d.rc == nil || e.direct.Load() != nil {
		return false
	}
	if ctx.Done() != nil && !e.watchCtx(ctx) {
		return false
	}
	q := e.cq
	q.driving.Store(true)
	if q.ready() {
		// Pushed before the flag was up: no interrupt will come.
		q.driving.Store(false)
		return true
	}
	ok := e.Drive(e.pollReady)
	q.driving.Store(false)
	return ok
}

// watchCtx makes the end of ctx interrupt a drive of Poll. It returns
// false when ctx has ended.
func (e *endpoint) watchCtx(ctx context.Context) bool {
	e.pollMu.Lock()
	defer e.pollMu.Unlock()
	if e.pollWatch != ctx {
		if e.pollStop != nil {
			e.pollStop()
		}
		e.pollWatch, e.pollStop = ctx, context.AfterFunc(ctx, e.pollCancel)
	}
	return ctx.Err() == nil
}

// unwatchCtx drops the watch of Poll's last context (at Close).
func (e *endpoint) unwatchCtx() {
	e.pollMu.Lock()
	if e.pollStop != nil {
		e.pollStop()
	}
	e.pollWatch, e.pollStop = nil, nil
	e.pollMu.Unlock()
}

// interruptPoll makes a driving Poll return to look at the queue. It takes
// no lock: completions are pushed with e.mu held.
func (e *endpoint) interruptPoll() {
	if d := e.driver(); d != nil && d.rc != nil {
		d.intr.Store(true)
		d.conn.SetReadDeadline(aLongTimeAgo)
	}
}
