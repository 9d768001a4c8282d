package iwarp

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/smbdirect/smbdirect/rdma"
)

// sqEntry is a posted send work request.
type sqEntry struct {
	wr   rdma.SendWR
	data []byte // source of Send/Write, destination of Read
	sink uint32 // Read: sink STag (the local region)
	to   uint64 // Read: sink tagged offset
	sent int    // bytes put on the wire (Send/Write); bytes placed (Read)
	done bool
	err  error
}

// rqEntry is a posted receive.
type rqEntry struct {
	wr  rdma.RecvWR
	dst []byte
}

// irqEntry is an inbound RDMA Read Request awaiting its response.
type irqEntry struct {
	src      []byte
	sinkSTag uint32
	sinkTO   uint64
	sent     int
}

type endpoint struct {
	pd   *pd
	cfg  rdma.EndpointConfig
	pcfg *Config
	log  *slog.Logger
	cq   *cq

	// recvMu orders the switch to direct receive delivery (OnRecv) with
	// the receive path's decision where a completion goes.
	recvMu sync.Mutex
	// direct is the OnRecv function; set under recvMu, read without it once
	// set, so a direct delivery takes no lock.
	direct atomic.Pointer[func(*rdma.Completion)]
	rxwc   rdma.Completion // the completion handed to it (no allocation)

	mu   sync.Mutex
	life epLife // state and flags: changed only by its transitions
	conn net.Conn
	crc  bool
	segT int // payload limit of a tagged FPDU (fpdu.go)
	segU int // of an untagged one
	ird  int
	ord  int
	info rdma.ConnInfo
	err  error
	done chan struct{}

	// Send queue ring, indices grow monotonically.
	sq                   []sqEntry
	sqHead, sqTx, sqTail uint64
	orq                  []uint64 // SQ indices of Reads awaiting response, in order
	sendMSN, readMSN     uint32

	// Receive queue ring.
	rq             []rqEntry
	rqHead, rqTail uint64

	// Inbound read requests (IRD-bounded ring).
	irq              []irqEntry
	irqHead, irqTail uint64

	// Transmit state: the batch being written (by the holder of
	// life.txBusy) and the non-blocking writer of the inline path.
	txb    *txBatch
	txIdle sync.Cond // on mu: signalled when life.txBusy is cleared (see txDone)
	raw    *rawWriter

	// Pending outgoing Terminate.
	term    *termOut
	txWake  chan struct{}           // wakes a running transmit goroutine
	fileBuf []byte                  // the transmit goroutine's buffer for file sends with CRC
	drv     *rxDrive                // who runs the receive path (drive.go); set by start
	drvA    atomic.Pointer[rxDrive] // drv, for readers without e.mu
	pollCtx                         // Poll's watch of its context (poll.go)

	// The connection's goroutines (under mu): the receive goroutine runs
	// from start to the end of the receive path; the transmit goroutine
	// only while there is something to send (kickTxLocked starts it), so
	// an idle connection runs one goroutine. The last of the two to exit
	// once the connection ended reaps it (closes the socket, flushes the
	// queues, closes reaped): no goroutine waits for them.
	rxRun, txRun bool
	reaping      bool
	reaped       chan struct{}
	txFn         func() // e.txLoop, bound once: go e.txLoop() allocates a closure per start
}

func newEndpoint(d *pd, cfg rdma.EndpointConfig) *endpoint {
	if cfg.SendQueueDepth <= 0 {
		cfg.SendQueueDepth = defaultSendQueueDepth
	}
	if cfg.RecvQueueDepth <= 0 {
		cfg.RecvQueueDepth = defaultRecvQueueDepth
	}
	e := &endpoint{
		pd:      d,
		cfg:     cfg,
		pcfg:    &d.p.cfg,
		log:     d.p.cfg.Logger,
		cq:      newCQ(16), // grows with use; bounded by the posted work
		done:    make(chan struct{}),
		sq:      make([]sqEntry, cfg.SendQueueDepth),
		rq:      make([]rqEntry, cfg.RecvQueueDepth),
		txWake:  make(chan struct{}, 1),
		reaped:  make(chan struct{}),
		sendMSN: 1,
		readMSN: 1,
	}
	e.txIdle.L = &e.mu
	e.txFn = e.txLoop
	e.cq.interrupt = e.interruptPoll
	e.pollReady = e.cq.ready
	e.pollCancel = e.interruptPoll
	return e
}

