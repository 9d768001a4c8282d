package smbd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/smbdirect/smbdirect/internal/framing"
	"github.com/smbdirect/smbdirect/rdma"
	"github.com/smbdirect/smbdirect/smbd/internal/wire"
)

// Errors. Connection errors also wrap the rdma error that caused them.
var (
	// ErrProtocol: the peer broke an MS-SMBD rule; the connection is ended.
	ErrProtocol = errors.New("smbd: protocol error")
	// ErrKeepalive: the peer did not answer a keepalive in time.
	ErrKeepalive = errors.New("smbd: peer did not answer keepalive")
	// ErrMessageTooLarge: a message exceeds the negotiated maximum.
	ErrMessageTooLarge = errors.New("smbd: message too large")
	// ErrNegotiate: the SMB Direct negotiation failed.
	ErrNegotiate = errors.New("smbd: negotiation failed")
	// ErrFraming: bytes written to the stream are not Direct TCP framed
	// (a zero byte, then a 24-bit big-endian length).
	ErrFraming = errors.New("smbd: bad Direct TCP framing")
)

// Info is what a connection negotiated.
type Info struct {
	Version           uint16 `json:"version"`
	SendCredits       int    `json:"send_credits"`
	PeerCreditTarget  int    `json:"peer_credits_requested"`
	ReceiveCreditMax  int    `json:"receive_credit_max"`
	MaxSendSize       int    `json:"max_send_size"`
	MaxReceiveSize    int    `json:"max_receive_size"`
	MaxFragmentedSend int    `json:"max_fragmented_send"`
	MaxFragmentedRecv int    `json:"max_fragmented_recv"`
	MaxReadWriteSize  int    `json:"max_read_write_size"`
	KeepaliveInterval string `json:"keepalive_interval"`
	RDMA              rdma.ConnInfo
}

// frag is a received fragment waiting for the reader. It keeps its
// receive buffer until read: that is what bounds memory under a flood.
type frag struct {
	slot  int
	data  []byte
	first bool // first fragment of a message: total is its length
	total int
	hdr   int // Direct TCP header bytes already delivered (stream reads)
}

// Conn is an SMB Direct connection.
type Conn struct {
	cfg   Config
	log   *slog.Logger
	pd    rdma.PD
	ownPD bool
	ep    rdma.Endpoint

	// Negotiated, fixed after negotiation.
	maxSend, maxFragSend, maxRW, peerMaxRecv int

	mu     sync.Mutex
	cond   *sync.Cond
	err    error // sticky; io.EOF-like end is rdma.ErrDisconnected
	closed bool

	// Receive side.
	recvMR     []rdma.MR // one per slot, allocated as the window grows
	freeRecv   []int     // slots neither posted nor queued
	posted     int
	window     int // receives to keep posted; grows while the peer runs low
	granted    int // credits the peer holds: receives it may fill
	peerTarget int
	queue      []frag
	queued     int
	reasm      int // bytes still to come of the message being received, -1 none
	lastRecv   time.Time
	// heard: a message came since the keepalive loop last looked. The
	// loop stamps lastRecv then: a clock read per message would cost more
	// than the accuracy is worth.
	heard  bool
	ackDue bool

	// Send side.
	sendMRs  []rdma.MR // chunks of sendChunk slots, added as needed
	freeSend []int
	sendMax  int // send slots at most (maxSendSlots)
	// Completions: pollMu orders their processing between the poll loop
	// and writers that reap them (reapLocked); slotWaiters are writers
	// waiting for a send slot, pollKick wakes the poll loop.
	pollMu      sync.Mutex
	slotWaiters int
	slotWanted  bool // a control message waits for a send slot
	pollKick    chan struct{}
	reap        [8]rdma.Completion
	// Send slots in flight, in posting order. Most sends are unsignaled:
	// a completion frees its slot and every slot posted before it.
	inflight     [sendSlots]int
	inHead       int
	inN          int
	unsignaled   int // sends since the last signaled one
	sendCredits  int
	writeMu      sync.Mutex         // held by whoever sends data: fragments stay together
	ops          map[uint64]*rdmaOp // RDMA transfers in flight
	opSeq        uint64
	rdmaInflight int

	// controlAgain: a maybeControl found writeMu held; its holder looks
	// at the control message again after letting go (see maybeControl).
	controlAgain atomic.Bool

	// direct: receive completions arrive through the provider's
	// DirectReceiver on its goroutine; early holds those that came before
	// the queued ones (up to the marker) were processed.
	direct bool
	early  []rdma.Completion

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

	// Work requests are built here (under mu) and copied by the provider
	// when posted: a WR on the stack would escape through the interface
	// call and cost an allocation per message.
	swr rdma.SendWR
	rwr rdma.RecvWR
	// qhead is the first unread fragment of queue; the backing array is
	// kept when the queue empties, so queueing does not allocate.
	qhead      int
	midMessage bool
	wHdr       framing.Header
	wLeft      int

	rDeadline, wDeadline time.Time
	rTimer, wTimer       *time.Timer
	kaSent               time.Time

	loops sync.WaitGroup
	done  chan struct{}
}

