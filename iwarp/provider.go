// Package iwarp is the embedded soft-iWARP RDMA provider: MPA (RFC 5044,
// with the enhanced connection setup of RFC 6581), DDP (RFC 5041) and RDMAP
// (RFC 5040) over an ordinary TCP connection, in pure Go. It speaks the same
// wire protocol as Linux siw and iWARP adapters.
//
// Received tagged data (RDMA Write, Read Response) and Send payloads are read
// from the socket straight into their registered destination; outgoing data
// is written from registered memory with writev, in FPDUs sized to the TCP
// MSS, or up to 64 KiB between two ends that both announce it (fpdu.go).
//
// # Locks
//
// An endpoint's locks nest in this order; a lock may be taken while
// holding one to its left, never the other way round:
//
//	rxDrive.mu -> endpoint.recvMu -> endpoint.mu -> pd.mu, cq.mu
//
// rxDrive.mu (drive.go) is held by whichever goroutine runs the receive
// path, for as long as it does, including while it runs a DirectReceiver
// function. That function belongs to the ULP, which takes its own locks
// in it and holds them when it posts (smbd: c.mu, then endpoint.mu), so
// the receive path calls it holding rxDrive.mu only: never mu or
// recvMu. Drive takes rxDrive.mu with TryLock, so a ULP may call it
// holding its own locks (smbd's writeMu). Abort and end take mu only and
// shut the socket down rather than close it, because closing waits for a
// running read callback. The order across packages, with smbd's locks:
// docs/iwarp.md.
package iwarp

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/smbdirect/smbdirect/iwarp/internal/wire"
	"github.com/smbdirect/smbdirect/rdma"
)

// Config configures the provider. The zero value is ready to use.
type Config struct {
	// Logger receives connection events; nil discards them.
	Logger *slog.Logger
	// CRC asks for MPA CRC32c on connections this side sets up or accepts.
	// CRC is used when either side asks for it. Default off, as in Linux
	// siw: TCP checksums already cover loopback and data-center links.
	CRC bool
	// MaxSegment caps the DDP payload sent in one FPDU, on top of the
	// FPDU size (MaxFPDU, or the MSS). Default 65536-64 (the MPA length
	// field is 16 bits).
	MaxSegment int
	// MaxFPDU, if set, is the largest FPDU this side sends, counted on the
	// wire (MPA length field, DDP/RDMAP header, payload, pad and CRC
	// field), in place of the default: the connection's TCP MSS, as RFC
	// 5044 and Linux siw size FPDUs, or 64 KiB when both ends announce
	// large FPDUs. It does not bound what this side accepts: any FPDU
	// up to 64 KiB is read.
	MaxFPDU int
	// NoLargeFPDU keeps the opt-in to large FPDUs out of the MPA
	// exchange (the reserved MPA flag bits stay zero, as RFC 5044 asks
	// of senders): FPDUs are then always sized to the MSS (or MaxFPDU).
	NoLargeFPDU bool
	// HandshakeTimeout bounds the MPA request/reply exchange when the
	// context has no deadline (a context deadline replaces it). Default 10s.
	HandshakeTimeout time.Duration
	// Dialer sets up TCP connections; nil uses a zero net.Dialer.
	Dialer *net.Dialer
	// FirstSendDelay holds the initiator's first FPDU back for this long
	// after the MPA Reply, unless the responder sends first. Linux siw (up
	// to at least 6.12) sends its MPA Reply before it attaches its receive
	// path to the socket (siw_accept: siw_send_mpareqrep, then
	// siw_qp_socket_assoc); an FPDU arriving in between sits unread until
	// more data comes, which in a request/response protocol is never.
	// Default 200ms (what the VM tests verified); negative disables it,
	// which is safe with responders that are not siw, this one included.
	FirstSendDelay time.Duration
}

// Defaults.
const (
	DefaultMaxSegment       = 65536 - 64
	DefaultHandshakeTimeout = 10 * time.Second
	DefaultFirstSendDelay   = 200 * time.Millisecond
	defaultSendQueueDepth   = 128
	defaultRecvQueueDepth   = 256
	defaultORD              = 16
	defaultIRD              = 16
	// maxIRDORD is the largest IRD/ORD we accept or grant (RFC 6581 allows
	// 14 bits); each inbound read slot costs only a small struct.
	maxIRDORD = 1024
)

