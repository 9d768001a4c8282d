package smbd

// RDMA offload for SMB2 READ and WRITE with an RDMA channel
// (SMB2_CHANNEL_RDMA_V1 and SMB2_CHANNEL_RDMA_V1_INVALIDATE, [MS-SMB2]
// 2.2.19 and 2.2.21, [MS-SMBD] 3.1.4.3-3.1.4.5): the client registers
// memory and sends its Buffer Descriptor V1 list in the request; the server
// RDMA-writes the data of a READ into it, or RDMA-reads the data of a WRITE
// from it, and may invalidate the registration with its response (Send
// with Invalidate).

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"

	"github.com/smbdirect/smbdirect/rdma"
	"github.com/smbdirect/smbdirect/smbd/internal/wire"
)

// BufferDescriptor is one SMB_DIRECT_BUFFER_DESCRIPTOR_V1 ([MS-SMBD]
// 2.2.3.1): a registered range the peer may RDMA Read or Write. Offset is
// the provider's address of the first byte, Token its STag.
type BufferDescriptor = wire.BufferDescriptorV1

// BufferDescriptorLen is the wire size of one BufferDescriptor.
const BufferDescriptorLen = wire.BufferDescriptorV1Len

// MaxDescriptors is the most Buffer Descriptor V1 entries accepted in one
// channel list; more is refused as a protocol error rather than believed.
const MaxDescriptors = 256

// AppendBufferDescriptors appends ds in wire format (16 bytes each), the
// ReadChannelInfo or WriteChannelInfo of an SMB2 request.
func AppendBufferDescriptors(b []byte, ds []BufferDescriptor) []byte {
	return wire.AppendBufferDescriptors(b, ds)
}

// ParseBufferDescriptors decodes a channel information blob of 1 to
// MaxDescriptors entries. Errors wrap ErrProtocol.
func ParseBufferDescriptors(b []byte) ([]BufferDescriptor, error) {
	l, err := wire.ParseBufferDescriptors(b, MaxDescriptors)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrProtocol, err)
	}
	ds := make([]BufferDescriptor, l.Len())
	for i := range ds {
		ds[i] = l.At(i)
	}
	return ds, nil
}

// Access is what the peer may do with a registered Buffer.
type Access uint8

const (
	// PeerRead lets the peer RDMA Read the buffer: the data of an SMB2
	// WRITE with an RDMA channel.
	PeerRead Access = 1 << iota
	// PeerWrite lets the peer RDMA Write the buffer: the destination of an
	// SMB2 READ with an RDMA channel.
	PeerWrite
)

func (a Access) rdma() rdma.Access {
	var r rdma.Access
	if a&PeerRead != 0 {
		r |= rdma.AccessRemoteRead
	}
	if a&PeerWrite != 0 {
		r |= rdma.AccessRemoteWrite | rdma.AccessLocalWrite
	}
	return r
}

// ErrInvalidated: the buffer's registration was invalidated (by the
// peer's Send with Invalidate, or by Invalidate) and cannot be used for
// another transfer.
var ErrInvalidated = errors.New("smbd: buffer registration invalidated")

// Buffer is memory, or a file range, registered on a connection for the
// peer's RDMA access. Its Descriptor goes into an SMB2 request's channel
// information. Close it when the request is done: that revokes the peer's
// access before the memory is reused.
type Buffer struct {
	c      *Conn
	mr     rdma.MR
	access Access
	mapped []byte   // the whole mapping of a file range, to unmap
	back   *os.File // where there is no mapping: the file a PeerWrite copy goes back to
	backAt int64
	once   sync.Once
}

// Register registers b for the peer's RDMA access. len(b) may not exceed
// the negotiated MaxReadWriteSize. b must not be touched while the peer
// may access it (until the SMB2 response arrives or the Buffer is closed).
func (c *Conn) Register(b []byte, access Access) (*Buffer, error) {
	if err := c.checkRegister(len(b), access); err != nil {
		return nil, err
	}
	mr, err := c.pd.RegisterMemory(b, access.rdma())
	if err != nil {
		return nil, fmt.Errorf("smbd: registering %d bytes: %w", len(b), err)
	}
	return &Buffer{c: c, mr: mr, access: access}, nil
}