// sendSlots is the most send buffers, sendChunk how many are registered
// at a time, and sendBytes what they may hold in all: 64 slots of the
// default 1364 bytes, fewer of larger sizes. More slots mean fewer
// completions (one per batch of slots), and a completion wakes the poll
// loop, which on a small VM costs as much as a message.
const (
	sendSlots = 64
	sendChunk = 8
	sendBytes = 2 << 20
)

// maxSendSlots is the number of send slots for a MaxSendSize of size.
func maxSendSlots(size int) int {
	return min(sendSlots, max(4*sendChunk, sendBytes/size/sendChunk*sendChunk))
}

// growSendLocked registers another chunk of send slots.
func (c *Conn) growSendLocked() error {
	m, err := c.pd.RegisterMemory(make([]byte, sendChunk*c.cfg.MaxSendSize), 0)
	if err != nil {
		return err
	}
	base := len(c.sendMRs) * sendChunk
	c.sendMRs = append(c.sendMRs, m)
	for i := sendChunk - 1; i >= 0; i-- {
		c.freeSend = append(c.freeSend, base+i)
	}
	return nil
}

// sendAvailLocked is the number of send slots free or yet to register.
func (c *Conn) sendAvailLocked() int {
	return len(c.freeSend) + c.sendMax - len(c.sendMRs)*sendChunk
}

// sendDoneLocked frees the send slot of a completion, and those posted
// before it: completions come in order, so their unsignaled sends are done.
func (c *Conn) sendDoneLocked(slot int) {
	found := false
	for i := 0; i < c.inN && !found; i++ {
		found = c.inflight[(c.inHead+i)%sendSlots] == slot
	}
	if !found {
		return // cannot happen with completions in order; never free a slot in use
	}
	for c.inN > 0 {
		s := c.inflight[c.inHead]
		c.inHead = (c.inHead + 1) % sendSlots
		c.inN--
		c.freeSend = append(c.freeSend, s)
		if s == slot {
			return
		}
	}
}

// takeSendLocked takes a free send slot (the caller checked
// sendAvailLocked) and returns its region and offset.
func (c *Conn) takeSendLocked() (int, rdma.MR, int, error) {
	if len(c.freeSend) == 0 {
		if err := c.growSendLocked(); err != nil {
			return 0, nil, 0, err
		}
	}
	slot := c.freeSend[len(c.freeSend)-1]
	c.freeSend = c.freeSend[:len(c.freeSend)-1]
	c.inflight[(c.inHead+c.inN)%sendSlots] = slot
	c.inN++
	return slot, c.sendMRs[slot/sendChunk], (slot % sendChunk) * c.cfg.MaxSendSize, nil
}

