// Package channel is smbdirectd's server-side RDMA channel: the mirror of
// smb2rdma, for an SMB server that knows nothing of RDMA. SMB2 READ and
// WRITE requests from the peer with an RDMA channel
// (SMB2_CHANNEL_RDMA_V1[_INVALIDATE], [MS-SMB2] 2.2.19, 2.2.21) are handed
// to the program as inline requests: the daemon RDMA-reads a WRITE's data
// from the peer's buffers first, and RDMA-writes a READ response's data
// into them before sending the response in the RDMA form ([MS-SMB2]
// 3.3.5.12-13: DataLength 0, DataRemaining the bytes written), with Send
// with Invalidate for _V1_INVALIDATE.
//
// A Channel is a state machine apart from the pumps: FromPeer rewrites what
// the peer sends, FromProgram what the program answers, and the RDMA
// transfers go through the RDMA interface (an smbd.Conn, or a fake in
// tests).
package channel

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/smbdirect/smbdirect/internal/framing"
	"github.com/smbdirect/smbdirect/internal/smb2"
	"github.com/smbdirect/smbdirect/smbd"
)

// RDMA is what a Channel needs of the SMB Direct connection: smbd.Conn's
// transfers. len(buf) equals the descriptors' total length.
type RDMA interface {
	RDMARead(ctx context.Context, dst []byte, remote []smbd.BufferDescriptor) error
	RDMAWrite(ctx context.Context, src []byte, remote []smbd.BufferDescriptor) error
}

// Counters are what channels did; the daemon shares one set among its
// connections.
type Counters struct {
	// ReadBytes is WRITE data RDMA-read from peers, Reads the WRITE
	// requests it served; WriteBytes is READ data RDMA-written to peers,
	// Writes the READ responses it went with.
	ReadBytes, WriteBytes, Reads, Writes atomic.Int64
	// Passthrough counts READ and WRITE requests with an RDMA channel,
	// and responses to them, that could not be rewritten (signed,
	// malformed, larger than allowed) and went on unchanged.
	Passthrough atomic.Int64
}

// Limits.
const (
	// MaxDescriptors is the most Buffer Descriptor V1 entries rewritten
	// in one request (Linux and Windows send one); more passes through.
	MaxDescriptors = 16
	// DefaultMaxPending bounds the requests remembered until their
	// response: READs, and WRITEs whose response invalidates.
	DefaultMaxPending = 512
	// maxElements bounds a compound chain that is rewritten (clients
	// send a handful; the plan for it lives in the Channel).
	maxElements = 32
)

// ErrClosed: the Channel was closed while a request waited for room.
var ErrClosed = errors.New("channel: closed")

// Channel rewrites one connection's traffic. FromPeer is called by one
// goroutine (the pump from the peer), FromProgram by another; they share
// only the table of remembered requests.
type Channel struct {
	rdma       RDMA
	maxRW      int
	maxPending int
	cnt        *Counters
	pool       *Pool

	// dialect is what the program chose in its NEGOTIATE response (0
	// until then): SMB 2.x has no RDMA channel, 3.0.0 only
	// SMB2_CHANNEL_RDMA_V1 ([MS-SMB2] 2.2.19).
	dialect atomic.Uint32

	mu      sync.Mutex
	room    sync.Cond // signalled when an entry is freed or the Channel closes
	closed  bool
	pending map[uint64]*entry
	free    []*entry // entries no longer pending, for reuse

	// FromPeer's scratch.
	plan  [maxElements]step
	pdesc [MaxDescriptors]smbd.BufferDescriptor
	// FromProgram's scratch.
	udesc [MaxDescriptors]smbd.BufferDescriptor
}

// entry is a remembered request.
type entry struct {
	read bool
	inv  uint32 // token to invalidate with the final response, or 0
	nd   int
	desc [MaxDescriptors]smb2.Descriptor
}

// New returns a Channel for a connection with the negotiated
// MaxReadWriteSize maxRW; maxPending <= 0 means DefaultMaxPending.
func New(r RDMA, maxRW, maxPending int, cnt *Counters) *Channel {
	if maxPending <= 0 {
		maxPending = DefaultMaxPending
	}
	if cnt == nil {
		cnt = new(Counters)
	}
	c := &Channel{rdma: r, maxRW: maxRW, maxPending: maxPending, cnt: cnt, pool: &Buffers, pending: make(map[uint64]*entry)}
	c.room.L = &c.mu
	return c
}

