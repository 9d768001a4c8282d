package smbd

import "time"

// stallState notices a writer that waits long for the peer: for send
// credits (the peer grants none) or for send completions (the transport
// does not drain). Either can be a peer's bug or a transport stall; the
// warning with the credit accounting tells which side holds what, which
// an application timeout further up (an SMB2 client's, say) cannot.
type stallState struct {
	stallTimer *time.Timer // created at the first stall, reused
	stallSince time.Time   // zero when no writer waits
	stallWhat  string
}

// defaultStallWarning is Config.StallWarning's default: longer than any
// wait a working peer causes, shorter than the 20 s SMB2 clients commonly
// give a request.
const defaultStallWarning = 10 * time.Second

// stallLocked notes that a writer waits for what; the first call of a
// wait arms the warning.
func (c *Conn) stallLocked(what string) {
	if !c.stallSince.IsZero() || c.cfg.StallWarning < 0 {
		return
	}
	c.stallSince, c.stallWhat = time.Now(), what
	if c.stallTimer == nil {
		c.stallTimer = time.AfterFunc(c.cfg.StallWarning, c.stallReport)
		return
	}
	c.stallTimer.Reset(c.cfg.StallWarning)
}

// unstallLocked notes that the writer goes on.
func (c *Conn) unstallLocked() {
	if c.stallSince.IsZero() {
		return
	}
	c.stallSince = time.Time{}
	c.stallTimer.Stop()
}

// stallReport runs on the timer (taking mu alone, as timers do).
func (c *Conn) stallReport() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stallSince.IsZero() || c.err != nil || c.closed {
		return
	}
	waited := time.Since(c.stallSince)
	if waited < c.cfg.StallWarning {
		// Stopped too late and armed again since: wait for the rest.
		c.stallTimer.Reset(c.cfg.StallWarning - waited)
		return
	}
	c.log.Warn("smbd: a write is waiting for the peer", "for", c.stallWhat, "waited", waited.Round(time.Millisecond),
		"state", c.creditStateLocked())
	c.stallTimer.Reset(c.cfg.StallWarning)
}
