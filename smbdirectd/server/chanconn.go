//go:build linux

package server

import (
	"sync"
	"sync/atomic"

	"github.com/smbdirect/smbdirect/smb2rdma"
	"github.com/smbdirect/smbdirect/smbd"
)

// chanConn is a DialClientChannel connection as smb2rdma's Channel,
// with registration memory reused instead of allocated (and cleared) for
// every READ and WRITE: a 1 MiB READ otherwise costs a fresh MiB of heap.
//
// The memory is reused within the connection only. A READ's registration
// is handed back to the program up to the length the server claims it
// wrote, so a buffer that came from another connection could show this
// program what another one read; a fresh buffer is all zeros.
type chanConn struct {
	*smbd.Conn
	// sent and received count the bytes of the SMB Direct messages (the
	// data moved by RDMA is counted by smb2rdma).
	sent, received *atomic.Int64

	mu sync.Mutex
	// free is memory of closed registrations, for the next ones; it is
	// dropped when none is open, so an idle connection holds none.
	free []*[]byte
	open int
}

// chanConnKeep bounds free: enough for a program's stream of
// requests (smbclient keeps 16 READs of 1 MiB in flight and a buffer comes
// back before the next request), not a window's worth held idle.
const chanConnKeep = 4

func (c *chanConn) WriteMessage(msg []byte) error {
	err := c.Conn.WriteMessage(msg)
	if err == nil {
		c.sent.Add(int64(len(msg)))
	}
	return err
}

func (c *chanConn) ReadMessage(buf []byte) (int, error) {
	n, err := c.Conn.ReadMessage(buf)
	c.received.Add(int64(n))
	return n, err
}

func (c *chanConn) MaxReadWriteSize() int { return c.Info().MaxReadWriteSize }
func (c *chanConn) MaxMessageSize() int   { return c.Info().MaxFragmentedRecv }

// Register implements smb2rdma.Channel.
func (c *chanConn) Register(n int, peerWrite bool, data []byte) (smb2rdma.Region, error) {
	c.mu.Lock()
	var mem *[]byte
	for i := len(c.free) - 1; i >= 0; i-- {
		if cap(*c.free[i]) >= n {
			mem = c.free[i]
			c.free = append(c.free[:i], c.free[i+1:]...)
			break
		}
	}
	c.open++
	c.mu.Unlock()
	if mem == nil {
		// Not the daemon's shared pool: its buffers hold other
		// connections' data.
		b := make([]byte, n)
		mem = &b
	}
	b, access := (*mem)[:n], smbd.PeerRead
	if peerWrite {
		access = smbd.PeerWrite
	} else {
		copy(b, data)
	}
	buf, err := c.Conn.Register(b, access)
	if err != nil {
		c.release(mem, true)
		return nil, err
	}
	return &chanRegion{Buffer: buf, c: c, mem: mem}, nil
}

// release takes back a closed registration's memory, for reuse if the
// peer's access to it is revoked.
func (c *chanConn) release(mem *[]byte, reuse bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.open--
	if c.open == 0 {
		clear(c.free) // idle: nothing kept
		c.free = c.free[:0]
		return
	}
	if reuse && len(c.free) < chanConnKeep {
		c.free = append(c.free, mem)
	}
}

type chanRegion struct {
	*smbd.Buffer
	c    *chanConn
	mem  *[]byte
	once sync.Once
}

func (r *chanRegion) Invalidate() (bool, error) {
	if !r.Valid() {
		return true, nil
	}
	return false, r.Buffer.Invalidate()
}

// Close revokes the peer's access (smbd.Buffer.Close); then, and only
// then, the memory may be reused.
func (r *chanRegion) Close() error {
	var err error
	r.once.Do(func() {
		err = r.Buffer.Close()
		r.c.release(r.mem, err == nil)
	})
	return err
}

var (
	_ smb2rdma.Channel = (*chanConn)(nil)
	_ smb2rdma.Region  = (*chanRegion)(nil)
)