// Close wakes a FromPeer waiting for room; later ones fail with ErrClosed.
func (c *Channel) Close() {
	c.mu.Lock()
	c.closed = true
	c.room.Broadcast()
	c.mu.Unlock()
}

// Pending is the number of remembered requests.
func (c *Channel) Pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.pending)
}

type kind uint8

const (
	pass  kind = iota
	write      // WRITE with an RDMA channel: RDMA-read n bytes, hand it inline
	read       // READ with an RDMA channel: hand it inline, remember it
)

// step is the plan for one element of a chain from the peer.
type step struct {
	start, end int
	kind       kind
	n          uint32 // WRITE: bytes to RDMA-read
	req        smb2.WriteRequest
	rreq       smb2.ReadRequest
	desc       smb2.Descriptors
	inv        uint32
	id         uint64
}

// FromPeer rewrites a message from the peer. in is the message with
// framing.HeaderLen bytes of room in front. It returns the framed message
// for the program: in itself when nothing changes, else a buffer from the
// Channel's pool, returned too, for the caller to Put once written.
//
// It blocks while the table of remembered requests is full (back-pressure
// on the peer: its requests stay unread, it runs out of credits).
func (c *Channel) FromPeer(ctx context.Context, in []byte) (out []byte, buf *[]byte, err error) {
	msg := in[framing.HeaderLen:]
	size, entries, ok := c.planPeer(msg)
	if !ok {
		if err := framing.Put(in, len(msg)); err != nil {
			return nil, nil, err
		}
		return in, nil, nil
	}
	if err := c.reserve(entries); err != nil {
		return nil, nil, err
	}
	buf = c.pool.Get(size)
	out, err = c.buildPeer(ctx, msg, (*buf)[:0])
	if err != nil {
		c.pool.Put(buf)
		return nil, nil, err
	}
	return out, buf, nil
}

// planPeer classifies the elements of msg into c.plan. ok is false when
// there is nothing to rewrite; else size bounds the framed output and
// entries is the number of requests to remember.
func (c *Channel) planPeer(msg []byte) (size, entries int, ok bool) {
	if !smb2.IsSMB2(msg) {
		return 0, 0, false // a transform (encrypted) or compressed message, or not SMB2
	}
	size = framing.HeaderLen
	budget := uint64(c.maxRW) // RDMA-read bytes allowed in this message
	np := 0
	for off := 0; off < len(msg); np++ {
		e, next, err := smb2.Element(msg, off)
		if err != nil || np == maxElements {
			return 0, 0, false // a bad chain passes on untouched: the program refuses it
		}
		s := &c.plan[np]
		*s = step{start: off, end: next}
		c.classify(s, e, &budget)
		switch s.kind {
		case write:
			size += int(s.n) + 8
			ok = true
			if s.inv != 0 {
				entries++
			}
		case read:
			ok = true
			entries++
		}
		size += next - off + 8
		off = next
	}
	return size, entries, ok
}

// classify decides what to do with the request e.
func (c *Channel) classify(s *step, e []byte, budget *uint64) {
	flags := binary.LittleEndian.Uint32(e[16:])
	cmd := binary.LittleEndian.Uint16(e[12:])
	if flags&smb2.FlagResponse != 0 || (cmd != smb2.CommandRead && cmd != smb2.CommandWrite) {
		return
	}
	s.id = binary.LittleEndian.Uint64(e[24:])
	var ch uint32
	var ci []byte
	var length uint64
	if cmd == smb2.CommandRead {
		r, err := smb2.ParseReadRequest(e)
		if err != nil || r.Channel == smb2.ChannelNone {
			return
		}
		s.rreq, ch, ci, length = r, r.Channel, r.ChannelInfo, uint64(r.Length)
	} else {
		w, err := smb2.ParseWriteRequest(e)
		if err != nil || w.Channel == smb2.ChannelNone {
			return
		}
		if w.Length != 0 { // inline data and an RDMA channel: nonsense
			c.cnt.Passthrough.Add(1)
			return
		}
		s.req, ch, ci, length = w, w.Channel, w.ChannelInfo, uint64(w.RemainingBytes)
	}
	dialect := c.dialect.Load()
	if flags&smb2.FlagSigned != 0 || (ch != smb2.ChannelRDMAV1 && ch != smb2.ChannelRDMAV1Invalidate) ||
		(dialect != 0 && dialect < smb2.Dialect300) || (dialect == smb2.Dialect300 && ch == smb2.ChannelRDMAV1Invalidate) {
		// Rewriting would break the signature; a channel unknown or not
		// in the dialect is the program's to refuse.
		c.cnt.Passthrough.Add(1)
		return
	}
	d, err := smb2.ParseDescriptors(ci, MaxDescriptors)
	if err != nil || length > uint64(c.maxRW) || length > d.Total() {
		c.cnt.Passthrough.Add(1)
		return
	}
	s.desc = d
	if ch == smb2.ChannelRDMAV1Invalidate {
		s.inv = d.At(0).Token
	}
	if cmd == smb2.CommandRead {
		s.kind = read
		return
	}
	if length > *budget {
		c.cnt.Passthrough.Add(1)
		return
	}
	*budget -= length
	s.kind, s.n = write, uint32(length)
}