// localSGE resolves an SGE of this PD to its bytes.
func (e *endpoint) localSGE(s rdma.SGE, need rdma.Access) ([]byte, *mr, error) {
	if s.MR == nil {
		if s.Length != 0 || s.Offset != 0 {
			return nil, nil, fmt.Errorf("%w: SGE with length but no region", rdma.ErrInvalidArgument)
		}
		return nil, nil, nil
	}
	m, ok := s.MR.(*mr)
	if !ok || m.pd != e.pd {
		return nil, nil, fmt.Errorf("%w: region of another protection domain", rdma.ErrLocalProtection)
	}
	if !m.valid.Load() {
		return nil, nil, fmt.Errorf("%w: region %v is invalidated", rdma.ErrLocalProtection, m.STag())
	}
	if m.access&need != need {
		return nil, nil, fmt.Errorf("%w: region %v lacks %v", rdma.ErrLocalProtection, m.STag(), need)
	}
	n := s.Len()
	if s.Offset < 0 || n < 0 || s.Offset+n > len(m.buf) || n > 1<<31 {
		return nil, nil, fmt.Errorf("%w: SGE [%d,+%d) outside region of %d bytes", rdma.ErrInvalidArgument, s.Offset, n, len(m.buf))
	}
	return m.buf[s.Offset : s.Offset+n], m, nil
}

