package smbd

import (
	"github.com/smbdirect/smbdirect/rdma"
)

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

// sendState is the send slots of a Conn.
type sendState struct {
	sendMRs  []rdma.MR // chunks of sendChunk slots, added as needed
	freeSend []int
	sendMax  int // send slots at most (maxSendSlots)
	// Send slots in flight, in posting order. Most sends are unsignaled:
	// a completion frees its slot and every slot posted before it.
	inflight [sendSlots]int
	inHead   int
	inN      int
	// slotWaiters are writers waiting for a send slot, slotWanted says a
	// control message waits for one: the poll loop polls for them.
	slotWaiters int
	slotWanted  bool
	// swr is built here and copied by the provider when posted (see
	// recvState.rwr).
	swr rdma.SendWR
}

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