// RegisterFile registers the range [off, off+n) of f for the peer's RDMA
// access by mapping it (MAP_SHARED), so the peer's RDMA Write lands in the
// file's page cache and its RDMA Read is served from it without a copy
// through user memory. For PeerWrite, f must be open for reading and
// writing and is extended to off+n if it is shorter; for PeerRead only,
// the range must lie within the file. The file must not be truncated
// below off+n while the Buffer is open.
//
// Where there is no mmap (Windows), the range is read into memory instead:
// the peer reads the file as it was at registration, and what the peer
// writes (PeerWrite) reaches the file when the Buffer is closed, so f must
// stay open until then. The outcome of a request (data in the file once
// the Buffer is closed) is the same.
func (c *Conn) RegisterFile(f *os.File, off int64, n int, access Access) (*Buffer, error) {
	if err := c.checkRegister(n, access); err != nil {
		return nil, err
	}
	mapped, b, err := mapFile(f, off, n, access&PeerWrite != 0)
	if err != nil {
		return nil, err
	}
	mr, err := c.pd.RegisterMemory(b, access.rdma())
	if err != nil {
		if mapped != nil {
			munmap(mapped)
		}
		return nil, fmt.Errorf("smbd: registering %d bytes of %s: %w", n, f.Name(), err)
	}
	buf := &Buffer{c: c, mr: mr, access: access, mapped: mapped}
	if mapped == nil && access&PeerWrite != 0 {
		buf.back, buf.backAt = f, off
	}
	return buf, nil
}

func (c *Conn) checkRegister(n int, access Access) error {
	if access == 0 || access&^(PeerRead|PeerWrite) != 0 {
		return fmt.Errorf("smbd: register: access must be PeerRead, PeerWrite or both, not %d", access)
	}
	if n <= 0 {
		return fmt.Errorf("smbd: register: empty buffer")
	}
	if n > c.maxRW {
		return fmt.Errorf("%w: %d bytes to register, the negotiated MaxReadWriteSize is %d", ErrMessageTooLarge, n, c.maxRW)
	}
	return nil
}

// mapFile maps [off, off+n) of f (page-aligned underneath) and returns the
// whole mapping and the requested range within it; without mmapFiles, no
// mapping and a copy of the range.
func mapFile(f *os.File, off int64, n int, writable bool) (mapped, b []byte, err error) {
	if off < 0 {
		return nil, nil, fmt.Errorf("smbd: negative file offset %d", off)
	}
	st, err := f.Stat()
	if err != nil {
		return nil, nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, nil, fmt.Errorf("smbd: %s is not a regular file", f.Name())
	}
	end := off + int64(n)
	if st.Size() < end {
		if !writable {
			return nil, nil, fmt.Errorf("smbd: %s has %d bytes, the range ends at %d", f.Name(), st.Size(), end)
		}
		if err := f.Truncate(end); err != nil {
			return nil, nil, fmt.Errorf("smbd: extending %s to %d bytes: %w", f.Name(), end, err)
		}
	}
	if !mmapFiles {
		b = make([]byte, n)
		if _, err := f.ReadAt(b, off); err != nil {
			return nil, nil, fmt.Errorf("smbd: reading %s [%d, %d): %w", f.Name(), off, end, err)
		}
		return nil, b, nil
	}
	page := int64(os.Getpagesize())
	start := off &^ (page - 1)
	mapped, err = mmap(f, start, int(end-start), writable)
	if err != nil {
		return nil, nil, fmt.Errorf("smbd: mapping %s [%d, %d): %w", f.Name(), off, end, err)
	}
	return mapped, mapped[off-start:], nil
}

