package smbd

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"

	"github.com/smbdirect/smbdirect/rdma"
)

// pollState is the taking of completions from the provider.
type pollState struct {
	// pollMu orders the processing of completions between the poll loop
	// and writers that reap them (reapLocked); pollKick wakes the poll
	// loop. reap is reapLocked's batch (under pollMu).
	pollMu   sync.Mutex
	pollKick chan struct{}
	reap     [8]rdma.Completion
	// direct: receive completions arrive through the provider's
	// DirectReceiver on its goroutine; early holds those that came before
	// the queued ones (up to the marker) were processed.
	direct bool
	early  []rdma.Completion
}

// driveState is the running of the provider's receive path by a waiting
// goroutine of ours.
type driveState struct {
	// drv runs the provider's receive path on a waiting goroutine (see
	// awaitLocked); drivers counts the goroutines in drv.Drive, writerDrives
	// says one of them is a writer waiting for credits, inRx that the
	// receive path is delivering on this goroutine now.
	drv          rdma.Driver
	drivers      int
	writerDrives bool
	inRx         bool
	changed      func() bool   // c.changedSince, bound once
	seq          atomic.Uint64 // state changes (broadcastLocked)
	driveSeq     atomic.Uint64 // seq when the driver started
}

// broadcastLocked tells waiters that c's state changed: those on c.cond,
// and the one running the receive path, which looks at c.seq before it
// blocks for more data.
func (c *Conn) broadcastLocked() {
	c.seq.Add(1)
	c.cond.Broadcast()
}

// wakeLocked wakes every waiter, including one running the receive path
// that is blocked for incoming data.
func (c *Conn) wakeLocked() {
	c.broadcastLocked()
	if c.drivers > 0 && !c.inRx {
		c.drv.Interrupt()
	}
}

// awaitLocked waits, with c.mu held, for c's state to change. When the
// provider can run its receive path on this goroutine and no other
// goroutine runs it, this one does: a message then reaches its reader as
// on TCP, without a goroutine hand-off. Else it waits on c.cond. *lost is
// the caller's, false at first: it is set when another goroutine ran the
// receive path, so the caller checks its condition again (c.mu was
// released) before waiting on c.cond.
func (c *Conn) awaitLocked(lost *bool, writer bool) {
	if *lost || c.drv == nil || !c.direct || c.drivers > 0 {
		// One goroutine of c drives at a time; the others hear of its
		// deliveries on c.cond.
		*lost = false
		c.cond.Wait()
		return
	}
	c.drivers, c.writerDrives = 1, writer
	c.driveSeq.Store(c.seq.Load())
	c.mu.Unlock()
	ok := c.drv.Drive(c.changed)
	c.mu.Lock()
	c.drivers, c.writerDrives = 0, false
	*lost = !ok
}

// changedSince is the driver's condition (c.changed): c's state changed
// since it started, so it returns to look.
func (c *Conn) changedSince() bool { return c.seq.Load() != c.driveSeq.Load() }

// pollLoop takes completions from the endpoint. When receives come
// through the receive path (c.drv), it polls only while someone needs a
// completion: before the switch to direct delivery, while RDMA transfers
// are in flight, and for writers out of send slots (which reap what they
// can themselves first). Otherwise it waits to be kicked: every wake-up
// costs about as much as a message on a small VM, and most completions
// are of sends nobody waits for.
func (c *Conn) pollLoop() {
	defer c.loops.Done()
	var wc [16]rdma.Completion
	for {
		c.mu.Lock()
		busy := c.drv == nil || !c.direct || c.rdmaInflight > 0 || c.slotWaiters > 0 || c.slotWanted
		c.mu.Unlock()
		if !busy {
			select {
			case <-c.pollKick:
			case <-c.ep.Done():
			}
		}
		c.pollMu.Lock()
		n, err := c.ep.Poll(context.Background(), wc[:])
		if err != nil {
			// Closed and drained: every completion has been seen, so no
			// buffer is in use by the provider anymore.
			c.mu.Lock()
			e := c.ep.Err()
			if e == nil {
				e = err
			}
			c.failLocked(e)
			c.mu.Unlock()
			return
		}
		c.mu.Lock()
		for i := range wc[:n] {
			c.completionOrMarkerLocked(&wc[i])
		}
		c.slotWanted = false // maybeControl asks again if it still lacks one
		c.mu.Unlock()
		c.pollMu.Unlock()
		c.maybeControl()
	}
}

// kickPoll makes the poll loop look at the completion queue.
func (c *Conn) kickPoll() {
	select {
	case c.pollKick <- struct{}{}:
	default:
	}
}

// pollNow is a context that has ended: Poll with it does not wait.
var pollNow = func() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}()

// reapLocked takes the completions already there, unless the poll loop is
// taking them (it holds pollMu for a Poll and the processing of its
// batch, so batches are processed in order).
func (c *Conn) reapLocked() {
	if !c.pollMu.TryLock() {
		return
	}
	defer c.pollMu.Unlock()
	for {
		n, _ := c.ep.Poll(pollNow, c.reap[:])
		for i := range c.reap[:n] {
			c.completionOrMarkerLocked(&c.reap[i])
		}
		if n < len(c.reap) {
			return
		}
	}
}

// directRecv takes a receive completion on the goroutine running the
// receive path (the provider's, or one of ours in Drive).
func (c *Conn) directRecv(w *rdma.Completion) {
	c.mu.Lock()
	if !c.direct {
		c.early = append(c.early, *w)
		c.mu.Unlock()
		return
	}
	c.inRx = true
	c.completionLocked(w)
	c.inRx = false
	c.unlockControl()
}

func (c *Conn) completionOrMarkerLocked(w *rdma.Completion) {
	if w.Op == rdma.OpMarker {
		// Every receive queued before the switch has been processed: take
		// the ones that came directly meanwhile, in order.
		c.direct = true
		for i := range c.early {
			c.completionLocked(&c.early[i])
		}
		c.early = nil
		return
	}
	c.completionLocked(w)
}

func (c *Conn) completionLocked(w *rdma.Completion) {
	if w.ID&opBit != 0 {
		c.rdmaCompletionLocked(w.ID, w.Err)
		return
	}
	if w.Op != rdma.OpRecv {
		c.sendDoneLocked(int(w.ID))
		if w.Err != nil && !errors.Is(w.Err, rdma.ErrFlushed) {
			c.failLocked(w.Err)
		}
		c.broadcastLocked()
		return
	}
	slot := int(w.ID)
	c.cr.posted--
	if w.Err != nil {
		c.freeRecv = append(c.freeRecv, slot)
		if !errors.Is(w.Err, rdma.ErrFlushed) {
			c.failLocked(w.Err)
		}
		return
	}
	if err := c.receiveLocked(slot, c.recvMR[slot].Bytes()[:w.Bytes]); err != nil {
		c.freeRecv = append(c.freeRecv, slot)
		c.failLocked(err)
		c.ep.Abort() // does not wait for the receive path, so c.mu may stay held
		return
	}
	c.broadcastLocked()
}