// reserve waits until n more requests can be remembered.
func (c *Channel) reserve(n int) error {
	if n == 0 {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for len(c.pending)+n > c.maxPending && !c.closed {
		c.room.Wait()
	}
	if c.closed {
		return ErrClosed
	}
	return nil
}

// remember files a request (room was reserved). A message ID already in
// the table (a peer reusing one) replaces the older request, whose
// response can then no longer be matched.
func (c *Channel) remember(id uint64, readReq bool, inv uint32, d smb2.Descriptors) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.pending[id]
	if e == nil {
		if k := len(c.free); k > 0 {
			e, c.free = c.free[k-1], c.free[:k-1]
		} else {
			e = new(entry)
		}
		c.pending[id] = e
	}
	e.read, e.inv, e.nd = readReq, inv, d.Len()
	for i := range e.nd {
		e.desc[i] = d.At(i)
	}
}

// buildPeer writes the framed rewritten chain into out, following c.plan.
func (c *Channel) buildPeer(ctx context.Context, msg, out []byte) ([]byte, error) {
	out = out[:framing.HeaderLen]
	for i := 0; ; i++ {
		s := &c.plan[i]
		e := msg[s.start:s.end]
		last := s.end == len(msg)
		start := len(out)
		switch s.kind {
		case pass:
			out = append(out, e...)
		case read:
			out = append(out, e[:smb2.HeaderLen]...)
			r := s.rreq
			r.Channel, r.ChannelInfo = smb2.ChannelNone, nil
			out = smb2.AppendReadRequest(out, &r)
			c.remember(s.id, true, s.inv, s.desc)
		case write:
			out = append(out, e[:smb2.HeaderLen]...)
			out = smb2.AppendInlineWriteRequest(out, &s.req, s.n)
			if s.n == 0 {
				out = append(out, 0)
			} else {
				at := len(out)
				out = out[:at+int(s.n)]
				if err := c.rdma.RDMARead(ctx, out[at:], trim(c.pdesc[:0], s.desc, s.n)); err != nil {
					return nil, fmt.Errorf("channel: RDMA read of %d bytes of WRITE data: %w", s.n, err)
				}
				c.cnt.Reads.Add(1)
				c.cnt.ReadBytes.Add(int64(s.n))
			}
			if s.inv != 0 {
				c.remember(s.id, false, s.inv, s.desc)
			}
		}
		if last {
			smb2.SetNextCommand(out[start:], 0)
			break
		}
		for (len(out)-start)%8 != 0 {
			out = append(out, 0)
		}
		smb2.SetNextCommand(out[start:], uint32(len(out)-start))
	}
	if err := framing.Put(out, len(out)-framing.HeaderLen); err != nil {
		return nil, err
	}
	return out, nil
}

// trim appends to dst the descriptors of l that cover the first n bytes,
// the last one shortened.
func trim(dst []smbd.BufferDescriptor, l smb2.Descriptors, n uint32) []smbd.BufferDescriptor {
	for i := 0; i < l.Len() && n > 0; i++ {
		d := l.At(i)
		k := min(d.Length, n)
		dst = append(dst, smbd.BufferDescriptor{Offset: d.Offset, Token: d.Token, Length: k})
		n -= k
	}
	return dst
}

func trimEntry(dst []smbd.BufferDescriptor, e *entry, n uint32) []smbd.BufferDescriptor {
	for i := 0; i < e.nd && n > 0; i++ {
		d := e.desc[i]
		k := min(d.Length, n)
		dst = append(dst, smbd.BufferDescriptor{Offset: d.Offset, Token: d.Token, Length: k})
		n -= k
	}
	return dst
}

