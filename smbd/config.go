// Package smbd is SMB Direct (MS-SMBD, protocol 0x0100) over the rdma API:
// negotiation, credits, fragmentation and reassembly, keepalives and
// disconnect. A Conn is a net.Conn that carries SMB2 PDUs with the 4-byte
// Direct TCP framing of MS-SMB2 2.1, so SMB2 code written for TCP runs on
// it unchanged.
//
// Credit rules, each of them a lesson from Linux's SMB Direct fixes:
//   - a credit is granted only for a receive buffer that is already posted;
//   - the last send credit is kept for a message that grants credits, so two
//     peers low on credits cannot deadlock;
//   - an empty credit-granting message never goes out between the fragments
//     of a larger message;
//   - at Close, every posted receive and send has completed (flushed)
//     before buffers are released.
package smbd

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/smbdirect/smbdirect/rdma"
	"github.com/smbdirect/smbdirect/smbd/internal/wire"
)

// Config configures connections. Zero values take the MS-SMBD defaults
// (MS-SMBD 3.1.1.1 and Appendix B), which are what Windows uses.
type Config struct {
	// Provider is the RDMA provider. nil means the one provider
	// registered with the rdma package (rdma.OpenDefault): the embedded
	// soft-iWARP once the program imports it, e.g. with
	// import _ "github.com/smbdirect/smbdirect/iwarp". smbd itself depends
	// on no provider.
	Provider rdma.Provider
	// Logger receives connection events; nil discards them.
	Logger *slog.Logger
	// ReceiveCreditMax is the most receive buffers posted (default 255).
	ReceiveCreditMax int
	// SendCreditTarget is the number of credits asked of the peer (255).
	SendCreditTarget int
	// MaxSendSize is the largest message sent (1364).
	MaxSendSize int
	// MaxReceiveSize is the size of each receive buffer (8192).
	MaxReceiveSize int
	// MaxFragmentedSize is the largest reassembled message accepted
	// (1 MiB).
	MaxFragmentedSize int
	// MaxReadWriteSize is the largest RDMA read/write offered (1 MiB).
	MaxReadWriteSize int
	// KeepaliveInterval: with nothing received for this long, a keepalive
	// asking for a response is sent; with nothing received for this long
	// again, the connection is declared dead (default 120 s). Silence is
	// measured from the keepalive timer's last look, not per message, so
	// a keepalive may go out up to one interval later than that.
	KeepaliveInterval time.Duration
	// NegotiateTimeout bounds the negotiation (default 120 s when dialing,
	// 5 s when accepting, as in MS-SMBD 3.1.4.1 and 3.1.7.2).
	NegotiateTimeout time.Duration
	// InitialReceives is the number of receive buffers posted at first;
	// more are posted as the peer asks for credits, up to ReceiveCreditMax,
	// so an idle connection holds little memory (default 4).
	InitialReceives int
	// MaxQueuedBytes bounds the received data waiting for Read (default
	// MaxFragmentedSize + MaxReceiveSize): unread data never exceeds it.
	// Every posted receive counts as MaxReceiveSize bytes against it (the
	// peer may fill each one), so receives are reposted only while unread
	// data plus MaxReceiveSize per posted receive fits; the peer then runs
	// out of credits: back-pressure. It is raised to at least 2 *
	// MaxReceiveSize, so that two receives stay posted while nothing is
	// unread, and InitialReceives is lowered to what fits in it.
	MaxQueuedBytes int
	// StallWarning: a write that has waited this long for the peer's send
	// credits or for send completions is logged at Warn level with the
	// credit accounting, and again each StallWarning after (default 10 s,
	// negative: never). It tells a peer that withholds credits from a
	// stalled transport when an application timeout fires further up.
	StallWarning time.Duration

	// controlLooked, if set, runs in maybeControl after its look at the
	// control message and before it lets go of the send lock: tests
	// widen that window with it.
	controlLooked func()
}

func (c *Config) resolve(dialing bool) (Config, error) {
	r := *c
	if r.Provider == nil {
		p, err := rdma.OpenDefault(rdma.ProviderConfig{Logger: r.Logger})
		if err != nil {
			return r, fmt.Errorf("smbd: Config.Provider is nil: %w", err)
		}
		r.Provider = p
	}
	if r.Logger == nil {
		r.Logger = slog.New(slog.DiscardHandler)
	}
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&r.ReceiveCreditMax, wire.DefaultReceiveCreditMax)
	def(&r.SendCreditTarget, wire.DefaultSendCreditTarget)
	def(&r.MaxSendSize, wire.DefaultMaxSendSize)
	def(&r.MaxReceiveSize, wire.DefaultMaxReceiveSize)
	def(&r.MaxFragmentedSize, wire.DefaultMaxFragmentedRecvSize)
	def(&r.MaxReadWriteSize, wire.DefaultMaxReadWriteSize)
	def(&r.InitialReceives, 4)
	r.ReceiveCreditMax = min(r.ReceiveCreditMax, 0xffff)
	r.SendCreditTarget = min(r.SendCreditTarget, 0xffff)
	r.InitialReceives = min(r.InitialReceives, r.ReceiveCreditMax)
	r.MaxReceiveSize = max(r.MaxReceiveSize, wire.MinNegotiateRecvSize)
	r.MaxSendSize = max(r.MaxSendSize, wire.MinReceiveSize)
	r.MaxFragmentedSize = max(r.MaxFragmentedSize, wire.MinFragmentedSize)
	def(&r.MaxQueuedBytes, r.MaxFragmentedSize+r.MaxReceiveSize)
	r.MaxQueuedBytes = max(r.MaxQueuedBytes, minPosted*r.MaxReceiveSize)
	// The first receives are posted before anything is read, and count
	// like any other.
	r.InitialReceives = min(r.InitialReceives, r.MaxQueuedBytes/r.MaxReceiveSize)
	if r.KeepaliveInterval <= 0 {
		r.KeepaliveInterval = wire.DefaultKeepaliveInterval
	}
	if r.StallWarning == 0 {
		r.StallWarning = defaultStallWarning
	}
	if r.NegotiateTimeout <= 0 {
		r.NegotiateTimeout = wire.NegotiateTimeoutPassive
		if dialing {
			r.NegotiateTimeout = wire.NegotiateTimeoutActive
		}
	}
	return r, nil
}

// Ports (MS-SMBD 1.9): SMB Direct uses 5445 on iWARP, which runs over TCP
// next to SMB2's 445, and 445 on InfiniBand and RoCE.
const (
	PortIWARP      = wire.PortIWARP
	PortInfiniBand = wire.PortInfiniBand
)
