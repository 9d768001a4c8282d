// Package rdma is the provider-neutral RDMA API of smbdirect.
//
// It follows the shape of the verbs interface (protection domains, memory
// regions, queue pairs, work requests and completions) so that a cgo
// rdma-core provider can sit behind it later, while staying Go-like:
// blocking calls take a context, errors work with errors.Is/As, and the
// only global state is an optional registry of providers (Register,
// OpenDefault) for code that wants a default one.
//
// The usual flow is:
//
//	pd, _ := provider.NewPD()                   // e.g. iwarp.New(cfg).NewPD()
//	mr, _ := pd.RegisterMemory(buf, rdma.AccessLocalWrite|rdma.AccessRemoteRead)
//	ep, _ := pd.NewEndpoint(rdma.EndpointConfig{})
//	ep.PostRecv(&rdma.RecvWR{ID: 1, Local: rdma.SGE{MR: rbuf}})  // before connecting
//	_ = ep.Connect(ctx, "127.0.0.1:5445", rdma.ConnParams{ORD: 16, IRD: 16})
//	ep.PostSend(&rdma.SendWR{ID: 2, Op: rdma.OpSend, Local: rdma.SGE{MR: sbuf, Length: 64}})
//	n, _ := ep.Poll(ctx, wcs)
//
// Receive buffers must be posted before the peer can send: a Send that finds
// no posted receive is a protocol error (the connection is terminated), as on
// every RDMA transport.
package rdma

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"
)

// Access is the set of rights a memory region grants.
type Access uint32

const (
	// AccessLocalWrite lets the local adapter write into the region: needed
	// for receive buffers and RDMA Read destinations.
	AccessLocalWrite Access = 1 << iota
	// AccessRemoteRead lets the peer RDMA Read from the region.
	AccessRemoteRead
	// AccessRemoteWrite lets the peer RDMA Write into the region.
	AccessRemoteWrite
)

func (a Access) String() string {
	var s []string
	if a&AccessLocalWrite != 0 {
		s = append(s, "local-write")
	}
	if a&AccessRemoteRead != 0 {
		s = append(s, "remote-read")
	}
	if a&AccessRemoteWrite != 0 {
		s = append(s, "remote-write")
	}
	if len(s) == 0 {
		return "local-read"
	}
	return strings.Join(s, "|")
}

// STag is a steering tag: the 32-bit key naming a memory region on the wire
// (the rkey of InfiniBand verbs).
type STag uint32

func (s STag) String() string { return fmt.Sprintf("0x%08x", uint32(s)) }

// Provider creates protection domains. A provider is a whole RDMA stack: the
// embedded soft-iWARP provider, or a verbs device.
type Provider interface {
	// Name identifies the provider, e.g. "iwarp".
	Name() string
	// NewPD allocates a protection domain. Memory regions and endpoints of
	// one PD may be used together; the peer can only reach a region through
	// an endpoint of the region's PD.
	NewPD() (PD, error)
}

// PD is a protection domain.
type PD interface {
	// RegisterMemory registers buf with the given rights. buf must stay
	// untouched by the caller while remote access or posted work may use it.
	RegisterMemory(buf []byte, access Access) (MR, error)
	// NewEndpoint creates an unconnected endpoint (a queue pair). Post
	// receives on it, then Connect it or hand it to ConnRequest.Accept.
	NewEndpoint(cfg EndpointConfig) (Endpoint, error)
	// Listen accepts connection requests on a TCP-style address.
	Listen(ctx context.Context, addr string, cfg ListenConfig) (Listener, error)
	// Close releases the PD. Endpoints and regions must be closed first.
	Close() error
}

// MR is a registered memory region.
type MR interface {
	// STag names the region to the peer (and locally in SGEs).
	STag() STag
	// Addr is the tagged offset (virtual address) of the first byte; the
	// peer addresses byte i of the region as Addr()+i.
	Addr() uint64
	// Bytes returns the registered memory.
	Bytes() []byte
	// Access returns the rights the region was registered with.
	Access() Access
	// Valid reports whether the STag is still valid (not invalidated).
	Valid() bool
	// Invalidate invalidates the STag locally: from then on the peer's
	// accesses fail with a protection error.
	Invalidate() error
	// Close deregisters the region. It fails with ErrBusy while posted work
	// still references it.
	Close() error
}

// SGE is a scatter/gather element: a range of a registered region.
type SGE struct {
	MR     MR
	Offset int
	// Length is the number of bytes; 0 with a non-nil MR means "to the end
	// of the region" for receive buffers and sources.
	Length int
}

