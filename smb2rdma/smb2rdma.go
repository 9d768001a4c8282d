// Package smb2rdma gives an SMB2 client written for TCP the RDMA channel
// of SMB Direct without changing it. Wrap an smbd.Conn and hand the result
// to the client as its net.Conn: large READ requests are rewritten to ask
// the server to RDMA-write the data into memory registered here, and
// large WRITE requests to let it RDMA-read the data from here
// (SMB2_CHANNEL_RDMA_V1_INVALIDATE, [MS-SMB2] 2.2.19, 2.2.21); the READ
// response is turned back into the inline form the client expects.
//
// Only requests the client did not sign are rewritten: changing a signed
// message would break its signature, so signed (and encrypted, and
// compound) requests pass through unchanged and are then bound by SMB
// Direct's fragmented message size. A server that requires signing
// therefore gets no offload through this package; an SMB2 client that
// knows about the RDMA channel builds such requests itself with the
// smbd.Conn offload API.
package smb2rdma

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"

	"github.com/smbdirect/smbdirect/internal/framing"
	"github.com/smbdirect/smbdirect/internal/smb2"
	"github.com/smbdirect/smbdirect/smbd"
)

// Config tunes the offload. The zero value is ready to use.
type Config struct {
	// Threshold is the smallest READ or WRITE length sent by RDMA (default
	// 4096, Linux cifs.ko's rdma_readwrite_threshold). Smaller ones go
	// inline, where a copy costs less than a registration.
	Threshold int
	// NoInvalidate asks for SMB2_CHANNEL_RDMA_V1, without the server's
	// Send with Invalidate; the registration is then invalidated locally
	// when the response arrives. The default is _V1_INVALIDATE.
	NoInvalidate bool
	// Logger receives offload events; nil discards them.
	Logger *slog.Logger
}

// Stats counts what the offload did.
type Stats struct {
	// Reads and Writes are the requests sent with an RDMA channel.
	Reads  uint64 `json:"rdma_reads"`
	Writes uint64 `json:"rdma_writes"`
	// BytesPlaced is READ data the server RDMA-wrote into our memory;
	// BytesFetched is WRITE data it RDMA-read from it.
	BytesPlaced  uint64 `json:"bytes_placed"`
	BytesFetched uint64 `json:"bytes_fetched"`
	// Inline counts READ and WRITE requests left as they were (small,
	// signed, compound, or larger than MaxReadWriteSize).
	Inline uint64 `json:"inline"`
	// PeerInvalidated counts registrations the server invalidated with
	// its response (Send with Invalidate); the others were invalidated
	// here.
	PeerInvalidated uint64 `json:"peer_invalidated"`
}

// Channel is what the offload needs under the SMB2 client: whole PDUs and
// registrations. An smbd.Conn is one (Wrap); a connection held by
// smbdirectd is another (smbdirectd/client).
type Channel interface {
	net.Conn // deadlines, addresses and Close; Read and Write are not used
	// WriteMessage sends one PDU; ReadMessage receives one into buf.
	WriteMessage(pdu []byte) error
	ReadMessage(buf []byte) (int, error)
	// MaxReadWriteSize bounds one registration; MaxMessageSize is the
	// largest PDU that can arrive.
	MaxReadWriteSize() int
	MaxMessageSize() int
	// Register makes n bytes available to the peer: for its RDMA Write
	// when peerWrite, else for its RDMA Read, holding a copy of data.
	Register(n int, peerWrite bool, data []byte) (Region, error)
}

// Region is a registration of a Channel.
type Region interface {
	// AppendDescriptor appends its Buffer Descriptor V1.
	AppendDescriptor(b []byte) []byte
	// Invalidate revokes the peer's access (if the peer has not already,
	// with Send with Invalidate; byPeer says so).
	Invalidate() (byPeer bool, err error)
	// Bytes is the memory, valid until Close.
	Bytes() []byte
	Close() error
}