// take removes and returns the request remembered under id, if it is a
// command cmd; the caller gives it back with release.
func (c *Channel) take(id uint64, cmd uint16) *entry {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.pending[id]
	if e == nil || e.read != (cmd == smb2.CommandRead) {
		return nil
	}
	delete(c.pending, id)
	return e
}

func (c *Channel) release(e *entry) {
	c.mu.Lock()
	c.free = append(c.free, e)
	c.room.Signal()
	c.mu.Unlock()
}

// FromProgram rewrites, in place, a PDU from the program (without its
// framing header) and returns what to send to the peer, and the token to
// invalidate with it (Send with Invalidate), 0 for none. Successful
// READ responses to remembered requests have their data RDMA-written to
// the peer's buffers first and go in the RDMA form.
func (c *Channel) FromProgram(ctx context.Context, pdu []byte) (out []byte, inv uint32, err error) {
	if !smb2.IsSMB2(pdu) {
		return pdu, 0, nil
	}
	w := 0 // the rewritten chain is pdu[:w]; it never grows past what is read
	for off := 0; off < len(pdu); {
		e, next, err := smb2.Element(pdu, off)
		if err != nil {
			// The rest of a bad chain goes as it is, after what was
			// rewritten: the peer refuses it either way.
			w += copy(pdu[w:], pdu[off:])
			return pdu[:w], inv, nil
		}
		last := next == len(pdu)
		n, einv, err := c.response(ctx, e)
		if err != nil {
			return nil, 0, err
		}
		if inv == 0 {
			inv = einv // one token per Send: the first (the others are the peer's to invalidate)
		}
		start := w
		if n < 0 { // unchanged
			w += copy(pdu[w:], e)
		} else {
			w += copy(pdu[w:], e[:smb2.HeaderLen])
			smb2.AppendReadResponseRDMA(pdu[w:w], uint32(n))
			w += smb2.ReadResponseRDMALen - smb2.HeaderLen
			if !last {
				smb2.SetNextCommand(pdu[start:], uint32(w-start)) // 80: already a multiple of 8
			}
		}
		off = next
	}
	return pdu[:w], inv, nil
}

// response handles one response element: n >= 0 when it is a READ
// response whose n bytes went by RDMA (the element is to be rewritten),
// -1 when it goes unchanged; inv is the token its request asked to
// invalidate.
func (c *Channel) response(ctx context.Context, e []byte) (n int, inv uint32, err error) {
	flags := binary.LittleEndian.Uint32(e[16:])
	cmd := binary.LittleEndian.Uint16(e[12:])
	status := binary.LittleEndian.Uint32(e[8:])
	if flags&smb2.FlagResponse == 0 {
		return -1, 0, nil
	}
	if cmd == smb2.CommandNegotiate && status == 0 && len(e) >= smb2.HeaderLen+6 {
		// NEGOTIATE response: StructureSize, SecurityMode, DialectRevision.
		c.dialect.Store(uint32(binary.LittleEndian.Uint16(e[smb2.HeaderLen+4:])))
		return -1, 0, nil
	}
	if cmd != smb2.CommandRead && cmd != smb2.CommandWrite {
		return -1, 0, nil
	}
	if flags&smb2.FlagAsync != 0 && status == smb2.StatusPending {
		return -1, 0, nil // interim: the final response follows
	}
	ent := c.take(binary.LittleEndian.Uint64(e[24:]), cmd)
	if ent == nil {
		return -1, 0, nil
	}
	defer c.release(ent)
	inv = ent.inv
	if !ent.read || status != 0 {
		return -1, inv, nil
	}
	r, err := smb2.ParseReadResponse(e)
	var total uint64
	for i := range ent.nd {
		total += uint64(ent.desc[i].Length)
	}
	if err != nil || flags&smb2.FlagSigned != 0 || uint64(r.DataLength) > total {
		c.cnt.Passthrough.Add(1)
		return -1, inv, nil
	}
	if len(r.Data) > 0 {
		if err := c.rdma.RDMAWrite(ctx, r.Data, trimEntry(c.udesc[:0], ent, r.DataLength)); err != nil {
			return 0, 0, fmt.Errorf("channel: RDMA write of %d bytes of READ data: %w", len(r.Data), err)
		}
	}
	c.cnt.Writes.Add(1)
	c.cnt.WriteBytes.Add(int64(len(r.Data)))
	return len(r.Data), inv, nil
}
