package smbd

import (
	"errors"
	"testing"

	"github.com/smbdirect/smbdirect/iwarp"
)

// The credit rules, each with exact numbers. A row's k is the state
// before, want the state after.

func TestCreditsTake(t *testing.T) {
	for _, tc := range []struct {
		name  string
		k     credits
		grant uint16
		want  credits
	}{
		{"grants every posted receive not granted yet",
			credits{posted: 10, granted: 3, send: 5},
			7, credits{posted: 10, granted: 10, send: 4}},
		{"nothing to grant",
			credits{posted: 4, granted: 4, send: 2},
			0, credits{posted: 4, granted: 4, send: 1}},
		{"answers a request for a response",
			credits{posted: 4, granted: 4, send: 1, ackDue: true},
			0, credits{posted: 4, granted: 4, send: 0}},
		{"at most 0xffff in one message",
			credits{posted: 0x10005, granted: 1, send: 3},
			0xffff, credits{posted: 0x10005, granted: 0x10000, send: 2}},
	} {
		k := tc.k
		if g := k.take(); g != tc.grant || k != tc.want {
			t.Errorf("%s: take() = %d, %+v; want %d, %+v", tc.name, g, k, tc.grant, tc.want)
		}
	}
}

func TestCreditsGrantPosted(t *testing.T) {
	for _, tc := range []struct {
		posted      int
		grant       uint16
		wantGranted int
	}{
		{0, 0, 0},
		{5, 5, 5},
		{0xffff, 0xffff, 0xffff},
		{0x10000, 0xffff, 0xffff}, // the peer holds what it was told, no more
	} {
		k := credits{posted: tc.posted}
		if g := k.grantPosted(); g != tc.grant || k.granted != tc.wantGranted {
			t.Errorf("posted %d: grantPosted() = %d, granted %d; want %d, %d", tc.posted, g, k.granted, tc.grant, tc.wantGranted)
		}
	}
}

func TestCreditsArrived(t *testing.T) {
	for _, tc := range []struct {
		granted, want int
		err           string
	}{
		{3, 2, ""},
		{1, 0, ""},
		{0, -1, "smbd: protocol error: peer sent a message without a credit"},
	} {
		k := credits{posted: 3, granted: tc.granted}
		err := k.arrived()
		if k.granted != tc.want || (err == nil) != (tc.err == "") || err != nil && (err.Error() != tc.err || !errors.Is(err, ErrProtocol)) {
			t.Errorf("granted %d: arrived() = %v, granted %d; want %q, %d", tc.granted, err, k.granted, tc.err, tc.want)
		}
	}
}

func TestCreditsPeerSays(t *testing.T) {
	for _, tc := range []struct {
		name               string
		k                  credits
		granted, requested uint16
		respond            bool
		want               credits
		err                string
	}{
		{"grants add up", credits{send: 3, peerTarget: 255},
			5, 10, false, credits{send: 8, peerTarget: 10}, ""},
		{"a request for a response", credits{send: 1},
			0, 255, true, credits{send: 1, peerTarget: 255, ackDue: true}, ""},
		{"a request stays until answered", credits{send: 1, ackDue: true},
			1, 255, false, credits{send: 2, peerTarget: 255, ackDue: true}, ""},
		{"up to 0xffff in all", credits{send: 0xffef},
			0x10, 1, false, credits{send: 0xffff, peerTarget: 1}, ""},
		{"more than 0xffff in all", credits{send: 0xfff0},
			0x10, 1, false, credits{send: 0x10000},
			"smbd: protocol error: peer granted 65536 credits in all, more than it can have buffers for"},
	} {
		k := tc.k
		err := k.peerSays(tc.granted, tc.requested, tc.respond)
		if k != tc.want || (err == nil) != (tc.err == "") || err != nil && (err.Error() != tc.err || !errors.Is(err, ErrProtocol)) {
			t.Errorf("%s: peerSays(%d, %d, %v) = %v, %+v; want %q, %+v", tc.name, tc.granted, tc.requested, tc.respond, err, k, tc.err, tc.want)
		}
	}
}

func TestCreditsGrow(t *testing.T) {
	for _, tc := range []struct {
		name                         string
		window, granted, target, max int
		wantWindow, wantWant         int
	}{
		{"peer down to its last credit: doubles", 4, 1, 255, 255, 8, 8},
		{"peer holds more than a quarter: stays", 4, 2, 255, 255, 4, 4},
		{"peer down to a quarter: doubles", 16, 4, 255, 255, 32, 32},
		{"peer holds more than a quarter of 16", 16, 5, 255, 255, 16, 16},
		{"up to what the peer asks for", 16, 0, 20, 255, 20, 20},
		{"up to ReceiveCreditMax", 16, 0, 255, 24, 24, 24},
		{"an empty window opens", 0, 0, 255, 255, 2, 4},
		// The peer asking for less shrinks the window, but the initial
		// receives stay posted.
		{"peer asks for less", 16, 1, 3, 255, 3, 4},
	} {
		k := newCredits(4, tc.max, 8192, 1<<30)
		k.window, k.granted, k.peerTarget = tc.window, tc.granted, tc.target
		k.grow()
		if k.window != tc.wantWindow || k.want() != tc.wantWant {
			t.Errorf("%s: window %d, want() %d; want %d, %d", tc.name, k.window, k.want(), tc.wantWindow, tc.wantWant)
		}
	}
}

