package smbd

import (
	"fmt"
	"net"
	"os"
	"sync/atomic"
	"time"

	"github.com/smbdirect/smbdirect/internal/framing"
	"github.com/smbdirect/smbdirect/rdma"
	"github.com/smbdirect/smbdirect/smbd/internal/wire"
)

// writeState is the message being written.
type writeState struct {
	// midMessage: part of a message is out (under mu; set with writeMu
	// held too), so nothing else may go until the rest has.
	midMessage bool
	// A Direct TCP header being read from Write's stream and the bytes of
	// its PDU still to come (under writeMu).
	wHdr  framing.Header
	wLeft int
	// controlAgain: a maybeControl found writeMu held; its holder looks
	// at the control message again after letting go (see maybeControl).
	controlAgain atomic.Bool
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
	return c.err == nil && c.cr.controlDue() && c.slotLocked()
}

// sendLocked posts one Data Transfer message. The caller checked that a
// credit and a send slot are available.
func (c *Conn) sendLocked(payload []byte, remaining int, flags uint16, more bool, inv uint32) error {
	slot, mr, off, err := c.takeSendLocked()
	if err != nil {
		return err
	}
	g := c.cr.take()
	h := wire.DataTransfer{CreditsRequested: uint16(c.cfg.SendCreditTarget), CreditsGranted: g,
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
	defer c.unstallLocked() // however the wait ends
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
				c.ep.Abort() // does not wait for the receive path, so c.mu may stay held
				return err
			}
			return os.ErrDeadlineExceeded
		}
		if c.sendAvailLocked() == 0 {
			// Send slots come back with completions: take those there
			// are, or have the poll loop wait for them.
			c.reapLocked()
			if c.sendAvailLocked() == 0 {
				c.stallLocked("send completions")
				c.slotWaiters++
				c.kickPoll()
				c.cond.Wait()
				c.slotWaiters--
			}
			continue
		}
		if c.cr.canSend() {
			break
		}
		// Credits come with incoming messages.
		c.stallLocked("send credits")
		c.awaitLocked(&lost, true)
	}
	c.midMessage = remaining > 0
	// Holding back is safe only if the next fragment cannot block: we hold
	// writeMu, so credits and send slots can only grow until then.
	more := next && remaining > 0 && c.sendAvailLocked() > 1 && c.cr.canSendTwo()
	return c.sendLocked(payload, remaining, 0, more, inv)
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
