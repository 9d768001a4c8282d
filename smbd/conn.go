package smbd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

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

// Conn is an SMB Direct connection. Its state is grouped by concern, each
// group in the file of the code that uses it: credits (credits.go), the
// receive queue and reassembly (recv.go), send slots (slots.go), the
// message being written (send.go), polling and driving the provider's
// receive path (drive.go), RDMA transfers (offload.go), keepalive
// (keepalive.go) and deadlines (deadline.go). Everything is under mu
// unless its group says otherwise.
//
// Lock order. A lock on the left may be held while the one on its right
// is taken, never the other way round:
//
//	writeMu -> mu -> the provider's locks (iwarp: e.mu -> cq.mu)
//	pollMu -> mu
//	the provider's receive path (iwarp: the drive lock) -> mu
//
// Against that order a lock is only ever tried (TryLock), never waited
// for: reapLocked tries pollMu with mu held; maybeControl tries writeMu,
// also on the receive path (directRecv -> unlockControl); a writer that
// holds writeMu and waits for credits runs the receive path only if the
// provider's TryLock of its drive lock succeeds (awaitLocked). Because
// the receive path takes mu (directRecv), mu is released before anything
// waits for the receive path: Drive (awaitLocked), and the endpoint's
// Close and Disconnect (Close, release, keepaliveTick; a failure under mu
// closes it on another goroutine). Timers and context callbacks take mu
// alone. docs/smbd.md has the same, with iwarp's side.
type Conn struct {
	cfg   Config
	log   *slog.Logger
	pd    rdma.PD
	ownPD bool
	ep    rdma.Endpoint

	// Negotiated, fixed after negotiation.
	maxSend, maxFragSend, maxRW, peerMaxRecv int

	writeMu sync.Mutex // held by whoever sends data: fragments stay together
	mu      sync.Mutex
	cond    *sync.Cond
	err     error // sticky; io.EOF-like end is rdma.ErrDisconnected
	closed  bool

	cr credits // what we grant the peer and what it granted us
	recvState
	sendState
	writeState
	pollState
	driveState
	offloadState
	keepaliveState
	deadlineState
	stallState

	loops sync.WaitGroup
	done  chan struct{}
}

func newConn(cfg Config, pd rdma.PD, ownPD bool) (*Conn, error) {
	c := &Conn{cfg: cfg, log: cfg.Logger, pd: pd, ownPD: ownPD, cr: newCredits(cfg.InitialReceives, cfg.ReceiveCreditMax, cfg.MaxReceiveSize, cfg.MaxQueuedBytes), done: make(chan struct{})}
	c.reasm = -1
	c.recvSize = cfg.MaxReceiveSize
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
	// One receive, for the negotiate message (it needs no credit). The
	// ones we grant credits for are posted once negotiation has sized
	// them to what the peer sends (sizeRecvLocked): before the response
	// (Listener) or in start (Dial), ahead of the first grant either way.
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.postRecvLocked(1); err != nil {
		c.mu.Unlock()
		c.release()
		c.mu.Lock()
		return nil, err
	}
	return c, nil
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

// fail ends the connection with err: the endpoint is closed (the peer
// sees the disconnect) and waiters wake up.
func (c *Conn) fail(err error) {
	c.mu.Lock()
	c.failLocked(err)
	c.mu.Unlock()
	c.ep.Abort()
}

// start runs the completion loop and arms the keepalive timer after
// negotiation.
func (c *Conn) start() {
	if dr, ok := c.ep.(rdma.DirectReceiver); ok {
		dr.OnRecv(c.directRecv)
		// Driving the receive path is only of use when it delivers here:
		// completions through Poll are the poll loop's.
		c.drv, _ = c.ep.(rdma.Driver)
	}
	c.lastRecv = time.Now()
	c.loops.Add(1)
	go c.pollLoop()
	c.mu.Lock()
	c.startKeepaliveLocked()
	c.replenishLocked()
	c.mu.Unlock()
	c.maybeControl()
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

// Close ends the connection. It returns when the provider has completed
// every posted request, so no buffer is released while still in use.
func (c *Conn) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	if c.stallTimer != nil {
		c.stallTimer.Stop()
	}
	c.stopKeepaliveLocked()
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

// Info returns the negotiated parameters and the current send credits.
func (c *Conn) Info() Info {
	c.mu.Lock()
	defer c.mu.Unlock()
	return Info{Version: wire.ProtocolVersion, SendCredits: c.cr.send, PeerCreditTarget: c.cr.peerTarget,
		ReceiveCreditMax: c.cfg.ReceiveCreditMax, MaxSendSize: c.maxSend, MaxReceiveSize: c.cfg.MaxReceiveSize,
		MaxFragmentedSend: c.maxFragSend, MaxFragmentedRecv: c.cfg.MaxFragmentedSize, MaxReadWriteSize: c.maxRW,
		KeepaliveInterval: c.cfg.KeepaliveInterval.String(), RDMA: c.ep.Info()}
}

var _ net.Conn = (*Conn)(nil)

// creditState describes the credit accounting, for diagnostics.
func (c *Conn) creditState() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.creditStateLocked()
}

func (c *Conn) creditStateLocked() string {
	return fmt.Sprintf("%v, send slots free %d, queued %d in %d fragments, mid-message %v, err %v",
		&c.cr, c.sendAvailLocked(), c.queued, len(c.queue)-c.qhead, c.midMessage, c.err)
}