// Conn is a Channel seen by an SMB2 client as a TCP connection, with READ
// and WRITE offloaded to RDMA. Read and Write carry Direct TCP framed
// PDUs; the other methods are the Channel's.
type Conn struct {
	net.Conn
	ch  Channel
	cfg Config
	log *slog.Logger

	// Write side: a PDU being assembled from Write calls.
	wmu  sync.Mutex
	whdr framing.Header
	wbuf []byte
	want int // bytes of the current PDU still to come; 0 between PDUs

	// Read side: the current PDU, framed, being handed out: rout, then
	// for a READ response made inline again rdata, the memory the peer
	// RDMA-wrote, released by rdone once read (so the data is copied
	// once, into the reader's buffer).
	rmu   sync.Mutex
	rbuf  []byte
	rout  []byte
	rdata []byte
	rdone func()

	mu      sync.Mutex
	pending map[uint64]*pending

	// dialect is what the server chose in its NEGOTIATE response: SMB 2.x
	// has no RDMA channel, and 3.0.0 knows only SMB2_CHANNEL_RDMA_V1.
	dialect atomic.Uint32

	reads, writes, placed, fetched, inline, peerInv atomic.Uint64
}

// pending is a request whose registration lives until its response.
type pending struct {
	reg  Region
	read bool
	n    int
}

// Wrap returns c as a net.Conn that offloads READ and WRITE. Use only the
// returned Conn from then on.
func Wrap(c *smbd.Conn, cfg *Config) *Conn { return WrapChannel(&smbdChannel{Conn: c}, cfg) }

// WrapChannel is Wrap for any Channel.
func WrapChannel(ch Channel, cfg *Config) *Conn {
	w := &Conn{Conn: ch, ch: ch, pending: make(map[uint64]*pending)}
	if cfg != nil {
		w.cfg = *cfg
	}
	if w.cfg.Threshold <= 0 {
		w.cfg.Threshold = 4096
	}
	w.log = w.cfg.Logger
	if w.log == nil {
		w.log = slog.New(slog.DiscardHandler)
	}
	return w
}

// smbdChannel is an smbd.Conn as a Channel. Registration memory is
// reused within the connection, as smbdirectd's channel does: a 1 MiB
// READ otherwise costs a fresh, cleared MiB of heap (measured reading
// from ksmbd: a tenth of our CPU). Only within the connection: a READ's
// data is handed out up to the length the server claims it wrote.
type smbdChannel struct {
	*smbd.Conn
	mu   sync.Mutex
	free [][]byte // memory of closed registrations, at most keepFree
	open int      // registrations not yet closed; none open, one kept
}

// keepFree bounds the memory kept for reuse: a stream of requests gets a
// buffer back before its next one; a window's worth is not held idle.
const keepFree = 4

func (c *smbdChannel) MaxReadWriteSize() int { return c.Info().MaxReadWriteSize }
func (c *smbdChannel) MaxMessageSize() int   { return c.Info().MaxFragmentedRecv }

func (c *smbdChannel) Register(n int, peerWrite bool, data []byte) (Region, error) {
	c.mu.Lock()
	var mem []byte
	for i := len(c.free) - 1; i >= 0; i-- {
		if cap(c.free[i]) >= n {
			mem = c.free[i][:n]
			c.free = append(c.free[:i], c.free[i+1:]...)
			break
		}
	}
	c.open++
	c.mu.Unlock()
	if mem == nil {
		mem = make([]byte, n)
	}
	access := smbd.PeerRead
	if peerWrite {
		access = smbd.PeerWrite
	} else {
		copy(mem, data)
	}
	b, err := c.Conn.Register(mem, access)
	if err != nil {
		c.release(mem, true)
		return nil, err
	}
	return &smbdRegion{Buffer: b, c: c, mem: mem}, nil
}

// release takes back a closed registration's memory, for reuse if the
// peer's access to it is revoked.
func (c *smbdChannel) release(mem []byte, reuse bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.open--
	if reuse && len(c.free) < keepFree {
		c.free = append(c.free, mem)
	}
	if c.open == 0 && len(c.free) > 1 {
		// Idle: one buffer is kept, for a client that has one request
		// in flight at a time (go-smb2 reading a file): the largest.
		for i, m := range c.free {
			if cap(m) > cap(c.free[0]) {
				c.free[0], c.free[i] = m, c.free[0]
			}
		}
		clear(c.free[1:])
		c.free = c.free[:1]
	}
}

type smbdRegion struct {
	*smbd.Buffer
	c    *smbdChannel
	mem  []byte
	once sync.Once
}

func (r *smbdRegion) Invalidate() (bool, error) {
	if !r.Valid() {
		return true, nil
	}
	return false, r.Buffer.Invalidate()
}

