package smbd

import (
	"os"
	"time"
)

// deadlineState is the deadlines of Read and Write, and the timers that
// wake their waiters.
type deadlineState struct {
	rDeadline, wDeadline time.Time
	rTimer, wTimer       *time.Timer
}

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

// errDeadline is what deadline-expired calls return (net.Conn semantics).
var errDeadline = os.ErrDeadlineExceeded
