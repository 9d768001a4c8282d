package iwarp

import (
	"errors"
	"io"
	"iter"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// The receive path runs as a coroutine (iter.Pull) that whichever goroutine
// waits for it resumes. An application goroutine waiting for a message runs
// the receive path itself and blocks in the socket read, as on TCP: the
// message reaches it with no goroutine hand-off. (Measured on loopback: one
// channel hand-off per direction makes a 64-byte round trip 38 µs instead
// of 21 µs; resuming a coroutine costs nothing measurable.)
//
// The endpoint's own goroutine runs the receive path when nobody else does:
// from the start, and idleDrive after the last application driver left, so
// keepalives, RDMA Read Requests and flow control go on while the
// application is busy elsewhere. It gives the receive path up to an
// application goroutine that asked for it once it has delivered something
// (which wakes that goroutine).
type rxDrive struct {
	mu    sync.Mutex // held by the goroutine resuming the coroutine
	next  func() (struct{}, bool)
	ended bool // the coroutine returned: the connection is over

	rc syscall.RawConn // nil: plain blocking reads, only the endpoint's goroutine drives

	// Owned by the goroutine holding mu (and the coroutine it runs).
	app      bool        // an application goroutine drives
	ready    func() bool // its condition to return
	progress bool        // data came in during this drive
	handed   bool        // the endpoint's goroutine delivered something after wanted was set
	deadline time.Time

	wanted atomic.Bool   // an application goroutine found the receive path busy
	intr   atomic.Bool   // Interrupt was called
	drives atomic.Uint64 // Drive calls: the endpoint's goroutine watches for a pause
	wake   chan struct{}
}

// idleDrive is how long the receive path may go without a driver before
// the endpoint's goroutine takes it up again; handOver how long it waits
// at first after handing the path to a goroutine that asked for it (which
// may take a while to be scheduled on a busy machine).
const (
	idleDrive = 500 * time.Microsecond
	handOver  = 5 * time.Millisecond
)

// aLongTimeAgo is a read deadline that has passed: it wakes a blocked read.
var aLongTimeAgo = time.Unix(1, 0)

func newRxDrive(conn net.Conn) *rxDrive {
	d := &rxDrive{wake: make(chan struct{}, 1)}
	if sc, ok := conn.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			d.rc = rc
		}
	}
	return d
}

// kick wakes the endpoint's goroutine to take up the receive path.
func (d *rxDrive) kick() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// shouldYield decides, when the socket has nothing more, whether the
// coroutine returns to its driver.
func (d *rxDrive) shouldYield() bool {
	if d.app {
		if d.intr.Load() {
			return true
		}
		if d.ready != nil {
			return d.ready()
		}
		return d.progress
	}
	return d.handed
}

// read reads from the socket for the coroutine. It returns to the driver
// (yield) when the socket is empty and the driver is done.
func (x *rxReader) read(p []byte) (int, error) {
	d := x.d
	if d == nil || d.rc == nil {
		return x.conn.Read(p)
	}
	if x.short && d.shouldYield() {
		// The last read took less than it asked for: the socket is most
		// likely empty, so return to the driver without a read that would
		// only say so.
		x.short = false
		if !x.giveBack() {
			return 0, net.ErrClosed
		}
	}
	for {
		x.rp = p
		rerr := d.rc.Read(x.readFn)
		x.rp = nil
		n, err, yieldNow := x.rn, x.rerr, x.ryield
		switch {
		case rerr != nil:
			if errors.Is(rerr, os.ErrDeadlineExceeded) && (d.deadline.IsZero() || time.Now().Before(d.deadline)) {
				// An Interrupt's deadline, not one the receive path set:
				// it may also be the late one of an interrupt already
				// seen, so it is cleared whether or not intr is set.
				interrupted := d.intr.Swap(false)
				x.conn.SetReadDeadline(d.deadline)
				if interrupted && d.app && !x.yield(struct{}{}) {
					return 0, net.ErrClosed
				}
				continue
			}
			return 0, rerr
		case yieldNow:
			if !x.giveBack() {
				return 0, net.ErrClosed
			}
			continue
		case err != nil:
			return 0, &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", err)}
		case n == 0:
			return 0, io.EOF
		}
		d.progress = true
		x.short = n < len(p)
		return n, nil
	}
}

