package iwarp

import (
	"sync"
	"sync/atomic"

	"github.com/smbdirect/smbdirect/rdma"
)

// cq is a completion queue: a ring that grows only up to the number of
// outstanding work requests, with a one-slot channel to wake a poller.
type cq struct {
	mu     sync.Mutex
	ring   []rdma.Completion
	head   int
	n      int
	closed bool // no more completions will come
	wake   chan struct{}
	// driving is set while a Poll runs the receive path as it waits
	// (poll.go): a completion pushed by another goroutine interrupts it
	// (interrupt), one the receive path pushes (pushRx) is seen by it.
	driving   atomic.Bool
	interrupt func()
}

func newCQ(capacity int) *cq {
	return &cq{ring: make([]rdma.Completion, capacity), wake: make(chan struct{}, 1)}
}

// push queues a completion produced outside the receive path.
func (q *cq) push(c rdma.Completion) {
	q.pushRx(c)
	if q.driving.Load() && q.driving.Swap(false) {
		q.interrupt()
	}
}

// pushRx queues a completion produced by the receive path.
func (q *cq) pushRx(c rdma.Completion) {
	q.mu.Lock()
	if q.n == len(q.ring) {
		// Cannot happen while completions are bounded by posted work, but
		// never drop one: grow.
		r := make([]rdma.Completion, 2*len(q.ring))
		for i := 0; i < q.n; i++ {
			r[i] = q.ring[(q.head+i)%len(q.ring)]
		}
		q.ring, q.head = r, 0
	}
	q.ring[(q.head+q.n)%len(q.ring)] = c
	q.n++
	q.mu.Unlock()
	q.signal()
}

func (q *cq) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// close marks the queue drained-at-end: Poll returns ErrClosed once empty.
func (q *cq) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	q.signal()
}

// take moves up to len(out) completions to out. closed: the queue is
// drained for good.
func (q *cq) take(out []rdma.Completion) (k int, closed bool) {
	q.mu.Lock()
	for k < len(out) && q.n > 0 {
		out[k] = q.ring[q.head]
		q.ring[q.head] = rdma.Completion{}
		q.head = (q.head + 1) % len(q.ring)
		q.n--
		k++
	}
	closed = q.closed
	more := q.n > 0
	q.mu.Unlock()
	if more {
		q.signal() // pass the wake-up on to another poller
	}
	return k, closed
}

// ready reports whether Poll has something to return.
func (q *cq) ready() bool {
	q.mu.Lock()
	r := q.n > 0 || q.closed
	q.mu.Unlock()
	return r
}