func newConn(cfg Config, pd rdma.PD, ownPD bool) (*Conn, error) {
	c := &Conn{cfg: cfg, log: cfg.Logger, pd: pd, ownPD: ownPD, reasm: -1, window: cfg.InitialReceives, done: make(chan struct{})}
	c.cond = sync.NewCond(&c.mu)
	c.pollKick = make(chan struct{}, 1)
	c.sendMax = maxSendSlots(cfg.MaxSendSize)
	c.changed = c.changedSince
	c.ops = make(map[uint64]*rdmaOp)
	ep, err := pd.NewEndpoint(rdma.EndpointConfig{SendQueueDepth: sendSlots + rdmaSlots + 8, RecvQueueDepth: cfg.ReceiveCreditMax + 1})
	if err != nil {
		return nil, err
	}
	c.ep = ep
	c.recvMR = make([]rdma.MR, 0, cfg.ReceiveCreditMax+1)
	// Send buffers come in chunks of slots of MaxSendSize (the peer may
	// allow less, never more), registered as traffic needs them.
	c.mu.Lock()
	err = c.growSendLocked()
	c.mu.Unlock()
	if err != nil {
		ep.Close()
		return nil, err
	}
	// The first receives: one more than the credits, for the negotiate
	// message that needs none.
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.postRecvLocked(cfg.InitialReceives + 1); err != nil {
		c.mu.Unlock()
		c.release()
		c.mu.Lock()
		return nil, err
	}
	return c, nil
}

// postRecvLocked posts receives until n are posted, allocating buffers up
// to ReceiveCreditMax+1.
func (c *Conn) postRecvLocked(n int) error {
	if c.posted < n {
		// New buffers mean credits to grant: a writer holding its last
		// credit may now send.
		defer c.broadcastLocked()
		if c.writerDrives && !c.inRx {
			c.drv.Interrupt()
		}
	}
	for c.posted < n {
		var slot int
		if k := len(c.freeRecv); k > 0 {
			slot = c.freeRecv[k-1]
			c.freeRecv = c.freeRecv[:k-1]
		} else if len(c.recvMR) < cap(c.recvMR) {
			m, err := c.pd.RegisterMemory(make([]byte, c.cfg.MaxReceiveSize), rdma.AccessLocalWrite)
			if err != nil {
				return err
			}
			slot = len(c.recvMR)
			c.recvMR = append(c.recvMR, m)
		} else {
			return nil
		}
		c.rwr = rdma.RecvWR{ID: uint64(slot), Local: rdma.SGE{MR: c.recvMR[slot]}}
		if err := c.ep.PostRecv(&c.rwr); err != nil {
			c.freeRecv = append(c.freeRecv, slot)
			return err
		}
		c.posted++
	}
	return nil
}

// replenishLocked reposts receive buffers: as many as the peer asks for
// (within ReceiveCreditMax), unless unread data is piling up.
func (c *Conn) replenishLocked() {
	if c.err != nil || c.queued > c.cfg.MaxQueuedBytes {
		return
	}
	if err := c.postRecvLocked(max(c.window, c.cfg.InitialReceives)); err != nil {
		c.failLocked(err)
	}
}

func (c *Conn) failLocked(err error) {
	if errors.Is(err, rdma.ErrNotConnected) || errors.Is(err, rdma.ErrFlushed) {
		// A symptom: report why the endpoint went down.
		if e := c.ep.Err(); e != nil {
			err = e
		}
	}
	if c.err == nil {
		c.err = err
		if !errors.Is(err, rdma.ErrDisconnected) && !errors.Is(err, rdma.ErrClosed) {
			c.log.Warn("smbd: connection failed", "err", err)
		}
	}
	c.wakeLocked()
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

// fail ends the connection with err: the endpoint is closed (the peer
// sees the disconnect) and waiters wake up.
func (c *Conn) fail(err error) {
	c.mu.Lock()
	c.failLocked(err)
	c.mu.Unlock()
	go c.ep.Close()
}

// start runs the completion and keepalive loops after negotiation.
func (c *Conn) start() {
	if dr, ok := c.ep.(rdma.DirectReceiver); ok {
		dr.OnRecv(c.directRecv)
		// Driving the receive path is only of use when it delivers here:
		// completions through Poll are the poll loop's.
		c.drv, _ = c.ep.(rdma.Driver)
	}
	c.lastRecv = time.Now()
	c.loops.Add(2)
	go c.pollLoop()
	go c.keepaliveLoop()
	c.mu.Lock()
	c.replenishLocked()
	c.mu.Unlock()
	c.maybeControl()
}

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

// unlockControl releases c.mu, then sends a control message if one is
// due. Whether one is due is looked at under the lock already held: most
// messages need none, and maybeControl would lock again to find out.
func (c *Conn) unlockControl() {
	due := c.controlDueLocked()
	c.mu.Unlock()
	if due {
		c.maybeControl()
	}
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
	c.posted--
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
		go c.ep.Close()
		return
	}
	c.broadcastLocked()
}