// Len returns the effective length of the SGE.
func (s SGE) Len() int {
	if s.MR == nil {
		return 0
	}
	if s.Length == 0 {
		return len(s.MR.Bytes()) - s.Offset
	}
	return s.Length
}

// FileRange is a source of an RDMA Write or Send taken from a file, so that
// a provider can use sendfile/splice instead of copying through user memory.
type FileRange struct {
	File   *os.File
	Offset int64
	Length int
}

// Opcode names a work request or completion.
type Opcode uint8

const (
	// OpSend sends a message into the peer's next posted receive buffer.
	OpSend Opcode = iota + 1
	// OpSendInvalidate sends and invalidates the peer's STag InvalidateSTag.
	OpSendInvalidate
	// OpWrite writes into the peer's region (RemoteSTag, RemoteAddr).
	OpWrite
	// OpRead reads from the peer's region into the local SGE.
	OpRead
	// OpLocalInvalidate invalidates a local STag in send-queue order.
	OpLocalInvalidate
	// OpRecv is the completion of a posted receive.
	OpRecv
	// OpMarker is not work: DirectReceiver.OnRecv queues it to mark where
	// receive completions stop coming through Poll.
	OpMarker
)

var opNames = [...]string{"", "send", "send-invalidate", "rdma-write", "rdma-read", "local-invalidate", "recv", "marker"}

func (o Opcode) String() string {
	if int(o) < len(opNames) && o != 0 {
		return opNames[o]
	}
	return fmt.Sprintf("opcode(%d)", uint8(o))
}

// SendWR is a send-queue work request.
type SendWR struct {
	ID uint64
	Op Opcode
	// Local is the data source of Send/Write and the destination of Read.
	Local SGE
	// File, if set, is the data source of a Send or Write instead of Local.
	File *FileRange
	// RemoteSTag and RemoteAddr address the peer's region for Write/Read.
	RemoteSTag STag
	RemoteAddr uint64
	// InvalidateSTag is the STag invalidated by OpSendInvalidate at the
	// peer, or locally by OpLocalInvalidate.
	InvalidateSTag STag
	// Solicited asks for a solicited event at the peer (Send only).
	Solicited bool
	// Unsignaled suppresses the success completion (errors still complete).
	Unsignaled bool
	// More says another request follows at once: the provider may hold
	// this one back to send both in one go (like a verbs WR list or
	// MSG_MORE). The last request of a batch must not set it.
	More bool
}

// RecvWR is a receive-queue work request.
type RecvWR struct {
	ID    uint64
	Local SGE
}

// Completion reports the end of a work request.
type Completion struct {
	ID uint64
	Op Opcode
	// Err is nil on success. Otherwise it wraps one of the Err* sentinels of
	// this package (ErrFlushed, ErrRemoteAccess, ...).
	Err error
	// Bytes is the number of bytes received (OpRecv) or transferred.
	Bytes int
	// InvalidatedSTag is set on an OpRecv that carried a Send with
	// Invalidate; the local STag has been invalidated.
	InvalidatedSTag STag
	// Invalidated is true when InvalidatedSTag is meaningful.
	Invalidated bool
	// Solicited is true on an OpRecv of a Send with Solicited Event.
	Solicited bool
}

// EndpointConfig sizes an endpoint. Zero values take the documented defaults.
type EndpointConfig struct {
	// SendQueueDepth is the number of send work requests that may be
	// outstanding. Default 128.
	SendQueueDepth int
	// RecvQueueDepth is the number of receives that may be posted. Default 256.
	RecvQueueDepth int
}

// ConnParams are the connection parameters exchanged during setup.
type ConnParams struct {
	// PrivateData is carried in the connection request or reply (at most
	// MaxPrivateData bytes).
	PrivateData []byte
	// ORD is the number of RDMA Reads this side may have outstanding
	// (initiator depth). Default 16.
	ORD int
	// IRD is the number of the peer's RDMA Reads this side accepts at once
	// (responder resources). Default 16.
	IRD int
}

// MaxPrivateData is the largest private data any provider must accept.
const MaxPrivateData = 512 - 4

// ListenConfig configures a Listener.
type ListenConfig struct {
	// Backlog is the number of connection requests queued before Accept.
	// Default 16.
	Backlog int
}

// Listener accepts connection requests.
type Listener interface {
	// Accept waits for the next connection request.
	Accept(ctx context.Context) (ConnRequest, error)
	Addr() net.Addr
	Close() error
}