// giveBack returns to the driver, whose reason to return (shouldYield) is
// then used up. It reports false if the coroutine is being stopped.
func (x *rxReader) giveBack() bool {
	d := x.d
	if d.intr.Swap(false) {
		// The Interrupt's deadline may be set after its flag was seen:
		// restore ours (a late one is cleared when it strikes).
		x.conn.SetReadDeadline(d.deadline)
	}
	if !d.app {
		d.handed = false
		d.wanted.Store(false)
	}
	return x.yield(struct{}{})
}

// doRead is the raw read (x.readFn, bound once: a closure per read would
// allocate).
func (x *rxReader) doRead(fd uintptr) bool {
	x.ryield = false
	for {
		x.rn, x.rerr = syscall.Read(int(fd), x.rp)
		if x.rerr != syscall.EINTR {
			break
		}
	}
	if x.rerr == syscall.EAGAIN {
		if x.d.shouldYield() {
			x.ryield = true
			return true
		}
		return false // wait until readable
	}
	return true
}

// setDeadline sets the read deadline the receive path itself wants (the
// bounded wait after a Terminate), which an Interrupt must not undo.
func (x *rxReader) setDeadline(t time.Time) {
	if x.d != nil {
		x.d.deadline = t
	}
	x.conn.SetReadDeadline(t)
}

// Drive implements rdma.Driver.
func (e *endpoint) Drive(ready func() bool) bool {
	d := e.driver()
	if d == nil || d.rc == nil {
		return false
	}
	if !d.mu.TryLock() {
		d.wanted.Store(true)
		return false
	}
	if d.ended {
		d.mu.Unlock()
		return false
	}
	d.drives.Add(1)
	d.app, d.ready, d.progress = true, ready, false
	if _, ok := d.next(); !ok {
		d.ended = true
	}
	d.app, d.ready = false, nil
	d.mu.Unlock()
	return true
}

// Interrupt implements rdma.Driver.
func (e *endpoint) Interrupt() {
	d := e.driver()
	if d == nil || d.rc == nil {
		return
	}
	d.intr.Store(true)
	e.conn.SetReadDeadline(aLongTimeAgo)
}

// Background implements rdma.Driver.
func (e *endpoint) Background() {
	if d := e.driver(); d != nil {
		d.kick()
	}
}

func (e *endpoint) driver() *rxDrive {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.drv
}

// rxLoop is the endpoint's goroutine on the receive side: it runs the
// receive path whenever no application goroutine does, and finishes it
// when the connection ends.
func (e *endpoint) rxLoop() {
	defer e.loops.Done()
	d := e.drv
	idle := time.NewTimer(idleDrive)
	defer idle.Stop()
	for {
		if d.mu.TryLock() {
			if !d.ended {
				d.handed = false
				if _, ok := d.next(); !ok {
					d.ended = true
				}
			}
			ended := d.ended
			d.mu.Unlock()
			if ended {
				return
			}
		}
		// An application goroutine runs the receive path, or asked for
		// it: take it up again once no Drive came for idleDrive. (A timer
		// reset per Drive would cost more than the Drive itself.)
		seen := d.drives.Load()
		idle.Reset(handOver)
	wait:
		select {
		case <-d.wake:
		case <-idle.C:
			if n := d.drives.Load(); n != seen {
				seen = n
				idle.Reset(idleDrive)
				goto wait
			}
		case <-e.done:
			// The socket is closed: run the receive path to its end,
			// after any application goroutine running it now.
			d.mu.Lock()
			for !d.ended {
				if _, ok := d.next(); !ok {
					d.ended = true
				}
			}
			d.mu.Unlock()
			return
		}
	}
}

// rxCoroutine starts the receive path as a coroutine.
func (e *endpoint) rxCoroutine(d *rxDrive) {
	d.next, _ = iter.Pull(func(yield func(struct{}) bool) {
		x := &rxReader{conn: e.conn, buf: make([]byte, rxBufMin), d: d, yield: yield}
		x.readFn = x.doRead
		e.rxMain(x)
	})
}