// receiveLocked applies a received Data Transfer message.
func (c *Conn) receiveLocked(slot int, msg []byte) error {
	c.granted--
	if c.granted < 0 {
		return fmt.Errorf("%w: peer sent a message without a credit", ErrProtocol)
	}
	h, payload, err := wire.ParseDataTransfer(msg)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrProtocol, err)
	}
	c.heard = true
	c.kaSent = time.Time{}
	c.sendCredits += int(h.CreditsGranted)
	if c.sendCredits > 0xffff {
		return fmt.Errorf("%w: peer granted %d credits in all, more than it can have buffers for", ErrProtocol, c.sendCredits)
	}
	c.peerTarget = int(h.CreditsRequested)
	if h.ResponseRequested() {
		c.ackDue = true
	}
	if h.DataLength == 0 {
		if c.reasm >= 0 && h.RemainingDataLength != 0 {
			return fmt.Errorf("%w: empty message claims %d bytes remaining", ErrProtocol, h.RemainingDataLength)
		}
		c.freeRecv = append(c.freeRecv, slot)
		c.replenishLocked()
		return nil
	}
	f := frag{slot: slot, data: payload}
	if c.reasm < 0 {
		total := uint64(h.DataLength) + uint64(h.RemainingDataLength)
		if total > uint64(c.cfg.MaxFragmentedSize) || total > 0xffffff {
			return fmt.Errorf("%w: %d-byte message, at most %d: %w", ErrProtocol, total, c.cfg.MaxFragmentedSize, ErrMessageTooLarge)
		}
		f.first, f.total = true, int(total)
	} else if uint64(h.DataLength)+uint64(h.RemainingDataLength) != uint64(c.reasm) {
		return fmt.Errorf("%w: fragment of %d bytes with %d remaining, but %d were due", ErrProtocol, h.DataLength, h.RemainingDataLength, c.reasm)
	}
	c.reasm = int(h.RemainingDataLength)
	if c.reasm == 0 {
		c.reasm = -1
	}
	if len(c.queue) == cap(c.queue) && c.qhead > 0 {
		// Reuse the read part of the array rather than growing it: the
		// queue never holds more fragments than there are receive buffers.
		n := copy(c.queue, c.queue[c.qhead:])
		clear(c.queue[n:])
		c.queue, c.qhead = c.queue[:n], 0
	}
	c.queue = append(c.queue, f)
	c.queued += len(payload)
	if c.granted <= max(c.window/4, 1) {
		// The peer is using its credits faster than we hand them out (it
		// is down to a quarter, or to the last one, which it keeps for a
		// credit-granting message):
		// offer more buffers, up to what it asks for and our maximum.
		c.window = min(2*max(c.window, 1), c.peerTarget, c.cfg.ReceiveCreditMax)
	}
	c.replenishLocked()
	return nil
}

// maybeControl sends an empty message when the peer needs credits or asked
// for a response, unless a writer is busy (its next fragment carries the
// grant) or a message is half sent (an empty message must not slip in
// between its fragments).
//
// A maybeControl that finds writeMu held leaves the work to its holder,
// which may have looked already (its check done, writeMu not yet
// released): so it raises controlAgain, and the holder, once it has let
// go, looks again. Without that the grant was lost and both sides could
// wait for ever (TestFewCredits, about 1 run in 40 under load).
func (c *Conn) maybeControl() {
	for {
		if !c.writeMu.TryLock() {
			c.controlAgain.Store(true)
			// Still held: the holder lets go after our Store and sees it.
			if !c.writeMu.TryLock() {
				return
			}
		}
		c.controlAgain.Store(false) // this look covers what came before
		c.mu.Lock()
		if !c.midMessage && c.controlDueLocked() {
			if err := c.sendLocked(nil, 0, 0, false, 0); err != nil {
				c.failLocked(err)
			}
		}
		c.mu.Unlock()
		if c.cfg.controlLooked != nil {
			c.cfg.controlLooked()
		}
		c.writeMu.Unlock()
		if !c.controlAgain.Load() {
			return
		}
	}
}

