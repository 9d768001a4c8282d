package iwarp

import (
	"context"
	"sync"

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
}

func newCQ(capacity int) *cq {
	return &cq{ring: make([]rdma.Completion, capacity), wake: make(chan struct{}, 1)}
}

func (q *cq) push(c rdma.Completion) {
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

func (q *cq) poll(ctx context.Context, out []rdma.Completion) (int, error) {
	if len(out) == 0 {
		return 0, nil
	}
	for {
		q.mu.Lock()
		k := 0
		for k < len(out) && q.n > 0 {
			out[k] = q.ring[q.head]
			q.ring[q.head] = rdma.Completion{}
			q.head = (q.head + 1) % len(q.ring)
			q.n--
			k++
		}
		closed := q.closed
		more := q.n > 0
		q.mu.Unlock()
		if more {
			q.signal() // pass the wake-up on to another poller
		}
		if k > 0 {
			return k, nil
		}
		if closed {
			return 0, rdma.ErrClosed
		}
		select {
		case <-q.wake:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}
