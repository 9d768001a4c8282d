package client

import (
	"context"
	"os"

	"github.com/smbdirect/smbdirect/internal/ctl"
)

// Descriptor is an MS-SMBD Buffer Descriptor V1, as it goes into an SMB2
// request's channel information (16 bytes: offset, token, length).
type Descriptor = ctl.Descriptor

// Access says what the peer may do with a registration.
type Access uint8

const (
	PeerRead  Access = ctl.AccessPeerRead  // the data of an SMB2 WRITE
	PeerWrite Access = ctl.AccessPeerWrite // the destination of an SMB2 READ
)

// Registration is a file range (or memfd range) registered on a
// connection for the peer's RDMA access.
type Registration struct {
	c          *Client
	Handle     uint64
	Descriptor Descriptor
}

// Register registers [off, off+n) of f on connection conn. For PeerWrite,
// f must be open read-write. The daemon maps the range: the peer's RDMA
// Write lands in the file (or the memfd the client also maps).
func (c *Client) Register(ctx context.Context, conn uint64, f *os.File, off int64, n int, access Access) (*Registration, error) {
	r, err := c.call(ctx, func(id uint64) []byte {
		return ctl.AppendRegister(nil, id, &ctl.Register{Conn: conn, Access: uint8(access), Offset: uint64(off), Length: uint32(n)})
	}, []int{int(f.Fd())})
	if err != nil {
		return nil, err
	}
	m, err := ctl.ParseRegistered(r.body)
	if err != nil {
		return nil, err
	}
	return &Registration{c: c, Handle: m.Reg, Descriptor: m.Descriptor}, nil
}

// Deregister revokes the peer's access and releases the registration.
// invalidatedByPeer reports that the peer had already invalidated it with
// Send with Invalidate (as a server does for an RDMA_V1_INVALIDATE
// channel).
func (r *Registration) Deregister(ctx context.Context) (invalidatedByPeer bool, err error) {
	rep, err := r.c.call(ctx, func(id uint64) []byte { return ctl.AppendDeregister(nil, id, &ctl.Deregister{Reg: r.Handle}) }, nil)
	if err != nil {
		return false, err
	}
	m, err := ctl.ParseOK(rep.body)
	return m.Value == 1, err
}

// Call is a request in flight; Wait returns its result.
type Call struct {
	c   *Client
	ch  chan reply
	id  uint64
	err error
}

// Wait waits for the result: the bytes transferred.
func (k *Call) Wait(ctx context.Context) (int64, error) {
	if k.err != nil {
		return 0, k.err
	}
	select {
	case r, ok := <-k.ch:
		if !ok {
			return 0, k.c.closedErr()
		}
		if err := replyErr(r); err != nil {
			return 0, err
		}
		m, err := ctl.ParseOK(r.body)
		return int64(m.Value), err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

func (c *Client) start(typ uint8, conn uint64, f *os.File, off int64, remote []Descriptor) *Call {
	k := &Call{c: c, ch: make(chan reply, 1)}
	k.id, k.err = c.send(func(id uint64) []byte {
		return ctl.AppendTransfer(nil, typ, id, &ctl.Transfer{Conn: conn, FileOffset: uint64(off), Descriptors: remote})
	}, []int{int(f.Fd())}, k.ch, false)
	return k
}

// StartRDMAWrite asks the daemon to RDMA-write the range of f at off (as
// long as the descriptors' total) to the peer's buffers, and returns at
// once; the server side of an SMB2 READ with an RDMA channel. f may be
// closed as soon as this returns.
func (c *Client) StartRDMAWrite(conn uint64, f *os.File, off int64, remote []Descriptor) *Call {
	return c.start(ctl.TypeRDMAWrite, conn, f, off, remote)
}

// StartRDMARead asks the daemon to RDMA-read the peer's buffers into f at
// off (f open read-write); the server side of an SMB2 WRITE.
func (c *Client) StartRDMARead(conn uint64, f *os.File, off int64, remote []Descriptor) *Call {
	return c.start(ctl.TypeRDMARead, conn, f, off, remote)
}

// RDMAWrite is StartRDMAWrite and Wait.
func (c *Client) RDMAWrite(ctx context.Context, conn uint64, f *os.File, off int64, remote []Descriptor) (int64, error) {
	return c.StartRDMAWrite(conn, f, off, remote).Wait(ctx)
}

// RDMARead is StartRDMARead and Wait.
func (c *Client) RDMARead(ctx context.Context, conn uint64, f *os.File, off int64, remote []Descriptor) (int64, error) {
	return c.StartRDMARead(conn, f, off, remote).Wait(ctx)
}

// Send sends one SMB2 PDU (without the 4-byte header) on conn; with
// invalidate != 0 as Send with Invalidate of that token (the response to
// a READ or WRITE with SMB2_CHANNEL_RDMA_V1_INVALIDATE). It goes between
// the PDUs written to the stream, never inside one.
func (c *Client) Send(ctx context.Context, conn uint64, pdu []byte, invalidate uint32) error {
	_, err := c.call(ctx, func(id uint64) []byte {
		return ctl.AppendSend(nil, id, &ctl.Send{Conn: conn, Invalidate: invalidate, PDU: pdu})
	}, nil)
	return err
}