// controlDueLocked reports whether an empty message should go now: the
// peer asked for a response, or it is down to a quarter of our posted
// buffers (or its last credit) and we have more to grant.
func (c *Conn) controlDueLocked() bool {
	if c.err != nil || c.sendCredits == 0 {
		return false
	}
	grantable := c.posted - c.granted
	need := c.ackDue || (grantable > 0 && c.granted <= max(c.posted/4, 1))
	return need && (c.sendCredits > 1 || grantable > 0 || c.ackDue) && c.slotLocked()
}

// slotLocked reports whether a send slot is free. If none is, it takes the
// completions already there; if that frees none, the poll loop waits for
// one and then looks at the control message again (maybeControl).
func (c *Conn) slotLocked() bool {
	if c.sendAvailLocked() > 0 {
		return true
	}
	c.reapLocked()
	if c.sendAvailLocked() > 0 {
		return true
	}
	c.slotWanted = true
	c.kickPoll()
	return false
}

// sendLocked posts one Data Transfer message. The caller checked that a
// credit and a send slot are available.
func (c *Conn) sendLocked(payload []byte, remaining int, flags uint16, more bool, inv uint32) error {
	slot, mr, off, err := c.takeSendLocked()
	if err != nil {
		return err
	}
	g := min(c.posted-c.granted, 0xffff)
	c.granted += g
	c.sendCredits--
	c.ackDue = false
	h := wire.DataTransfer{CreditsRequested: uint16(c.cfg.SendCreditTarget), CreditsGranted: uint16(g),
		Flags: flags, RemainingDataLength: uint32(remaining), DataLength: uint32(len(payload))}
	buf := mr.Bytes()[off : off+c.maxSend]
	b := wire.AppendDataTransfer(buf[:0], &h)
	b = append(b, payload...)
	// A completion wakes the poll loop, which costs more than the send on
	// a fast path: ask for one only once free slots run short. It frees
	// every slot posted before it.
	signal := c.sendAvailLocked() < sendChunk
	c.swr = rdma.SendWR{ID: uint64(slot), Op: rdma.OpSend, Local: rdma.SGE{MR: mr, Offset: off, Length: len(b)}, More: more, Unsignaled: !signal}
	if inv != 0 {
		c.swr.Op, c.swr.InvalidateSTag = rdma.OpSendInvalidate, rdma.STag(inv)
	}
	return c.ep.PostSend(&c.swr)
}

// sendFragment waits for a credit (keeping the last one for a message that
// grants credits) and a send buffer, then sends. Call with writeMu held.
// next says the caller has the next fragment at hand: if it can go without
// waiting, this one is held back to leave with it in one write.
func (c *Conn) sendFragment(payload []byte, remaining int, next bool, inv uint32) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	lost := false
	for {
		if c.err != nil {
			return c.connErrLocked()
		}
		if c.closed {
			return net.ErrClosed
		}
		if !c.wDeadline.IsZero() && !time.Now().Before(c.wDeadline) {
			if c.midMessage {
				// Part of the message is out and the rest will not follow:
				// the peer's reassembly cannot recover, so the connection
				// ends here rather than carry a corrupt stream.
				err := fmt.Errorf("smbd: write deadline passed in the middle of a message: %w", os.ErrDeadlineExceeded)
				c.failLocked(err)
				go c.ep.Close()
				return err
			}
			return os.ErrDeadlineExceeded
		}
		grantable := c.posted - c.granted
		if c.sendAvailLocked() == 0 {
			// Send slots come back with completions: take those there
			// are, or have the poll loop wait for them.
			c.reapLocked()
			if c.sendAvailLocked() == 0 {
				c.slotWaiters++
				c.kickPoll()
				c.cond.Wait()
				c.slotWaiters--
			}
			continue
		}
		if c.sendCredits > 1 || (c.sendCredits == 1 && grantable > 0) {
			break
		}
		// Credits come with incoming messages.
		c.awaitLocked(&lost, true)
	}
	c.midMessage = remaining > 0
	// Holding back is safe only if the next fragment cannot block: we hold
	// writeMu, so credits and send slots can only grow until then.
	more := next && remaining > 0 && c.sendAvailLocked() > 1 && c.sendCredits > 2
	return c.sendLocked(payload, remaining, 0, more, inv)
}