// ConnRequest is a pending connection request. Exactly one of Accept and
// Reject must be called.
type ConnRequest interface {
	// PrivateData is what the initiator sent.
	PrivateData() []byte
	// RemoteORD and RemoteIRD are the initiator's requested values.
	RemoteORD() int
	RemoteIRD() int
	RemoteAddr() net.Addr
	LocalAddr() net.Addr
	// Accept connects ep (fresh from NewEndpoint, receives already posted)
	// to the initiator and sends params.PrivateData in the reply.
	Accept(ctx context.Context, ep Endpoint, params ConnParams) error
	// Reject refuses the request, sending privateData in the reply.
	Reject(privateData []byte) error
}

// Endpoint is a reliable connected queue pair.
type Endpoint interface {
	// Connect connects the endpoint to addr.
	Connect(ctx context.Context, addr string, params ConnParams) error
	// PostSend queues a send work request. It does not block on the
	// network; it fails with ErrQueueFull when SendQueueDepth requests are
	// outstanding.
	PostSend(wr *SendWR) error
	// PostRecv posts a receive buffer.
	PostRecv(wr *RecvWR) error
	// Poll stores up to len(wc) completions in wc and returns how many. It
	// waits until at least one is available, ctx is done, or the endpoint is
	// closed and drained (then it returns ErrClosed). While it waits, a
	// provider may run its receive path on the calling goroutine (as
	// Driver.Drive does), so that a completion needing incoming data
	// reaches it without a goroutine hand-off.
	Poll(ctx context.Context, wc []Completion) (int, error)
	// Info returns the negotiated connection parameters.
	Info() ConnInfo
	// Done is closed when the connection has ended (error or disconnect).
	Done() <-chan struct{}
	// Err returns why the connection ended, or nil while it is up.
	Err() error
	// Disconnect ends the connection gracefully after the posted sends have
	// gone out. Outstanding work completes with ErrFlushed.
	Disconnect(ctx context.Context) error
	// Abort ends the connection at once and returns without waiting: the
	// transport is torn down (the peer sees the end), Done closes, new
	// posts fail, and outstanding work completes with ErrFlushed once the
	// receive path has wound up, which Abort does not wait for. It takes
	// no lock the receive path holds while it runs a DirectReceiver
	// function, so a ULP may call it from one, or with its own locks held.
	// Close is still needed: it releases the endpoint and waits.
	Abort()
	// Close ends the connection at once and releases the endpoint. After
	// Close returns no data is placed into any memory region anymore.
	Close() error
}

// DirectReceiver is an optional Endpoint interface for latency: receive
// completions are handed to a function on the provider's receive path
// instead of being queued for Poll, which spares a goroutine switch per
// message.
type DirectReceiver interface {
	// OnRecv makes fn receive, in order, every later receive completion
	// the receive path produces (messages, and receives it fails); the
	// flushes at the end of the connection still go to Poll. Completions
	// queued before stay queued, followed by one with Op OpMarker: all
	// receives before the marker come from Poll, all after it through fn.
	// fn runs on whichever goroutine runs the receive path (the
	// provider's, or one in Driver.Drive): it must not block for long,
	// must not keep the pointer, must not call Drive, and must not close
	// the endpoint synchronously (Close waits for the receive path).
	OnRecv(fn func(*Completion))
}

// Driver is an optional Endpoint interface for latency: the receive path
// runs on whichever goroutine waits for it, as a socket read does on TCP,
// so a received message reaches its reader without a goroutine hand-off.
// The provider's own goroutine runs the receive path when no caller does.
type Driver interface {
	// Drive runs the receive path on the calling goroutine until ready
	// reports true when no more data is ready (ready nil: until data came
	// in), or until Interrupt. It returns false at once when another
	// goroutine runs the receive path; that goroutine hands it over after
	// its next delivery, so the caller waits for that delivery by its usual
	// means and then drives. ready runs on the receive path: it must be
	// quick and must not block or call the endpoint.
	Drive(ready func() bool) bool
	// Interrupt makes a Drive in progress return soon, for a caller whose
	// wait ended for a reason other than incoming data (a deadline, a
	// close). A Drive that starts afterwards may return at once.
	Interrupt()
	// Background makes the provider's goroutine run the receive path now:
	// for a caller about to wait for a completion that needs incoming data
	// (an RDMA Read) without driving.
	Background()
}

// ConnInfo describes an established connection.
type ConnInfo struct {
	LocalAddr, RemoteAddr net.Addr
	// ORD and IRD are the negotiated values.
	ORD, IRD int
	// CRC is true when the transport checks data with a CRC (iWARP MPA).
	CRC bool
	// PrivateData is the peer's private data (request or reply).
	PrivateData []byte
	// Provider names the provider, and Detail describes provider specifics.
	Provider string
	Detail   string
}