func (e *endpoint) PostSend(wr *rdma.SendWR) error {
	ent := sqEntry{wr: *wr}
	switch wr.Op {
	case rdma.OpSend, rdma.OpSendInvalidate, rdma.OpWrite:
		if wr.File != nil {
			if wr.File.File == nil || wr.File.Length < 0 || wr.File.Offset < 0 {
				return fmt.Errorf("%w: bad file range", rdma.ErrInvalidArgument)
			}
			break
		}
		b, _, err := e.localSGE(wr.Local, 0)
		if err != nil {
			return err
		}
		ent.data = b
	case rdma.OpRead:
		b, m, err := e.localSGE(wr.Local, rdma.AccessLocalWrite)
		if err != nil {
			return err
		}
		ent.data = b
		if m != nil {
			ent.sink = m.stag
			ent.to = m.addr + uint64(wr.Local.Offset)
		}
	case rdma.OpLocalInvalidate:
	default:
		return fmt.Errorf("%w: opcode %v on the send queue", rdma.ErrInvalidArgument, wr.Op)
	}
	if wr.Solicited && wr.Op != rdma.OpSend && wr.Op != rdma.OpSendInvalidate {
		return fmt.Errorf("%w: solicited event on %v", rdma.ErrInvalidArgument, wr.Op)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.life.postable(e.err); err != nil {
		return err
	}
	if e.sqTail-e.sqHead == uint64(len(e.sq)) {
		e.kickTxLocked() // requests held back by More must not wait for a post that failed
		return rdma.ErrQueueFull
	}
	e.sq[e.sqTail%uint64(len(e.sq))] = ent
	e.sqTail++
	if wr.More {
		return nil // the batch goes out with its last request
	}
	if !e.tryInlineLocked() {
		e.kickTxLocked()
	}
	return nil
}

func (e *endpoint) PostRecv(wr *rdma.RecvWR) error {
	b, _, err := e.localSGE(wr.Local, rdma.AccessLocalWrite)
	if err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	switch e.life.state {
	case stClosed:
		return rdma.ErrClosed
	case stEnding:
		return rdma.ErrNotConnected
	}
	if e.rqTail-e.rqHead == uint64(len(e.rq)) {
		return rdma.ErrQueueFull
	}
	e.rq[e.rqTail%uint64(len(e.rq))] = rqEntry{wr: *wr, dst: b}
	e.rqTail++
	return nil
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

// kickTx makes the transmit path look at the queues.
func (e *endpoint) kickTx() {
	e.mu.Lock()
	e.kickTxLocked()
	e.mu.Unlock()
}

// kickTxLocked wakes the transmit goroutine, or starts it. None is started
// once the receive goroutine has exited (the connection is being reaped),
// nor for an ended connection with no Terminate to send: it would only
// exit. Starting one costs about what waking a parked one does, and
// allocates nothing.
func (e *endpoint) kickTxLocked() {
	if e.txRun {
		select {
		case e.txWake <- struct{}{}:
		default:
		}
		return
	}
	if !e.rxRun || (e.life.state >= stEnding && e.term == nil) {
		return
	}
	e.txRun = true
	go e.txFn()
}

// lastOutLocked reports whether the caller, a connection goroutine that
// has just marked itself stopped, is the last one and is to reap.
func (e *endpoint) lastOutLocked() bool {
	if e.rxRun || e.txRun || e.reaping {
		return false
	}
	e.reaping = true
	return true
}

// reap releases the connection once its goroutines are gone: nothing else
// touches the socket or the queues anymore.
func (e *endpoint) reap() {
	e.conn.Close() // end only shut it down
	e.flush()
	close(e.reaped)
}

// start runs the connection on conn. Called with the handshake done. If
// the endpoint was closed meanwhile, it closes conn and returns false.
// large: both ends announced large FPDUs.
func (e *endpoint) start(conn net.Conn, crc, large bool, ird, ord int, info rdma.ConnInfo, responder bool) bool {
	e.mu.Lock()
	delay := !responder && e.pcfg.FirstSendDelay > 0
	if !e.life.establish(responder, delay) {
		e.mu.Unlock()
		conn.Close()
		return false
	}
	e.conn = conn
	e.crc = crc
	e.fpduLimits(conn, large)
	e.ird, e.ord = ird, ord
	e.irq = make([]irqEntry, ird)
	e.orq = make([]uint64, 0, ord)
	e.info = info
	e.info.Detail += fmt.Sprintf(", largest FPDU payload %d (tagged), %d (untagged)", e.segT, e.segU)
	e.txb = newTxBatch()
	e.txb.crc = crc
	e.raw = newRawWriter(conn)
	if delay {
		// See Config.FirstSendDelay: give a siw responder time to attach
		// its receive path. Data from the responder ends the wait early.
		time.AfterFunc(e.pcfg.FirstSendDelay, func() {
			e.mu.Lock()
			e.life.heard()
			e.mu.Unlock()
			e.kickTx()
		})
	}
	e.drv = newRxDrive(e, conn)
	e.drvA.Store(e.drv)
	e.rxRun = true
	go e.rxLoop()
	e.mu.Unlock()
	e.log.Debug("iwarp: connected", "local", info.LocalAddr, "remote", info.RemoteAddr, "crc", crc, "ird", ird, "ord", ord)
	return true
}

// end records why the connection ended and tears the socket down. It is
// idempotent; the first reason wins.
func (e *endpoint) end(err error) {
	e.mu.Lock()
	if e.life.state == stClosed {
		e.mu.Unlock()
		return
	}
	if e.err == nil {
		e.err = err
	}
	wasOpen := e.life.end()
	conn := e.conn
	e.mu.Unlock()
	if wasOpen {
		close(e.done)
		if err != nil {
			e.log.Debug("iwarp: connection ended", "err", err)
		}
	}
	if conn != nil {
		shutdown(conn)
	}
	e.kickTx() // a running transmit goroutine exits, or sends the Terminate
}

// shutdown ends the stream in both directions without closing the socket:
// end may run inside the receive path's read callback (a DirectReceiver
// function calling Abort), where Close would wait for that very callback
// to return. Reads then see EOF, writes fail, the peer sees a FIN, and the
// last connection goroutine to exit closes the socket (reap).
// (net.TCPConn's CloseRead and CloseWrite are shutdown(2) on every
// system, and do not wait for a read in progress.)
func shutdown(c net.Conn) {
	if hc, ok := c.(interface {
		CloseRead() error
		CloseWrite() error
	}); ok {
		// Errors are ignored: ENOTCONN means the peer has ended it
		// already, and a closed socket needs nothing more. Close here
		// would wait for the read callback this may be running in.
		hc.CloseWrite()
		hc.CloseRead()
		return
	}
	c.Close() // not a TCP socket, or already closed
}

// flush completes all outstanding work with ErrFlushed (the reason the
// connection ended stays available from Err). Runs after the connection's
// goroutines exited (reap), so nothing else touches the queues or the
// regions.
func (e *endpoint) flush() {
	e.mu.Lock()
	defer e.mu.Unlock()
	// A PostSend caller may be writing inline (tryInlineLocked) with the
	// lock released: what it wrote must complete as written, not be
	// flushed. Its write is non-blocking, so this wait is short.
	for e.life.txBusy {
		e.txIdle.Wait()
	}
	for ; e.sqHead < e.sqTail; e.sqHead++ {
		s := &e.sq[e.sqHead%uint64(len(e.sq))]
		err := s.err
		if err == nil && !s.done {
			err = rdma.ErrFlushed
		}
		if err != nil {
			e.cq.push(rdma.Completion{ID: s.wr.ID, Op: s.wr.Op, Err: &rdma.WorkError{Op: s.wr.Op, ID: s.wr.ID, Err: err}})
		} else if !s.wr.Unsignaled {
			e.cq.push(rdma.Completion{ID: s.wr.ID, Op: s.wr.Op, Bytes: s.sent})
		}
		*s = sqEntry{}
	}
	e.sqTx = e.sqHead
	for ; e.rqHead < e.rqTail; e.rqHead++ {
		r := &e.rq[e.rqHead%uint64(len(e.rq))]
		e.cq.push(rdma.Completion{ID: r.wr.ID, Op: rdma.OpRecv, Err: &rdma.WorkError{Op: rdma.OpRecv, ID: r.wr.ID, Err: rdma.ErrFlushed}})
		*r = rqEntry{}
	}
	e.cq.close()
}

// Disconnect sends what is queued, then closes the stream gracefully and
// waits for the peer to close too (or ctx to end).
func (e *endpoint) Disconnect(ctx context.Context) error {
	e.mu.Lock()
	if !e.life.disconnect() {
		e.mu.Unlock()
		return e.Close()
	}
	e.mu.Unlock()
	e.kickTx()
	select {
	case <-e.done:
	case <-ctx.Done():
	}
	return e.Close()
}

// Abort implements rdma.Endpoint. It takes e.mu only, never the receive
// path's drive lock, and does not wait for the connection's goroutines:
// they see the closed socket, and the last of them to exit flushes (reap).
func (e *endpoint) Abort() {
	e.mu.Lock()
	if e.life.state == stClosed {
		e.mu.Unlock()
		return
	}
	started := e.life.started
	e.mu.Unlock()
	if started {
		e.end(rdma.ErrClosed)
		return
	}
	e.endUnstarted()
}

// endUnstarted ends an endpoint that never connected: no goroutine runs, so
// posted work is flushed here.
func (e *endpoint) endUnstarted() {
	e.mu.Lock()
	wasOpen := e.life.end()
	e.mu.Unlock()
	if wasOpen {
		close(e.done)
	}
	e.flush()
}

// Close ends the connection at once. When it returns, the receive loop has
// stopped: no data is placed into any region anymore, and every posted work
// request has completed (flushed if need be).
func (e *endpoint) Close() error {
	e.mu.Lock()
	if e.life.state == stClosed {
		e.mu.Unlock()
		return nil
	}
	started := e.life.started
	e.mu.Unlock()
	if started {
		e.end(rdma.ErrClosed)
		<-e.reaped
	} else {
		e.endUnstarted()
	}
	e.unwatchCtx()
	e.mu.Lock()
	e.life.close()
	if e.err == nil {
		e.err = rdma.ErrClosed
	}
	e.mu.Unlock()
	e.pd.endpointClosed()
	return nil
}

var _ rdma.Endpoint = (*endpoint)(nil)

// OnRecv implements rdma.DirectReceiver.
func (e *endpoint) OnRecv(fn func(*rdma.Completion)) {
	e.recvMu.Lock()
	defer e.recvMu.Unlock()
	if fn != nil {
		e.direct.Store(&fn)
	} else {
		e.direct.Store(nil)
	}
	e.cq.push(rdma.Completion{Op: rdma.OpMarker})
}

// deliverRecv hands a receive completion produced by the receive path to
// the direct handler, or queues it. Called only on the receive path.
func (e *endpoint) deliverRecv(wc rdma.Completion) {
	e.drv.delivered()
	fn := e.direct.Load()
	if fn == nil {
		// Queued under recvMu: OnRecv's marker goes after this one, or
		// this one goes to fn.
		e.recvMu.Lock()
		if fn = e.direct.Load(); fn == nil {
			e.cq.pushRx(wc)
			e.recvMu.Unlock()
			return
		}
		e.recvMu.Unlock()
	}
	e.rxwc = wc
	(*fn)(&e.rxwc)
	e.rxwc = rdma.Completion{}
}

var (
	_ rdma.DirectReceiver = (*endpoint)(nil)
	_ rdma.Driver         = (*endpoint)(nil)
)