func (c *Conn) connErrLocked() error {
	if c.closed {
		return net.ErrClosed
	}
	if errors.Is(c.err, rdma.ErrDisconnected) {
		return io.EOF
	}
	return c.err
}

// maxPayload is the data one message carries.
func (c *Conn) maxPayload() int { return c.maxSend - wire.DataTransferHeaderLen }

// Write writes SMB2 PDUs framed as on Direct TCP: each PDU is preceded by
// a zero byte and its 24-bit big-endian length. A PDU may span Write calls;
// each PDU becomes one SMB Direct message, fragmented as negotiated.
func (c *Conn) Write(p []byte) (int, error) {
	c.writeMu.Lock()
	// maybeControl skips its work while a writer holds writeMu (the
	// writer's fragments carry the grants). A grant that became due after
	// the writer's last fragment would be lost, and with it the peer's
	// ability to send: so check again once writeMu is free.
	defer c.maybeControl()
	defer c.writeMu.Unlock()
	n := 0
	for len(p) > 0 {
		if c.wLeft == 0 {
			k, size, done := c.wHdr.Take(p)
			p, n = p[k:], n+k
			if !done {
				break
			}
			if size < 0 {
				return n, fmt.Errorf("%w: header % x", ErrFraming, c.wHdr.Last())
			}
			if size > c.maxFragSend {
				return n, fmt.Errorf("%w: %d-byte PDU, the peer takes at most %d", ErrMessageTooLarge, size, c.maxFragSend)
			}
			c.wLeft = size
			continue
		}
		k := min(len(p), c.wLeft, c.maxPayload())
		if err := c.sendFragment(p[:k], c.wLeft-k, len(p) > k, 0); err != nil {
			return n, err
		}
		c.wLeft -= k
		p, n = p[k:], n+k
	}
	return n, nil
}

// WriteMessage sends one upper-layer message (an SMB2 PDU without the
// Direct TCP header).
func (c *Conn) WriteMessage(msg []byte) error { return c.writeMessage(msg, 0) }

// WriteMessageInvalidate sends msg and, with its last fragment (Send with
// Invalidate), invalidates the peer's registration token: what a server
// does with the response to an SMB2 READ or WRITE whose channel is
// SMB2_CHANNEL_RDMA_V1_INVALIDATE. token must not be 0.
func (c *Conn) WriteMessageInvalidate(msg []byte, token uint32) error {
	if token == 0 {
		return fmt.Errorf("smbd: Send with Invalidate of token 0")
	}
	return c.writeMessage(msg, token)
}

func (c *Conn) writeMessage(msg []byte, inv uint32) error {
	c.writeMu.Lock()
	// maybeControl skips its work while a writer holds writeMu (the
	// writer's fragments carry the grants). A grant that became due after
	// the writer's last fragment would be lost, and with it the peer's
	// ability to send: so check again once writeMu is free.
	defer c.maybeControl()
	defer c.writeMu.Unlock()
	if c.wLeft != 0 || c.wHdr.Pending() {
		return fmt.Errorf("%w: a PDU written with Write is incomplete", ErrFraming)
	}
	if len(msg) == 0 || len(msg) > c.maxFragSend {
		return fmt.Errorf("%w: %d bytes, at most %d", ErrMessageTooLarge, len(msg), c.maxFragSend)
	}
	for len(msg) > 0 {
		k := min(len(msg), c.maxPayload())
		var fragInv uint32
		if len(msg) == k {
			fragInv = inv
		}
		if err := c.sendFragment(msg[:k], len(msg)-k, len(msg) > k, fragInv); err != nil {
			return err
		}
		msg = msg[k:]
	}
	return nil
}

