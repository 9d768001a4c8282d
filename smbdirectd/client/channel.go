package client

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/smbdirect/smbdirect/internal/framing"
	"github.com/smbdirect/smbdirect/smb2rdma"
	"github.com/smbdirect/smbdirect/smbd"
)

// Channel is a connection held by the daemon as an smb2rdma.Channel:
// smb2rdma.WrapChannel(ch, nil) gives an SMB2 client written for TCP the
// RDMA channel through the daemon. Registrations are memfds (or files
// from Backing) that the daemon maps and this process maps too, so READ
// data the peer RDMA-writes is read here from the shared pages.
type Channel struct {
	net.Conn
	c    *Client
	conn *Conn

	// Backing, if set, provides the file behind each registration of n
	// bytes (it must be read-write and at least n bytes long); the default
	// is an anonymous memfd (on Linux; elsewhere an unlinked temporary
	// file).
	Backing func(n int) (*os.File, error)
	// Timeout bounds each control request (default 30 s).
	Timeout time.Duration

	wmu, rmu sync.Mutex
}

// Channel returns conn as an smb2rdma.Channel. Its net.Conn is a
// duplicate of conn's stream fd.
func (c *Client) Channel(conn *Conn) (*Channel, error) {
	nc, err := conn.NetConn()
	if err != nil {
		return nil, err
	}
	return &Channel{Conn: nc, c: c, conn: conn, Timeout: 30 * time.Second}, nil
}

var _ smb2rdma.Channel = (*Channel)(nil)

// WriteMessage writes one PDU with its Direct TCP header.
func (ch *Channel) WriteMessage(pdu []byte) error {
	var h [framing.HeaderLen]byte
	if err := framing.Put(h[:], len(pdu)); err != nil {
		if len(pdu) > framing.MaxSize {
			return fmt.Errorf("smbdirectd: %d-byte PDU: %w", len(pdu), smbd.ErrMessageTooLarge)
		}
		return fmt.Errorf("smbdirectd: empty PDU: %w", smbd.ErrFraming)
	}
	ch.wmu.Lock()
	defer ch.wmu.Unlock()
	bufs := net.Buffers{h[:], pdu}
	_, err := bufs.WriteTo(ch.Conn)
	return err
}

// ReadMessage reads one PDU into buf.
func (ch *Channel) ReadMessage(buf []byte) (int, error) {
	ch.rmu.Lock()
	defer ch.rmu.Unlock()
	var h [framing.HeaderLen]byte
	if _, err := io.ReadFull(ch.Conn, h[:]); err != nil {
		return 0, err
	}
	n, ok := framing.Parse(h[:])
	if !ok {
		return 0, fmt.Errorf("smbdirectd: %w: header % x", smbd.ErrFraming, h)
	}
	if n > len(buf) {
		return 0, fmt.Errorf("smbdirectd: %d-byte PDU, buffer of %d: %w", n, len(buf), io.ErrShortBuffer)
	}
	_, err := io.ReadFull(ch.Conn, buf[:n])
	return n, err
}

func (ch *Channel) MaxReadWriteSize() int { return int(ch.conn.Info.MaxReadWriteSize) }
func (ch *Channel) MaxMessageSize() int   { return int(ch.conn.Info.MaxFragmentedRecv) }

// Close closes this channel's stream fd (the daemon hangs up when every
// copy is closed).
func (ch *Channel) Close() error { return ch.Conn.Close() }

func (ch *Channel) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), ch.Timeout)
}

// Register implements smb2rdma.Channel.
func (ch *Channel) Register(n int, peerWrite bool, data []byte) (smb2rdma.Region, error) {
	var f *os.File
	var err error
	if ch.Backing != nil {
		f, err = ch.Backing(n)
	} else {
		f, err = memfd(n)
	}
	if err != nil {
		return nil, err
	}
	mem, err := mapShared(f, n)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("smbdirectd: mapping a registration: %w", err)
	}
	access := PeerRead
	if peerWrite {
		access = PeerWrite
	} else {
		copy(mem, data)
	}
	ctx, cancel := ch.ctx()
	defer cancel()
	reg, err := ch.c.Register(ctx, ch.conn.Handle, f, 0, n, access)
	if err != nil {
		unmap(mem)
		f.Close()
		return nil, err
	}
	return &region{ch: ch, reg: reg, f: f, mem: mem}, nil
}

// sized gives f its n bytes, or closes it.
func sized(f *os.File, n int) (*os.File, error) {
	if err := f.Truncate(int64(n)); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

type region struct {
	ch      *Channel
	reg     *Registration
	f       *os.File
	mem     []byte
	revoked bool
	once    sync.Once
}

func (r *region) AppendDescriptor(b []byte) []byte {
	d := r.reg.Descriptor
	b = binary.LittleEndian.AppendUint64(b, d.Offset)
	b = binary.LittleEndian.AppendUint32(b, d.Token)
	return binary.LittleEndian.AppendUint32(b, d.Length)
}

// Invalidate deregisters at the daemon, which revokes the peer's access.
func (r *region) Invalidate() (bool, error) {
	if r.revoked {
		return false, nil
	}
	r.revoked = true
	ctx, cancel := r.ch.ctx()
	defer cancel()
	return r.reg.Deregister(ctx)
}

func (r *region) Bytes() []byte { return r.mem }

func (r *region) Close() error {
	var err error
	r.once.Do(func() {
		if !r.revoked {
			_, err = r.Invalidate()
		}
		unmap(r.mem)
		r.f.Close()
	})
	return err
}