func (c *Config) withDefaults() Config {
	d := *c
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	if d.MaxSegment <= 0 || d.MaxSegment > wire.MaxULPDU-wire.ReadRequestLen {
		d.MaxSegment = DefaultMaxSegment
	}
	if d.HandshakeTimeout <= 0 {
		d.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if d.FirstSendDelay == 0 {
		d.FirstSendDelay = DefaultFirstSendDelay
	}
	if d.Dialer == nil {
		d.Dialer = &net.Dialer{}
	}
	return d
}

// Provider is the soft-iWARP provider.
type Provider struct {
	cfg Config
}

// New returns a soft-iWARP provider.
func New(cfg Config) *Provider { return &Provider{cfg: cfg.withDefaults()} }

// The provider registers itself as "iwarp", so that importing this package
// makes it the default of code that takes an optional provider (smbd with
// a nil Config.Provider): rdma.OpenDefault gives New(Config{Logger: ...}).
func init() {
	rdma.Register("iwarp", func(c rdma.ProviderConfig) rdma.Provider { return New(Config{Logger: c.Logger}) })
}

// Name returns "iwarp".
func (p *Provider) Name() string { return "iwarp" }

// NewPD allocates a protection domain.
func (p *Provider) NewPD() (rdma.PD, error) {
	return &pd{p: p, mrs: make(map[uint32]*mr)}, nil
}

var _ rdma.Provider = (*Provider)(nil)

// pd is a protection domain: the set of regions its endpoints can reach.
type pd struct {
	p      *Provider
	mu     sync.RWMutex
	mrs    map[uint32]*mr
	eps    int
	closed bool
}

func (d *pd) RegisterMemory(buf []byte, access rdma.Access) (rdma.MR, error) {
	if len(buf) == 0 {
		return nil, fmt.Errorf("%w: empty memory region", rdma.ErrInvalidArgument)
	}
	if access&^(rdma.AccessLocalWrite|rdma.AccessRemoteRead|rdma.AccessRemoteWrite) != 0 {
		return nil, fmt.Errorf("%w: unknown access bits %v", rdma.ErrInvalidArgument, access)
	}
	if access&rdma.AccessRemoteWrite != 0 && access&rdma.AccessLocalWrite == 0 {
		// Verbs rule: remote write implies local write.
		return nil, fmt.Errorf("%w: remote write needs local write", rdma.ErrInvalidArgument)
	}
	m := &mr{pd: d, buf: buf, access: access}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, rdma.ErrClosed
	}
	// STags are random (index and key alike) so a peer cannot guess a
	// region it was not told about; 0 is never used.
	var r [12]byte
	for {
		if _, err := rand.Read(r[:]); err != nil {
			return nil, err
		}
		s := binary.LittleEndian.Uint32(r[:])
		if s == 0 || d.mrs[s] != nil {
			continue
		}
		m.stag = s
		break
	}
	// The tagged offset base is random and page aligned, leaving room so
	// that base+len never wraps.
	m.addr = binary.LittleEndian.Uint64(r[4:])&0x0000_7fff_ffff_f000 | 0x1000
	m.valid.Store(true)
	d.mrs[m.stag] = m
	return m, nil
}

// lookup returns the region for stag, or nil.
func (d *pd) lookup(stag uint32) *mr {
	d.mu.RLock()
	m := d.mrs[stag]
	d.mu.RUnlock()
	return m
}

func (d *pd) NewEndpoint(cfg rdma.EndpointConfig) (rdma.Endpoint, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, rdma.ErrClosed
	}
	d.eps++
	return newEndpoint(d, cfg), nil
}

func (d *pd) endpointClosed() {
	d.mu.Lock()
	d.eps--
	d.mu.Unlock()
}

func (d *pd) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil
	}
	if len(d.mrs) > 0 || d.eps > 0 {
		return fmt.Errorf("%w: PD has %d regions and %d endpoints", rdma.ErrBusy, len(d.mrs), d.eps)
	}
	d.closed = true
	return nil
}

// mr is a registered memory region.
type mr struct {
	pd     *pd
	buf    []byte
	stag   uint32
	addr   uint64
	access rdma.Access
	valid  atomic.Bool
}

func (m *mr) STag() rdma.STag     { return rdma.STag(m.stag) }
func (m *mr) Addr() uint64        { return m.addr }
func (m *mr) Bytes() []byte       { return m.buf }
func (m *mr) Access() rdma.Access { return m.access }
func (m *mr) Valid() bool         { return m.valid.Load() }
func (m *mr) Invalidate() error   { m.valid.Store(false); return nil }
func (m *mr) String() string {
	return fmt.Sprintf("MR{stag %v, %d bytes, %v}", m.STag(), len(m.buf), m.access)
}
func (m *mr) remote(a rdma.Access) bool { return m.valid.Load() && m.access&a != 0 }

func (m *mr) Close() error {
	m.valid.Store(false)
	m.pd.mu.Lock()
	if m.pd.mrs[m.stag] == m {
		delete(m.pd.mrs, m.stag)
	}
	m.pd.mu.Unlock()
	return nil
}

// span checks that [to, to+n) lies inside the region and returns the
// offset of to. The error names the DDP/RDMAP rule broken.
func (m *mr) span(to uint64, n int) (int, error) {
	if to+uint64(n) < to {
		return 0, errTOWrap
	}
	if to < m.addr || to+uint64(n) > m.addr+uint64(len(m.buf)) {
		return 0, errBounds
	}
	return int(to - m.addr), nil
}