// Descriptor describes the whole buffer for the peer.
func (b *Buffer) Descriptor() BufferDescriptor {
	return BufferDescriptor{Offset: b.mr.Addr(), Token: uint32(b.mr.STag()), Length: uint32(len(b.mr.Bytes()))}
}

// AppendDescriptor appends the buffer's descriptor in wire format.
func (b *Buffer) AppendDescriptor(dst []byte) []byte {
	return wire.AppendBufferDescriptors(dst, []BufferDescriptor{b.Descriptor()})
}

// Token is the STag the peer uses, and invalidates with Send with
// Invalidate.
func (b *Buffer) Token() uint32 { return uint32(b.mr.STag()) }

// Bytes is the registered memory (for a file range, its mapping, or the
// copy where there is no mmap).
func (b *Buffer) Bytes() []byte { return b.mr.Bytes() }

// Len is the registered length.
func (b *Buffer) Len() int { return len(b.mr.Bytes()) }

// Valid reports whether the peer can still access the buffer: false once
// the peer invalidated it with Send with Invalidate (as a server does for
// SMB2_CHANNEL_RDMA_V1_INVALIDATE) or Invalidate was called.
func (b *Buffer) Valid() bool { return b.mr.Valid() }

// Invalidate revokes the peer's access at once. A request's buffer must be
// invalid before its data is trusted ([MS-SMB2] 3.2.5.1: an RDMA Write
// could otherwise still change it).
func (b *Buffer) Invalidate() error {
	if !b.mr.Valid() {
		return nil
	}
	return b.mr.Invalidate()
}

// Close invalidates and deregisters the buffer (and unmaps a file range,
// or writes a copied PeerWrite range back to its file).
func (b *Buffer) Close() error {
	var err error
	b.once.Do(func() {
		b.mr.Invalidate()
		if b.back != nil {
			// After Invalidate: the peer can no longer change the copy.
			if _, e := b.back.WriteAt(b.mr.Bytes(), b.backAt); e != nil {
				err = fmt.Errorf("smbd: writing the registered range back to %s: %w", b.back.Name(), e)
			}
		}
		if e := b.mr.Close(); err == nil {
			err = e
		}
		if b.mapped != nil {
			if e := munmap(b.mapped); err == nil {
				err = e
			}
		}
	})
	return err
}

// rdmaSlots bounds the RDMA Read/Write requests in flight, on top of the
// send slots, so the send queue never overflows.
const rdmaSlots = 16

// opBit marks the work request IDs of RDMA transfers; send slots use
// small IDs.
const opBit = 1 << 62

// rdmaOp is one RDMA transfer of one or more work requests.
type rdmaOp struct {
	pending int
	err     error
	done    chan struct{}
}

// offloadState is a Conn's RDMA transfers in flight.
type offloadState struct {
	ops          map[uint64]*rdmaOp // by work request ID
	opSeq        uint64
	rdmaInflight int // work requests
}

// RDMAWrite writes src into the peer's buffers, in order, filling each
// descriptor before the next (the server side of an SMB2 READ with an
// RDMA channel). len(src) must equal the descriptors' total length, and
// at most the negotiated MaxReadWriteSize. It returns when the data has
// been handed to the transport and src may be reused. As everywhere in
// RDMA, a Write is not acknowledged by the peer: the peer knows the data
// is in place when the message sent after it arrives (the SMB2 response;
// messages are placed in order), and a Write the peer refuses (bad
// token, bounds or rights) ends the connection with an error wrapping
// rdma.ErrRemoteAccess.
func (c *Conn) RDMAWrite(ctx context.Context, src []byte, remote []BufferDescriptor) error {
	if err := c.checkTransfer(len(src), remote); err != nil {
		return err
	}
	mr, err := c.pd.RegisterMemory(src, 0)
	if err != nil {
		return fmt.Errorf("smbd: rdma write: %w", err)
	}
	defer mr.Close()
	return c.transfer(ctx, rdma.OpWrite, mr, nil, remote)
}

