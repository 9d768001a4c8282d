package smbd

import "fmt"

// credits is the credit accounting of one connection (MS-SMBD 3.1.5.1 and
// 3.1.5.8): what we grant the peer and what it granted us. It does no I/O
// and takes no lock: the Conn holds c.mu around every use, posts the
// receives and sends the messages. Its rules, each tested with exact
// numbers in credits_test.go:
//
//   - A credit is granted only for a receive already posted (Linux once
//     granted before posting): grant hands out posted-granted, no more.
//   - The last send credit is kept for a message that grants credits
//     (MS-SMBD 3.1.5.1), so two peers low on credits cannot deadlock:
//     canSend.
//   - An empty message granting credits is due when the peer asked for a
//     response, or holds a quarter of our posted receives or less (or
//     only its last credit) while we have more to grant: controlDue. The
//     Conn sends it only between messages, never between the fragments of
//     one, and a reader checks it before it waits (the "grant before
//     waiting" rule: a reader that reposted buffers in the middle of a
//     fragmented message must grant them, or the sender, which needs
//     exactly those credits for the rest of the message, and the reader
//     wait for each other).
//   - The receive window doubles while the peer runs low, up to what it
//     asks for and ReceiveCreditMax: grow.
//   - Unread data and posted receives together stay within
//     MaxQueuedBytes, each posted receive counted as the full buffer it
//     may bring (a granted credit cannot be taken back): target. With
//     nothing unread, at least two receives stay posted, so a reader
//     never waits with no credit out and a peer with nothing to grant
//     can still send one message beside the credit it keeps.
type credits struct {
	// What we grant the peer (receive credits).
	posted     int  // receives posted
	granted    int  // credits the peer holds: receives it may fill
	window     int  // receives to keep posted; grows while the peer runs low
	initial    int  // receives kept posted at least (Config.InitialReceives)
	max        int  // receives posted at most (Config.ReceiveCreditMax)
	peerTarget int  // credits the peer asks for (CreditsRequested)
	ackDue     bool // the peer asked for a response (SMB_DIRECT_RESPONSE_REQUESTED)
	bufSize    int  // bytes one receive may bring (Config.MaxReceiveSize)
	budget     int  // unread bytes plus posted receives' bytes, at most (Config.MaxQueuedBytes)

	// What the peer granted us (send credits).
	send int
}

func newCredits(initial, max, bufSize, budget int) credits {
	return credits{window: initial, initial: initial, max: max, bufSize: bufSize, budget: budget}
}

// want is the number of receives the window asks to keep posted.
func (k *credits) want() int { return max(k.window, k.initial) }

// minPosted is the number of receives kept posted while nothing is
// unread, whatever the budget: with a single credit, a peer with nothing
// to grant keeps it (canSend) and could send nothing.
const minPosted = 2

// target is the number of receives to keep posted with queued bytes
// unread: the window, cut so that queued plus a full buffer for each
// posted receive stays within the budget. Receives already posted are
// counted (they are credits out, or about to be), so the unread data that
// can pile up is bounded by the budget itself, not by the budget plus the
// window.
func (k *credits) target(queued int) int {
	fit := 0
	if k.bufSize > 0 && queued < k.budget {
		fit = (k.budget - queued) / k.bufSize
	}
	if queued <= 0 {
		// No reader will free a buffer: the peer must be able to send.
		fit = max(fit, minPosted)
	}
	return min(k.want(), fit)
}

// grantable is the number of posted receives the peer holds no credit for.
func (k *credits) grantable() int { return k.posted - k.granted }

// grantPosted grants every posted receive at once (at most 0xffff): what
// the responder's negotiate response carries. It returns the credits
// granted.
func (k *credits) grantPosted() uint16 {
	k.granted = min(k.posted, 0xffff)
	return uint16(k.granted)
}

// take accounts for sending one Data Transfer message: it uses a send
// credit, answers a request for a response, and grants every posted
// receive not granted yet (at most 0xffff in one message). It returns the
// credits to grant in the message's CreditsGranted.
func (k *credits) take() uint16 {
	g := min(k.posted-k.granted, 0xffff)
	k.granted += g
	k.send--
	k.ackDue = false
	return uint16(g)
}

// arrived accounts for a message from the peer before it is parsed: it
// used one of the credits we granted, and must have had one.
func (k *credits) arrived() error {
	k.granted--
	if k.granted < 0 {
		return fmt.Errorf("%w: peer sent a message without a credit", ErrProtocol)
	}
	return nil
}

// peerSays applies the credit fields of a parsed message from the peer.
func (k *credits) peerSays(granted, requested uint16, respond bool) error {
	k.send += int(granted)
	if k.send > 0xffff {
		return fmt.Errorf("%w: peer granted %d credits in all, more than it can have buffers for", ErrProtocol, k.send)
	}
	k.peerTarget = int(requested)
	if respond {
		k.ackDue = true
	}
	return nil
}

// grow widens the receive window after a message with data when the peer
// uses its credits faster than we hand them out: it is down to a quarter
// of the window, or to the last credit, which it keeps for a
// credit-granting message. The window doubles, up to what the peer asks
// for and our maximum.
func (k *credits) grow() {
	if k.granted <= max(k.window/4, 1) {
		k.window = min(2*max(k.window, 1), k.peerTarget, k.max)
	}
}

// canSend reports whether a message with data may go: with more than one
// send credit, or with the last one when the message grants credits (the
// peer then can send again, and grant us more).
func (k *credits) canSend() bool {
	return k.send > 1 || (k.send == 1 && k.grantable() > 0)
}

// canSendTwo reports whether two messages with data may go one after the
// other without waiting, whatever the first grants: a fragment may then
// be held back to leave with the next one.
func (k *credits) canSendTwo() bool { return k.send > 2 }

// controlDue reports whether an empty credit-granting message should go
// (the Conn adds: no failure, a free send slot, not between fragments):
// the peer asked for a response, or it is down to a quarter of our posted
// receives (or its last credit) and we have more to grant. Either way the
// message grants credits or answers a request, so it may take our last
// send credit.
func (k *credits) controlDue() bool {
	if k.send == 0 {
		return false
	}
	return k.ackDue || (k.grantable() > 0 && k.granted <= max(k.posted/4, 1))
}

// String describes the accounting, for diagnostics.
func (k *credits) String() string {
	return fmt.Sprintf("credits %d, peer holds %d of %d posted (window %d), ack due %v",
		k.send, k.granted, k.posted, k.window, k.ackDue)
}
