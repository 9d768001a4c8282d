package iwarp

import (
	"errors"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// The receive path runs on whichever goroutine waits for it. An
// application goroutine waiting for a message (Drive) runs it itself,
// inside the socket's read callback, and blocks until the socket is
// readable, as a reader of a TCP socket does: the message reaches it with
// no goroutine hand-off. (Measured on loopback: one channel hand-off per
// direction makes a 64-byte round trip 38 µs instead of 21 µs.) The
// receive path is a resumable state machine (rxStep): a read that would
// block leaves it where it is, for the next driver.
//
// The endpoint's own goroutine runs the receive path when nobody else does:
// from the start, and idleDrive after the last application driver left, so
// keepalives, RDMA Read Requests and flow control go on while the
// application is busy elsewhere. It gives the receive path up to an
// application goroutine that asked for it once it has delivered something
// (which wakes that goroutine).
type rxDrive struct {
	mu    sync.Mutex // held by the goroutine running the receive path
	ended bool       // the receive path wound up: the connection is over

	rc   syscall.RawConn // nil: blocking reads, only the endpoint's goroutine drives
	conn net.Conn        // for Interrupt's deadline

	// The receive path's state, used by the goroutine holding mu.
	e   *endpoint
	x   rxReader
	st  rxState
	f   rxFPDU
	res error                 // rxStep's result in the read callback
	fn  func(fd uintptr) bool // d.step, bound once (a closure per read would allocate)

	app    bool        // an application goroutine drives
	ready  func() bool // its condition to return
	handed bool        // the endpoint's goroutine delivered something after wanted was set

	wanted atomic.Bool   // an application goroutine found the receive path busy
	intr   atomic.Bool   // Interrupt was called
	drives atomic.Uint64 // Drive calls: the endpoint's goroutine watches for a pause
	wake   chan struct{}
}

// idleDrive is how long the receive path may go without a driver before
// the endpoint's goroutine takes it up again; handOver how long it waits
// at first after handing the path to a goroutine that asked for it (which
// may take a while to be scheduled on a busy machine). While drivers keep
// coming, the endpoint's goroutine looks less and less often, up to
// idleDriveMax apart: each look is a goroutine wake-up, which on a small
// VM costs as much as a message.
const (
	idleDrive    = 500 * time.Microsecond
	idleDriveMax = 8 * time.Millisecond
	handOver     = 5 * time.Millisecond
)

// aLongTimeAgo is a read deadline that has passed: it wakes a blocked read.
var aLongTimeAgo = time.Unix(1, 0)

// errWouldBlock: the socket has no more data for now.
var errWouldBlock = errors.New("iwarp: receive would block")

func newRxDrive(e *endpoint, conn net.Conn) *rxDrive {
	d := &rxDrive{e: e, conn: conn, wake: make(chan struct{}, 1)}
	d.x = rxReader{conn: conn, buf: make([]byte, rxBufMin), d: d}
	d.st = rxState{recvMSN: 1, rreqMSN: 1}
	if sc, ok := conn.(syscall.Conn); ok && rawReads {
		if rc, err := sc.SyscallConn(); err == nil {
			d.rc = rc
		}
	}
	d.fn = d.step
	return d
}

// kick wakes the endpoint's goroutine to take up the receive path.
func (d *rxDrive) kick() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// step runs the receive path inside the socket's read callback. It
// returns true to leave the callback (the stream ended, or the driver is
// done), false to wait until the socket is readable and run again.
func (d *rxDrive) step(fd uintptr) bool {
	d.x.fd, d.x.nonblock = int(fd), true
	d.res = d.e.rxStep(&d.x, &d.st, &d.f)
	if d.res != errWouldBlock {
		return true
	}
	if d.st.respPending {
		d.st.respPending = false
		d.e.sendResponses()
	}
	return d.shouldYield()
}

// delivered notes a completion of the receive path: when an application
// goroutine waits to run the receive path, this delivery wakes it, so the
// endpoint's goroutine may now give it up.
func (d *rxDrive) delivered() {
	if !d.app && d.wanted.Load() {
		d.handed = true
	}
}

// shouldYield decides, when the socket has nothing more, whether the
// driver returns.
func (d *rxDrive) shouldYield() bool {
	if d.app {
		if d.intr.Load() {
			return true
		}
		if d.ready != nil {
			return d.ready()
		}
		return d.x.progress
	}
	return d.handed
}

// runLocked runs the receive path until the driver may return, or to the
// end of the connection. Called with d.mu held.
func (d *rxDrive) runLocked() {
	d.x.progress = false
	for !d.ended {
		if d.rc == nil {
			d.res = d.e.rxStep(&d.x, &d.st, &d.f) // blocking reads
		} else {
			// A read starts afresh: the socket's readiness is reset, so
			// the first read must not be skipped (x.short).
			d.x.short = false
			if err := d.rc.Read(d.fn); err != nil {
				if errors.Is(err, os.ErrDeadlineExceeded) {
					// An Interrupt's deadline (the receive path sets none
					// before it winds up), or the late one of an interrupt
					// already seen: clear it.
					interrupted := d.intr.Swap(false)
					d.x.conn.SetReadDeadline(time.Time{})
					if interrupted && d.app {
						return
					}
					continue
				}
				d.res = err
			}
		}
		if d.res == errWouldBlock {
			if d.intr.Swap(false) {
				// The Interrupt's deadline may be set after its flag was
				// seen: clear it (a late one is cleared when it strikes).
				d.x.conn.SetReadDeadline(time.Time{})
			}
			if !d.app {
				d.handed = false
				d.wanted.Store(false)
			}
			return
		}
		d.x.nonblock = false
		d.e.rxFinish(&d.x, &d.st, &d.f, d.res)
		d.ended = true
	}
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
	d.app, d.ready = true, ready
	d.runLocked()
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

func (e *endpoint) driver() *rxDrive { return e.drvA.Load() }

// rxExit marks the receive goroutine stopped and reaps if it is the last.
func (e *endpoint) rxExit() {
	e.mu.Lock()
	e.rxRun = false
	last := e.lastOutLocked()
	e.mu.Unlock()
	if last {
		e.reap()
	}
}

// rxLoop is the endpoint's goroutine on the receive side: it runs the
// receive path whenever no application goroutine does, and finishes it
// when the connection ends.
func (e *endpoint) rxLoop() {
	defer e.rxExit()
	d := e.drv
	idle := time.NewTimer(idleDrive)
	defer idle.Stop()
	for {
		if d.mu.TryLock() {
			d.handed = false
			d.runLocked()
			ended := d.ended
			d.mu.Unlock()
			if ended {
				return
			}
		}
		// An application goroutine runs the receive path, or asked for
		// it: take it up again once no Drive came for a while. (A timer
		// reset per Drive would cost more than the Drive itself.)
		seen := d.drives.Load()
		every := idleDrive
		idle.Reset(handOver)
	wait:
		select {
		case <-d.wake:
		case <-idle.C:
			if n := d.drives.Load(); n != seen {
				seen = n
				every = min(2*every, idleDriveMax)
				idle.Reset(every)
				goto wait
			}
		case <-e.done:
			// The socket is closed: run the receive path to its end,
			// after any application goroutine running it now.
			d.mu.Lock()
			for !d.ended {
				d.runLocked()
			}
			d.mu.Unlock()
			return
		}
	}
}
