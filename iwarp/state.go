package iwarp

import (
	"fmt"

	"github.com/smbdirect/smbdirect/rdma"
)

type epState uint8

const (
	stIdle epState = iota
	stConnecting
	stConnected
	stEnding // failed or disconnecting: no new work, loops winding down
	stClosed
)

// epLife is an endpoint's connection state with the flags that qualify
// it. Every change goes through one of its methods, each a transition
// that checks where it starts from, called with endpoint.mu held; the
// fields are read directly under the same lock.
//
//	idle -> connecting -> connected -> ending -> closed
//	         |  (failed: back to idle)    ^
//	         +----------------------------+  (closed before connected)
type epLife struct {
	state epState
	// started: the connection's goroutines run (start); they own the
	// socket, and the last of them to exit flushes (reap). Never cleared.
	started bool
	// closing: Disconnect asked for a graceful end: send what is queued,
	// then FIN.
	closing bool
	// txHold keeps a responder from sending before the initiator's first
	// FPDU arrived (RFC 5044 section 7.1, and the RTR of RFC 6581), and an
	// initiator for Config.FirstSendDelay.
	txHold bool
	// txBusy: a writer (the transmit loop, or PostSend inline) owns the
	// socket's send side; FPDUs of one message are never split by
	// another's. See endpoint.txDone for the hand-off.
	txBusy bool
}

// beginConnect moves an unused endpoint to connecting.
func (l *epLife) beginConnect() error {
	if l.state != stIdle {
		return fmt.Errorf("%w: endpoint already used", rdma.ErrInvalidArgument)
	}
	l.state = stConnecting
	return nil
}

// connectFailed returns a connecting endpoint to idle: it may be tried
// again, its receives stay posted. One closed meanwhile stays closed.
func (l *epLife) connectFailed() {
	if l.state == stConnecting {
		l.state = stIdle
	}
}

// establish moves a connecting endpoint to connected with its loops about
// to start, and reports false if it was closed or aborted meanwhile.
func (l *epLife) establish(responder, delayFirst bool) bool {
	if l.state != stConnecting {
		return false
	}
	l.state, l.started = stConnected, true
	l.txHold = responder || delayFirst
	return true
}

// heard ends the hold on transmitting once the peer spoke; it reports
// whether there was one to end.
func (l *epLife) heard() bool {
	held := l.txHold
	l.txHold = false
	return held
}

// disconnect marks a connected endpoint as closing gracefully; false if it
// is not connected.
func (l *epLife) disconnect() bool {
	if l.state != stConnected {
		return false
	}
	l.closing = true
	return true
}

// end moves any endpoint not yet closed to ending and reports whether it
// was open before (connecting or connected), that is whether this call
// ended it.
func (l *epLife) end() (wasOpen bool) {
	if l.state == stClosed {
		return false
	}
	wasOpen = l.state < stEnding
	l.state = stEnding
	return wasOpen
}

// close is the last transition: the endpoint is released.
func (l *epLife) close() { l.state = stClosed }

// takeTx makes the caller the socket's writer; false if another writer is.
func (l *epLife) takeTx() bool {
	if l.txBusy {
		return false
	}
	l.txBusy = true
	return true
}

// releaseTx gives the socket's send side up. Only endpoint.txDone calls
// it, which also wakes a flush waiting for the writer.
func (l *epLife) releaseTx() { l.txBusy = false }

// postable says whether new send work may be posted, and if not why.
func (l *epLife) postable(cause error) error {
	switch l.state {
	case stConnected:
		if l.closing {
			return fmt.Errorf("%w: disconnecting", rdma.ErrNotConnected)
		}
		return nil
	case stEnding:
		if cause != nil {
			return fmt.Errorf("%w: %w", rdma.ErrNotConnected, cause)
		}
		return rdma.ErrNotConnected
	case stClosed:
		return rdma.ErrClosed
	}
	return rdma.ErrNotConnected
}