func TestCreditsCanSend(t *testing.T) {
	for _, tc := range []struct {
		send, posted, granted int
		canSend, canSendTwo   bool
	}{
		{0, 4, 0, false, false},
		// The last credit is kept for a message that grants credits.
		{1, 4, 4, false, false},
		{1, 4, 3, true, false},
		{2, 4, 4, true, false},
		{3, 4, 4, true, true},
	} {
		k := credits{send: tc.send, posted: tc.posted, granted: tc.granted}
		if k.canSend() != tc.canSend || k.canSendTwo() != tc.canSendTwo {
			t.Errorf("%+v: canSend %v, canSendTwo %v; want %v, %v", k, k.canSend(), k.canSendTwo(), tc.canSend, tc.canSendTwo)
		}
	}
}

func TestCreditsControlDue(t *testing.T) {
	for _, tc := range []struct {
		name string
		k    credits
		want bool
	}{
		{"no send credit, nothing can go", credits{send: 0, posted: 8, granted: 0, ackDue: true}, false},
		{"a request for a response takes the last credit", credits{send: 1, posted: 8, granted: 8, ackDue: true}, true},
		{"peer down to a quarter", credits{send: 1, posted: 8, granted: 2}, true},
		{"peer holds more than a quarter", credits{send: 5, posted: 8, granted: 3}, false},
		{"peer down to its last credit", credits{send: 5, posted: 3, granted: 1}, true},
		{"peer holds two of three", credits{send: 5, posted: 3, granted: 2}, false},
		{"nothing to grant", credits{send: 5, posted: 4, granted: 4}, false},
		// The deadlock TestFewCredits found: a reader in the middle of a
		// fragmented message reposted its buffers; the sender, down to its
		// last credit, needs them for the rest. The reader grants before
		// it waits.
		{"grant before waiting", credits{send: 3, posted: 3, granted: 0}, true},
	} {
		k := tc.k
		if got := k.controlDue(); got != tc.want || k != tc.k {
			t.Errorf("%s: %+v: controlDue() = %v, want %v (and no change: %+v)", tc.name, tc.k, got, tc.want, k)
		}
	}
}

// TestCreditsExchange plays the deadlock TestFewCredits found between two
// peers with windows of 3: a sends a three-fragment message to b and, down
// to its last credit with nothing to grant, cannot send the third; b's
// reader reposts the buffer of the first fragment and must grant it before
// it waits for the rest.
func TestCreditsExchange(t *testing.T) {
	a, b := newCredits(3, 3, 8192, 1<<20), newCredits(3, 3, 8192, 1<<20)
	a.posted, a.granted, a.send = 3, 3, 3
	b.posted, b.granted, b.send = 3, 3, 3
	deliver := func(from, to *credits) {
		t.Helper()
		if !from.canSend() {
			t.Fatalf("sender cannot send: %v", from)
		}
		g := from.take()
		if err := to.arrived(); err != nil {
			t.Fatal(err)
		}
		to.posted-- // the receive the message filled
		if err := to.peerSays(g, 3, false); err != nil {
			t.Fatal(err)
		}
	}
	deliver(&a, &b)
	deliver(&a, &b)
	if a.canSend() || a.send != 1 || b.granted != 1 || b.posted != 1 {
		t.Fatalf("after two fragments: a %v, b %v", &a, &b)
	}
	if b.controlDue() {
		t.Fatalf("b owes a grant with nothing posted to grant: %v", &b)
	}
	// b's reader reads the first fragment and reposts its buffer.
	b.posted++
	if !b.controlDue() {
		t.Fatalf("b owes no grant after reposting: %v", &b)
	}
	deliver(&b, &a)
	if b.controlDue() || b.granted != 2 || a.send != 2 || !a.canSend() {
		t.Fatalf("after b's grant: a %v, b %v", &a, &b)
	}
	deliver(&a, &b)
}