// waitLocked waits for queued data, or returns why there will be none.
func (c *Conn) waitLocked() error {
	tried, lost := false, false
	for c.qhead == len(c.queue) {
		if c.closed {
			return net.ErrClosed
		}
		if c.err != nil {
			return c.connErrLocked()
		}
		if !c.rDeadline.IsZero() && !time.Now().Before(c.rDeadline) {
			return os.ErrDeadlineExceeded
		}
		if !tried && c.controlDueLocked() {
			// Buffers this reader reposted may be what the peer waits for
			// to send the rest of a message we are in the middle of
			// reading: grant them before waiting, or both sides wait.
			tried = true
			c.mu.Unlock()
			c.maybeControl()
			c.mu.Lock()
			continue
		}
		c.awaitLocked(&lost, false)
		tried = false
	}
	return nil
}

// popLocked releases the head fragment's receive buffer for reposting.
func (c *Conn) popLocked() {
	f := c.queue[c.qhead]
	c.queue[c.qhead] = frag{}
	c.qhead++
	if c.qhead == len(c.queue) {
		c.queue, c.qhead = c.queue[:0], 0
	}
	c.freeRecv = append(c.freeRecv, f.slot)
	c.replenishLocked()
}

// Read reads the stream of received PDUs, each preceded by its Direct TCP
// header. It returns io.EOF after the peer disconnected and all data was
// read.
func (c *Conn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.mu.Lock()
	n := 0
	for n < len(p) {
		if c.qhead == len(c.queue) {
			if n > 0 {
				break
			}
			if err := c.waitLocked(); err != nil {
				c.mu.Unlock()
				return 0, err
			}
		}
		f := &c.queue[c.qhead]
		if f.first && f.hdr < 4 {
			h := [4]byte{0, byte(f.total >> 16), byte(f.total >> 8), byte(f.total)}
			k := copy(p[n:], h[f.hdr:])
			f.hdr += k
			n += k
			continue
		}
		k := copy(p[n:], f.data)
		f.data = f.data[k:]
		n += k
		c.queued -= k
		if len(f.data) == 0 {
			c.popLocked()
		}
	}
	c.unlockControl()
	return n, nil
}

// ReadMessage reads one whole upper-layer message into p and returns its
// length. Do not mix with Read in the middle of a message.
func (c *Conn) ReadMessage(p []byte) (int, error) {
	c.mu.Lock()
	if err := c.waitLocked(); err != nil {
		c.mu.Unlock()
		return 0, err
	}
	f := &c.queue[c.qhead]
	if !f.first || f.hdr != 0 {
		c.mu.Unlock()
		return 0, fmt.Errorf("%w: ReadMessage in the middle of a message", ErrFraming)
	}
	total := f.total
	if len(p) < total {
		c.mu.Unlock()
		return 0, fmt.Errorf("smbd: %d-byte message, buffer of %d: %w", total, len(p), io.ErrShortBuffer)
	}
	n := 0
	for n < total {
		if err := c.waitLocked(); err != nil {
			c.mu.Unlock()
			return n, err
		}
		f := &c.queue[c.qhead]
		k := copy(p[n:], f.data)
		n += k
		c.queued -= k
		c.popLocked()
	}
	c.unlockControl()
	return n, nil
}

// keepaliveLoop sends a keepalive after KeepaliveInterval of silence and
// ends the connection after another interval without an answer.
func (c *Conn) keepaliveLoop() {
	defer c.loops.Done()
	iv := c.cfg.KeepaliveInterval
	t := time.NewTimer(iv)
	defer t.Stop()
	for {
		select {
		case <-c.done:
			return
		case <-t.C:
		}
		c.mu.Lock()
		if c.err != nil {
			c.mu.Unlock()
			return
		}
		now := time.Now()
		if c.heard {
			// Heard from the peer since the last look: count the silence
			// from now (a keepalive goes out at most one interval late).
			c.heard = false
			c.lastRecv = now
		}
		next := c.lastRecv.Add(iv)
		switch {
		case !c.kaSent.IsZero() && now.Sub(c.kaSent) >= iv:
			c.failLocked(fmt.Errorf("%w within %v", ErrKeepalive, iv))
			c.mu.Unlock()
			c.ep.Close()
			return
		case !c.kaSent.IsZero():
			next = c.kaSent.Add(iv)
		case !now.Before(next):
			c.kaSent = now
			next = now.Add(iv)
			c.mu.Unlock()
			c.sendKeepalive()
			c.mu.Lock()
		}
		c.mu.Unlock()
		t.Reset(time.Until(next))
	}
}