// Close revokes the peer's access (smbd.Buffer.Close); then, and only
// then, the memory may be reused.
func (r *smbdRegion) Close() error {
	var err error
	r.once.Do(func() {
		err = r.Buffer.Close()
		r.c.release(r.mem, err == nil)
	})
	return err
}

// Stats returns the counters.
func (c *Conn) Stats() Stats {
	return Stats{Reads: c.reads.Load(), Writes: c.writes.Load(), BytesPlaced: c.placed.Load(),
		BytesFetched: c.fetched.Load(), Inline: c.inline.Load(), PeerInvalidated: c.peerInv.Load()}
}

// Write takes Direct TCP framed PDUs, as an SMB2 client writes them to a
// TCP socket.
func (c *Conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	n := 0
	for len(p) > 0 {
		if c.want == 0 {
			k, size, done := c.whdr.Take(p)
			p, n = p[k:], n+k
			if !done {
				break
			}
			if size < 0 {
				return n, fmt.Errorf("%w: header % x", smbd.ErrFraming, c.whdr.Last())
			}
			c.want = size
			c.wbuf = c.wbuf[:0]
			continue
		}
		if len(c.wbuf) == 0 && len(p) >= c.want {
			// The whole PDU is at hand: no copy.
			k := c.want
			c.want = 0
			if err := c.send(p[:k]); err != nil {
				return n, err
			}
			p, n = p[k:], n+k
			continue
		}
		k := min(len(p), c.want)
		c.wbuf = append(c.wbuf, p[:k]...)
		c.want -= k
		p, n = p[k:], n+k
		if c.want == 0 {
			if err := c.send(c.wbuf); err != nil {
				return n, err
			}
		}
	}
	return n, nil
}

// send sends one PDU, rewritten when it is a READ or WRITE to offload.
func (c *Conn) send(pdu []byte) error {
	h, err := smb2.ParseHeader(pdu)
	if err != nil || h.Flags&smb2.FlagResponse != 0 || (h.Command != smb2.CommandRead && h.Command != smb2.CommandWrite) {
		return c.ch.WriteMessage(pdu)
	}
	if h.Flags&(smb2.FlagSigned|smb2.FlagRelated) != 0 || h.NextCommand != 0 {
		// Rewriting would break the signature or the compound chain.
		c.inline.Add(1)
		return c.ch.WriteMessage(pdu)
	}
	switch h.Command {
	case smb2.CommandRead:
		if r, err := smb2.ParseReadRequest(pdu); err == nil && r.Channel == smb2.ChannelNone {
			if c.offloadable(int(r.Length)) {
				return c.sendRead(pdu, h, &r)
			}
			c.inline.Add(1)
		}
	case smb2.CommandWrite:
		if r, err := smb2.ParseWriteRequest(pdu); err == nil && r.Channel == smb2.ChannelNone && len(r.ChannelInfo) == 0 {
			if c.offloadable(len(r.Data)) {
				return c.sendWrite(pdu, h, &r)
			}
			c.inline.Add(1)
		}
	}
	return c.ch.WriteMessage(pdu)
}

func (c *Conn) offloadable(n int) bool {
	return c.dialect.Load() >= smb2.Dialect300 && n >= c.cfg.Threshold && n <= c.ch.MaxReadWriteSize()
}

func (c *Conn) channel() uint32 {
	if c.cfg.NoInvalidate || c.dialect.Load() == smb2.Dialect300 {
		return smb2.ChannelRDMAV1
	}
	return smb2.ChannelRDMAV1Invalidate
}

// sendRead registers a buffer for the READ's data and sends the request
// with it as the RDMA channel.
func (c *Conn) sendRead(pdu []byte, h smb2.Header, r *smb2.ReadRequest) error {
	reg, err := c.ch.Register(int(r.Length), true, nil)
	if err != nil {
		return err
	}
	r.Channel = c.channel()
	var ci [smbd.BufferDescriptorLen]byte
	r.ChannelInfo = reg.AppendDescriptor(ci[:0])
	out := append(make([]byte, 0, smb2.HeaderLen+64), pdu[:smb2.HeaderLen]...)
	out = smb2.AppendReadRequest(out, r)
	if err := c.track(h.MessageID, &pending{reg: reg, read: true, n: int(r.Length)}); err != nil {
		reg.Close()
		return err
	}
	if err := c.ch.WriteMessage(out); err != nil {
		c.untrack(h.MessageID)
		return err
	}
	c.reads.Add(1)
	return nil
}