// RDMAWriteFile writes the range of f starting at off, as long as the
// descriptors' total length, into the peer's buffers. The provider sends
// it from the file (sendfile where it can), so the data does not pass
// through user memory.
func (c *Conn) RDMAWriteFile(ctx context.Context, f *os.File, off int64, remote []BufferDescriptor) error {
	total, err := c.checkTotal(remote)
	if err != nil {
		return err
	}
	if off < 0 {
		return fmt.Errorf("smbd: rdma write: negative file offset %d", off)
	}
	if st, err := f.Stat(); err != nil {
		return err
	} else if st.Size() < off+int64(total) {
		return fmt.Errorf("smbd: rdma write: %s has %d bytes, the range ends at %d", f.Name(), st.Size(), off+int64(total))
	}
	return c.transfer(ctx, rdma.OpWrite, nil, &rdma.FileRange{File: f, Offset: off}, remote)
}

// RDMARead reads the peer's buffers, in order, into dst (the server side
// of an SMB2 WRITE with an RDMA channel). len(dst) must equal the
// descriptors' total length.
func (c *Conn) RDMARead(ctx context.Context, dst []byte, remote []BufferDescriptor) error {
	if err := c.checkTransfer(len(dst), remote); err != nil {
		return err
	}
	mr, err := c.pd.RegisterMemory(dst, rdma.AccessLocalWrite)
	if err != nil {
		return fmt.Errorf("smbd: rdma read: %w", err)
	}
	defer mr.Close()
	return c.transfer(ctx, rdma.OpRead, mr, nil, remote)
}

// RDMAReadFile reads the peer's buffers into f starting at off (f open
// for writing; it grows as needed). The data lands in a registered bounce
// buffer and goes to the file with one pwrite: placing it straight into a
// mapping of the file costs a page fault per 4 KiB, which measured slower
// (about 170 MiB/s against more than 1 GiB/s on a 2-vCPU VM).
func (c *Conn) RDMAReadFile(ctx context.Context, f *os.File, off int64, remote []BufferDescriptor) error {
	total, err := c.checkTotal(remote)
	if err != nil {
		return err
	}
	if off < 0 {
		return fmt.Errorf("smbd: rdma read: negative file offset %d", off)
	}
	bp := bouncePool.Get().(*[]byte)
	defer bouncePool.Put(bp)
	if cap(*bp) < total {
		*bp = make([]byte, total)
	}
	b := (*bp)[:total]
	mr, err := c.pd.RegisterMemory(b, rdma.AccessLocalWrite)
	if err != nil {
		return fmt.Errorf("smbd: rdma read: %w", err)
	}
	err = c.transfer(ctx, rdma.OpRead, mr, nil, remote)
	mr.Close()
	if err != nil {
		return err
	}
	if _, err := f.WriteAt(b, off); err != nil {
		return fmt.Errorf("smbd: rdma read: writing %s: %w", f.Name(), err)
	}
	return nil
}

// bouncePool holds RDMAReadFile's buffers (up to MaxReadWriteSize each).
var bouncePool = sync.Pool{New: func() any { return new([]byte) }}

func (c *Conn) checkTotal(remote []BufferDescriptor) (int, error) {
	if len(remote) == 0 || len(remote) > MaxDescriptors {
		return 0, fmt.Errorf("%w: %d buffer descriptors, want 1 to %d", ErrProtocol, len(remote), MaxDescriptors)
	}
	var total uint64
	for _, d := range remote {
		if d.Length == 0 {
			return 0, fmt.Errorf("%w: buffer descriptor of length 0", ErrProtocol)
		}
		total += uint64(d.Length)
	}
	if total > uint64(c.maxRW) {
		return 0, fmt.Errorf("%w: %d bytes by RDMA, the negotiated MaxReadWriteSize is %d", ErrMessageTooLarge, total, c.maxRW)
	}
	return int(total), nil
}