func TestCreditsTarget(t *testing.T) {
	const buf = 8192
	for _, tc := range []struct {
		name           string
		window, budget int
		queued, want   int
	}{
		{"the window, when the budget holds it", 16, 1 << 20, 0, 16},
		{"the budget cuts the window", 255, 64 << 10, 0, 8},
		{"queued data counts", 255, 64 << 10, 3 * 8168, 5},
		{"a part of a buffer left is no buffer", 255, 64 << 10, 1, 7},
		{"budget used up: back-pressure", 255, 64 << 10, 64 << 10, 0},
		{"over the budget: back-pressure", 255, 64 << 10, 65 << 10, 0},
		{"nothing unread: two at least, whatever the budget", 255, buf, 0, 2},
		{"nothing unread: two at least, even with no budget", 255, 0, 0, 2},
		{"something unread: the reader frees a buffer", 255, buf, 1, 0},
		{"never more than the window", 1, 0, 0, 1},
	} {
		k := newCredits(tc.window, 0xffff, buf, tc.budget)
		if n := k.target(tc.queued); n != tc.want {
			t.Errorf("%s: target(%d) = %d; want %d", tc.name, tc.queued, n, tc.want)
		}
	}
}

// TestCreditsNoStall plays a peer a that sends full messages to b as
// fast as its credits let it, while b's reader reads only when nothing
// else can happen (an application slower than the network), for several
// budgets. b's unread data must stay within its budget, and the two must
// never both wait: b with nothing unread must always leave a able to
// send, or owe it a grant (the last-credit rule keeps a from sending
// with its last credit and nothing to grant).
func TestCreditsNoStall(t *testing.T) {
	const buf, payload, msgs = 8192, 8192 - 24, 2000
	for _, budget := range []int{0, buf, 2*buf - 1, 2 * buf, 3 * buf, 64 << 10, 1 << 20} {
		a := newCredits(4, 255, buf, 1<<30)
		b := newCredits(4, 255, buf, budget)
		// After the negotiation: each side posted its first receives
		// (within its budget) and the other holds credits for them.
		a.posted = a.target(0)
		b.posted = min(4, max(budget/buf, minPosted))
		a.granted, b.send = a.posted, a.posted
		b.granted, a.send = b.posted, b.posted
		queued, unread, got := 0, 0, 0
		// deliver sends one message from one side to the other; the
		// receiver reposts up to its target.
		deliver := func(from, to *credits, toQueued int) {
			g := from.take()
			if err := to.arrived(); err != nil {
				t.Fatalf("budget %d: %v", budget, err)
			}
			to.posted--
			if err := to.peerSays(g, 255, false); err != nil {
				t.Fatalf("budget %d: %v", budget, err)
			}
			to.posted = max(to.posted, to.target(toQueued))
		}
		for steps := 0; got < msgs; steps++ {
			if steps > 100*msgs {
				t.Fatalf("budget %d: no progress after %d messages: a %v, b %v", budget, got, &a, &b)
			}
			switch {
			case a.canSend():
				queued += payload
				unread++
				deliver(&a, &b, queued)
				b.grow()
				if queued > max(budget, minPosted*buf) {
					t.Fatalf("budget %d: %d bytes unread: b %v", budget, queued, &b)
				}
			case b.controlDue():
				deliver(&b, &a, 0)
			case a.controlDue():
				deliver(&a, &b, queued)
			case unread > 0:
				// b's reader reads a message and reposts its buffer.
				queued -= payload
				unread--
				got++
				b.posted = max(b.posted, b.target(queued))
			default:
				t.Fatalf("budget %d: stalled after %d messages, nothing unread: a %v, b %v", budget, got, &a, &b)
			}
		}
	}
}

// TestConfigQueuedBytes: MaxQueuedBytes holds two receive buffers at
// least, and the first receives fit in it, so target's bound holds from
// the negotiation on.
func TestConfigQueuedBytes(t *testing.T) {
	for _, tc := range []struct {
		queued, initial         int
		wantQueued, wantInitial int
	}{
		{0, 0, 1<<20 + 8192, 4},    // defaults
		{64 << 10, 0, 64 << 10, 4}, // room for 8
		{20000, 0, 20000, 2},       // room for 2 receives only
		{1000, 1, 16384, 1},        // raised to two buffers; one first receive asked for
		{1000, 8, 16384, 2},
	} {
		c := Config{Provider: iwarp.New(iwarp.Config{}), MaxQueuedBytes: tc.queued, InitialReceives: tc.initial}
		r, err := c.resolve(false)
		if err != nil {
			t.Fatal(err)
		}
		if r.MaxQueuedBytes != tc.wantQueued || r.InitialReceives != tc.wantInitial {
			t.Errorf("MaxQueuedBytes %d, InitialReceives %d: resolved to %d, %d; want %d, %d",
				tc.queued, tc.initial, r.MaxQueuedBytes, r.InitialReceives, tc.wantQueued, tc.wantInitial)
		}
	}
}