// sendWrite registers a copy of the WRITE's data for the server to RDMA
// Read and sends the request with it as the RDMA channel. The copy is
// needed because the client may reuse its buffer as soon as Write
// returns.
func (c *Conn) sendWrite(pdu []byte, h smb2.Header, r *smb2.WriteRequest) error {
	reg, err := c.ch.Register(len(r.Data), false, r.Data)
	if err != nil {
		return err
	}
	n := len(r.Data)
	r.Channel = c.channel()
	r.RemainingBytes = uint32(n)
	r.Length = 0
	r.Data = nil
	var ci [smbd.BufferDescriptorLen]byte
	r.ChannelInfo = reg.AppendDescriptor(ci[:0])
	out := append(make([]byte, 0, smb2.HeaderLen+64), pdu[:smb2.HeaderLen]...)
	out = smb2.AppendWriteRequest(out, r)
	if err := c.track(h.MessageID, &pending{reg: reg, n: n}); err != nil {
		reg.Close()
		return err
	}
	if err := c.ch.WriteMessage(out); err != nil {
		c.untrack(h.MessageID)
		return err
	}
	c.writes.Add(1)
	return nil
}

func (c *Conn) track(id uint64, p *pending) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pending == nil {
		return io.ErrClosedPipe
	}
	if c.pending[id] != nil {
		return fmt.Errorf("smb2rdma: message ID %d is already in flight", id)
	}
	c.pending[id] = p
	return nil
}

func (c *Conn) untrack(id uint64) *pending {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.pending[id]
	delete(c.pending, id)
	if p != nil {
		p.reg.Close()
	}
	return p
}

// Read returns received PDUs with their Direct TCP header, as a TCP
// socket would; READ responses to offloaded requests carry their data
// inline again.
func (c *Conn) Read(p []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if len(c.rout) == 0 && len(c.rdata) == 0 {
		if err := c.next(); err != nil {
			return 0, err
		}
	}
	n := copy(p, c.rout)
	c.rout = c.rout[n:]
	if len(c.rout) == 0 && len(c.rdata) > 0 {
		k := copy(p[n:], c.rdata)
		c.rdata = c.rdata[k:]
		n += k
		if len(c.rdata) == 0 {
			c.release()
		}
	}
	return n, nil
}

// next receives the next PDU into rbuf (after a gap for its Direct TCP
// header) and makes it the one being read.
func (c *Conn) next() error {
	head, data, done, err := c.receive()
	if err != nil {
		return err
	}
	c.rout, c.rdata, c.rdone = head, data, done
	if len(data) == 0 {
		c.release()
	}
	return nil
}

// release ends the registration of the READ data Read handed out.
func (c *Conn) release() {
	if c.rdone != nil {
		c.rdone()
	}
	c.rdata, c.rdone = nil, nil
}

// receive receives the next PDU and returns it framed: head alone, or for
// a READ response made inline again head (framing header, SMB2 header and
// body) then data, the memory the peer RDMA-wrote, valid until done is
// called (data is nil otherwise, and done too). head is valid until the
// next receive.
func (c *Conn) receive() (head, data []byte, done func(), err error) {
	const hl = framing.HeaderLen
	max := c.ch.MaxMessageSize()
	if cap(c.rbuf) < hl+max {
		c.rbuf = make([]byte, hl+max)
	}
	c.rbuf = c.rbuf[:cap(c.rbuf)]
	n, err := c.ch.ReadMessage(c.rbuf[hl:])
	if err != nil {
		return nil, nil, nil, err
	}
	head, data, done = c.fixResponse(c.rbuf[:hl+n])
	if head == nil {
		head = c.rbuf[:hl+n]
	}
	if err := framing.Put(head, len(head)-hl+len(data)); err != nil {
		if done != nil {
			done()
		}
		// A READ response made inline again can outgrow the 24 bits.
		return nil, nil, nil, fmt.Errorf("smb2rdma: %d-byte response: %w", len(head)-hl+len(data), smbd.ErrMessageTooLarge)
	}
	return head, data, done, nil
}