func (c *Conn) checkTransfer(n int, remote []BufferDescriptor) error {
	total, err := c.checkTotal(remote)
	if err != nil {
		return err
	}
	if n != total {
		return fmt.Errorf("smbd: %d local bytes for %d bytes of buffer descriptors", n, total)
	}
	return nil
}

// transfer posts one work request per descriptor and waits for them all.
// Exactly one of mr and file is set.
func (c *Conn) transfer(ctx context.Context, op rdma.Opcode, mr rdma.MR, file *rdma.FileRange, remote []BufferDescriptor) error {
	// pending starts at 1, the poster's own reference, so the op cannot
	// complete while requests are still being posted.
	o := &rdmaOp{pending: 1, done: make(chan struct{})}
	stop := context.AfterFunc(ctx, func() {
		c.mu.Lock()
		c.broadcastLocked()
		c.mu.Unlock()
	})
	defer stop()
	if op == rdma.OpRead && c.drv != nil {
		// Read Responses come in on the receive path, which no waiting
		// reader may be running now.
		c.drv.Background()
	}
	c.mu.Lock()
	c.opSeq++
	id := opBit | c.opSeq
	c.ops[id] = o
	c.mu.Unlock()
	off := 0
	var postErr error
	for i, d := range remote {
		wr := rdma.SendWR{ID: id, Op: op, RemoteSTag: rdma.STag(d.Token), RemoteAddr: d.Offset}
		if file != nil {
			wr.File = &rdma.FileRange{File: file.File, Offset: file.Offset + int64(off), Length: int(d.Length)}
		} else {
			wr.Local = rdma.SGE{MR: mr, Offset: off, Length: int(d.Length)}
		}
		if postErr = c.postRDMA(ctx, o, &wr, i+1 < len(remote)); postErr != nil {
			break
		}
		off += int(d.Length)
	}
	c.mu.Lock()
	o.pending--
	if o.pending == 0 {
		delete(c.ops, id)
		close(o.done)
	}
	c.mu.Unlock()
	// The requests reference mr: wait for every one of them, even when ctx
	// ends (cancelling ends the connection, which flushes them quickly).
	select {
	case <-o.done:
	case <-ctx.Done():
		c.fail(fmt.Errorf("smbd: RDMA transfer abandoned: %w", ctx.Err()))
		<-o.done
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if postErr != nil {
		return postErr
	}
	if o.err != nil {
		if errors.Is(o.err, rdma.ErrFlushed) && c.err != nil {
			return c.connErrLocked()
		}
		return fmt.Errorf("smbd: %s: %w", op, o.err)
	}
	return nil
}

// postRDMA waits for room in the send queue and posts wr.
func (c *Conn) postRDMA(ctx context.Context, o *rdmaOp, wr *rdma.SendWR, more bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.rdmaInflight >= rdmaSlots {
		if c.err != nil {
			return c.connErrLocked()
		}
		if c.closed {
			return net.ErrClosed
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		c.cond.Wait()
	}
	if c.err != nil {
		return c.connErrLocked()
	}
	wr.More = more && c.rdmaInflight+1 < rdmaSlots
	if err := c.ep.PostSend(wr); err != nil {
		if e := c.ep.Err(); e != nil {
			return e // why the endpoint is down, not the symptom
		}
		return err
	}
	c.rdmaInflight++
	o.pending++
	c.kickPoll() // its completion is the poll loop's to take
	return nil
}

// rdmaCompletionLocked accounts for the completion of an RDMA transfer's
// work request.
func (c *Conn) rdmaCompletionLocked(id uint64, err error) {
	c.rdmaInflight--
	o := c.ops[id]
	if o == nil {
		return
	}
	if err != nil && o.err == nil {
		o.err = err
	}
	o.pending--
	if o.pending == 0 {
		delete(c.ops, id)
		close(o.done)
	}
	c.broadcastLocked()
}
