package smbd

import (
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"github.com/smbdirect/smbdirect/internal/framing"
	"github.com/smbdirect/smbdirect/rdma"
	"github.com/smbdirect/smbdirect/smbd/internal/wire"
)

// frag is a received fragment waiting for the reader. It keeps its
// receive buffer until read: that is what bounds memory under a flood.
type frag struct {
	slot  int
	data  []byte
	first bool // first fragment of a message: total is its length
	total int
	hdr   int // Direct TCP header bytes already delivered (stream reads)
}

// recvState is the receive side of a Conn: receive buffers and the
// fragments queued for the reader.
type recvState struct {
	recvMR   []rdma.MR // one per slot, allocated as the window grows
	freeRecv []int     // slots neither posted nor queued
	// recvSize is the size of receive buffers allocated from now on:
	// MaxReceiveSize until negotiated, then what the peer says it sends
	// at most (sizeRecvLocked).
	recvSize int
	queue    []frag
	// qhead is the first unread fragment of queue; the backing array is
	// kept when the queue empties, so queueing does not allocate.
	qhead  int
	queued int // bytes in queue
	reasm  int // bytes still to come of the message being received, -1 none
	// rwr is built here and copied by the provider when posted: a WR on
	// the stack would escape through the interface call and cost an
	// allocation per message.
	rwr rdma.RecvWR
}

// postRecvLocked posts receives until n are posted, allocating buffers up
// to ReceiveCreditMax+1.
func (c *Conn) postRecvLocked(n int) error {
	if c.cr.posted < n {
		// New buffers mean credits to grant: a writer holding its last
		// credit may now send.
		defer c.broadcastLocked()
		if c.writerDrives && !c.inRx {
			c.drv.Interrupt()
		}
	}
	for c.cr.posted < n {
		var slot int
		if k := len(c.freeRecv); k > 0 {
			slot = c.freeRecv[k-1]
			c.freeRecv = c.freeRecv[:k-1]
		} else if len(c.recvMR) < cap(c.recvMR) {
			m, err := c.pd.RegisterMemory(make([]byte, c.recvSize), rdma.AccessLocalWrite)
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
		c.cr.posted++
	}
	return nil
}

// sizeRecvLocked sizes the receive buffers allocated after negotiation to
// the peer's PreferredSendSize (its MaxSendSize: it sends no larger
// message), within our MaxReceiveSize, as Linux's ksmbd and cifs.ko do.
// With the MS-SMBD defaults a buffer holds 1364 bytes, not 8192: the
// credit budget (MaxQueuedBytes) then covers more receives for the same
// memory, and the fragments of a PDU sit together in memory, so the
// reader's copy out of them misses the cache less (issue 11: 1 MiB of
// 1364-byte messages took ~11% less CPU), and an idle connection holds
// 4 of them instead of 4 of 8 KiB. A peer that sends more than it said
// overruns the buffer (the provider fails the connection) or, in the
// negotiate message's, fails receiveLocked's check.
func (c *Conn) sizeRecvLocked(peerSend uint32) {
	c.recvSize = min(c.cfg.MaxReceiveSize, max(int(peerSend), wire.MinReceiveSize))
	c.cr.bufSize = c.recvSize
}

// replenishLocked reposts receive buffers: as many as the peer asks for
// (within ReceiveCreditMax), as long as unread data plus what the posted
// receives may bring stays within MaxQueuedBytes (credits.target).
func (c *Conn) replenishLocked() {
	if c.err != nil {
		return
	}
	if err := c.postRecvLocked(c.cr.target(c.queued)); err != nil {
		c.failLocked(err)
	}
}

// receiveLocked applies a received Data Transfer message.
func (c *Conn) receiveLocked(slot int, msg []byte) error {
	if err := c.cr.arrived(); err != nil {
		return err
	}
	if len(msg) > c.recvSize {
		// The negotiate message's buffer, reposted, is larger: hold
		// every message to what the peer announced, so the budget's
		// count of recvSize per receive bounds unread data whichever
		// buffer it hit.
		return fmt.Errorf("%w: %d-byte message, the peer announced at most %d (PreferredSendSize)", ErrProtocol, len(msg), c.recvSize)
	}
	h, payload, err := wire.ParseDataTransfer(msg)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrProtocol, err)
	}
	c.heard = true
	c.kaSent = time.Time{}
	if err := c.cr.peerSays(h.CreditsGranted, h.CreditsRequested, h.ResponseRequested()); err != nil {
		return err
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
		if total > uint64(c.cfg.MaxFragmentedSize) || total > framing.MaxSize {
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
	// A peer using its credits faster than we hand them out gets more
	// buffers.
	c.cr.grow()
	c.replenishLocked()
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
		if f.first && f.hdr < framing.HeaderLen {
			var h [framing.HeaderLen]byte
			_ = framing.Put(h[:], f.total) // cannot fail: total was checked on receipt
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