func (c *Conn) sendKeepalive() {
	if !c.writeMu.TryLock() {
		return // a writer is sending: its messages will answer for us
	}
	defer c.writeMu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil || c.midMessage || c.sendCredits == 0 || !c.slotLocked() {
		return // a data message in flight will do; else the timeout decides
	}
	if err := c.sendLocked(nil, 0, wire.FlagResponseRequested, false, 0); err != nil {
		c.failLocked(err)
	}
}

// Close ends the connection. It returns when the provider has completed
// every posted request, so no buffer is released while still in use.
func (c *Conn) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.wakeLocked()
	c.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	c.ep.Disconnect(ctx)
	cancel()
	close(c.done)
	c.loops.Wait()
	c.release()
	return nil
}

// release closes the endpoint, then frees the buffers. The endpoint is
// closed without c.mu held: Close waits for the receive path, which may
// be waiting for c.mu to deliver a completion.
func (c *Conn) release() {
	c.ep.Close()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, m := range c.recvMR {
		m.Close()
	}
	c.recvMR = nil
	for _, m := range c.sendMRs {
		m.Close()
	}
	c.sendMRs = nil
	if c.ownPD {
		c.pd.Close()
	}
}

// LocalAddr and RemoteAddr are the transport addresses.
func (c *Conn) LocalAddr() net.Addr  { return c.ep.Info().LocalAddr }
func (c *Conn) RemoteAddr() net.Addr { return c.ep.Info().RemoteAddr }

// SetDeadline sets both deadlines.
func (c *Conn) SetDeadline(t time.Time) error {
	c.SetReadDeadline(t)
	return c.SetWriteDeadline(t)
}

// SetReadDeadline sets the deadline for Read and ReadMessage.
func (c *Conn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rDeadline = t
	c.rTimer = c.armLocked(c.rTimer, t)
	c.wakeLocked()
	return nil
}

// SetWriteDeadline sets the deadline for Write and WriteMessage (waiting
// for send credits).
func (c *Conn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.wDeadline = t
	c.wTimer = c.armLocked(c.wTimer, t)
	c.wakeLocked()
	return nil
}

func (c *Conn) armLocked(tm *time.Timer, t time.Time) *time.Timer {
	if tm != nil {
		tm.Stop()
	}
	if t.IsZero() {
		return nil
	}
	return time.AfterFunc(time.Until(t), func() {
		c.mu.Lock()
		c.wakeLocked()
		c.mu.Unlock()
	})
}

// Info returns the negotiated parameters and the current send credits.
func (c *Conn) Info() Info {
	c.mu.Lock()
	defer c.mu.Unlock()
	return Info{Version: wire.ProtocolVersion, SendCredits: c.sendCredits, PeerCreditTarget: c.peerTarget,
		ReceiveCreditMax: c.cfg.ReceiveCreditMax, MaxSendSize: c.maxSend, MaxReceiveSize: c.cfg.MaxReceiveSize,
		MaxFragmentedSend: c.maxFragSend, MaxFragmentedRecv: c.cfg.MaxFragmentedSize, MaxReadWriteSize: c.maxRW,
		KeepaliveInterval: c.cfg.KeepaliveInterval.String(), RDMA: c.ep.Info()}
}

var _ net.Conn = (*Conn)(nil)

// creditState describes the credit accounting, for diagnostics.
func (c *Conn) creditState() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return fmt.Sprintf("credits %d, peer holds %d of %d posted (window %d), send slots free %d, queued %d in %d fragments, mid-message %v, ack due %v, err %v",
		c.sendCredits, c.granted, c.posted, c.window, c.sendAvailLocked(), c.queued, len(c.queue)-c.qhead, c.midMessage, c.ackDue, c.err)
}

// errDeadline is what deadline-expired calls return (net.Conn semantics).
var errDeadline = os.ErrDeadlineExceeded
