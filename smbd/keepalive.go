package smbd

import (
	"fmt"
	"sync/atomic"
	"time"

	"github.com/smbdirect/smbdirect/smbd/internal/wire"
)

// keepaliveState is when the peer was last heard from and asked to answer.
type keepaliveState struct {
	lastRecv time.Time
	// heard: a message came since the keepalive timer last looked. It
	// stamps lastRecv then: a clock read per message would cost more than
	// the accuracy is worth.
	heard  bool
	kaSent time.Time // when the unanswered keepalive went, zero if none
	// kaTimer runs keepaliveTick; a timer rather than a goroutine, so an
	// idle connection holds no goroutine for it.
	kaTimer *time.Timer
	kaConn  *kaRef
}

// kaRef is what the keepalive timer's function holds: the runtime may keep
// a stopped timer in its heap until it would have fired, a whole interval,
// and with it the function; Close clears the reference so that it does
// not keep the closed connection's buffers alive (TestConnectCloseCycles
// in smbdirectd/server saw 9 KiB a connection retained).
type kaRef struct{ c atomic.Pointer[Conn] }

func (r *kaRef) tick() {
	if c := r.c.Load(); c != nil {
		c.keepaliveTick()
	}
}

// startKeepaliveLocked arms the keepalive timer. Called with c.mu held.
func (c *Conn) startKeepaliveLocked() {
	c.kaConn = &kaRef{}
	c.kaConn.c.Store(c)
	c.kaTimer = time.AfterFunc(c.cfg.KeepaliveInterval, c.kaConn.tick)
}

// stopKeepaliveLocked disarms the keepalive timer for good (Close).
func (c *Conn) stopKeepaliveLocked() {
	if c.kaTimer != nil {
		c.kaTimer.Stop() // one running now sees c.closed
		c.kaConn.c.Store(nil)
	}
}

// keepaliveTick sends a keepalive after KeepaliveInterval of silence and
// ends the connection after another interval without an answer, then
// re-arms the timer for the next look. It counts in c.loops while it
// runs, so Close does not release the buffers under a keepalive being
// sent; once Close has begun (c.closed) it does nothing.
func (c *Conn) keepaliveTick() {
	c.mu.Lock()
	if c.closed || c.err != nil {
		c.mu.Unlock()
		return
	}
	c.loops.Add(1) // before Close's Wait: Close sets c.closed under c.mu first
	defer c.loops.Done()
	iv := c.cfg.KeepaliveInterval
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
	if !c.closed && c.err == nil {
		c.kaTimer.Reset(time.Until(next))
	}
	c.mu.Unlock()
}

func (c *Conn) sendKeepalive() {
	if !c.writeMu.TryLock() {
		return // a writer is sending: its messages will answer for us
	}
	// As a writer does: a maybeControl that found writeMu held left its
	// grant to us (controlAgain), so look once writeMu is free.
	defer c.maybeControl()
	defer c.writeMu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil || c.midMessage || c.cr.send == 0 || !c.slotLocked() {
		return // a data message in flight will do; else the timeout decides
	}
	if err := c.sendLocked(nil, 0, wire.FlagResponseRequested, false, 0); err != nil {
		c.failLocked(err)
	}
}