// WriteTo writes the received PDUs to w, framed as Read returns them,
// until the connection fails or ends (then it returns nil, as io.Copy
// expects of io.EOF). A READ response made inline again goes to w as
// net.Buffers: head, then the data straight from the memory the peer
// RDMA-wrote, so a socket takes it with one writev and the data is not
// copied on the way. Do not mix with Read.
func (c *Conn) WriteTo(w io.Writer) (int64, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	var total int64
	if len(c.rout)+len(c.rdata) > 0 { // left by a Read
		bufs := net.Buffers{c.rout, c.rdata}
		n, err := bufs.WriteTo(w)
		total += n
		k := min(int(n), len(c.rout))
		c.rout, c.rdata = c.rout[k:], c.rdata[int(n)-k:]
		if len(c.rdata) == 0 {
			c.release()
		}
		if err != nil {
			return total, err
		}
	}
	for {
		head, data, done, err := c.receive()
		if err != nil {
			if err == io.EOF {
				err = nil
			}
			return total, err
		}
		var n int64
		if data == nil {
			var k int
			k, err = w.Write(head)
			n = int64(k)
		} else {
			bufs := net.Buffers{head, data}
			n, err = bufs.WriteTo(w)
			done()
		}
		total += n
		if err != nil {
			return total, err
		}
	}
}

// fixResponse releases the registration of an offloaded request when its
// final response arrives and turns a successful READ response back into
// the inline form (data after the body). framed is the message after
// room for its Direct TCP header. For a READ response, head is the start
// of framed (that room, the SMB2 header and the body, rewritten in place)
// and data the registered memory holding the data, valid until done is
// called. head nil means the message stays as it is.
func (c *Conn) fixResponse(framed []byte) (head, data []byte, done func()) {
	msg := framed[framing.HeaderLen:]
	h, err := smb2.ParseHeader(msg)
	if err != nil || h.Flags&smb2.FlagResponse == 0 {
		return nil, nil, nil
	}
	if h.Command == smb2.CommandNegotiate && h.Status == 0 {
		if r, err := smb2.ParseNegotiateResponse(msg); err == nil {
			c.dialect.Store(uint32(r.Dialect))
		}
		return nil, nil, nil
	}
	if h.Flags&smb2.FlagAsync != 0 && h.Status == smb2.StatusPending {
		return nil, nil, nil // interim: the final response follows
	}
	c.mu.Lock()
	p := c.pending[h.MessageID]
	delete(c.pending, h.MessageID)
	c.mu.Unlock()
	if p == nil {
		return nil, nil, nil
	}
	// Revoke the server's access before the data is looked at.
	invalidatedByPeer, err := p.reg.Invalidate()
	if err != nil {
		p.reg.Close()
		c.log.Warn("smb2rdma: invalidating a registration", "err", err)
		return nil, nil, nil
	}
	if invalidatedByPeer {
		c.peerInv.Add(1)
	}
	if !p.read {
		p.reg.Close()
		if h.Status == 0 {
			c.fetched.Add(uint64(p.n))
		}
		return nil, nil, nil
	}
	if h.Status != 0 || h.NextCommand != 0 {
		p.reg.Close()
		return nil, nil, nil
	}
	r, err := smb2.ParseReadResponse(msg)
	if err != nil || r.DataLength != 0 || int(r.DataRemaining) > p.n {
		p.reg.Close()
		c.log.Warn("smb2rdma: unexpected READ response to an RDMA channel request", "err", err,
			"data_length", r.DataLength, "data_remaining", r.DataRemaining, "registered", p.n)
		return nil, nil, nil
	}
	n := int(r.DataRemaining)
	c.placed.Add(uint64(n))
	c.log.Debug("smb2rdma: READ placed by RDMA", "bytes", n, "invalidated_by_peer", invalidatedByPeer)
	// The inline form's header and body are the RDMA form's (as long:
	// ReadResponseDataOffset) with the data fields changed, in place.
	head = framed[:framing.HeaderLen+smb2.ReadResponseDataOffset]
	smb2.PutReadResponseData(head[framing.HeaderLen+smb2.HeaderLen:], uint32(n))
	return head, p.reg.Bytes()[:n], func() { p.reg.Close() }
}

// Close closes the connection and releases every registration.
func (c *Conn) Close() error {
	err := c.ch.Close()
	c.mu.Lock()
	for _, p := range c.pending {
		p.reg.Close()
	}
	c.pending = nil
	c.mu.Unlock()
	return err
}
