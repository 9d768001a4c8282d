// Package rping is a peer wire-compatible with rdma-core's rping
// (librdmacm/examples/rping.c), on the provider-neutral rdma API. It is our
// interop probe against Linux: every ping crosses the wire as two Sends, an
// RDMA Read and an RDMA Write, and both sides check the data.
//
// The exchange, per ping:
//
//	client                                   server
//	Send {start_buf addr, rkey, size}  --->
//	                                   <---  RDMA Read of start_buf
//	                                   <---  Send "go ahead" (16 bytes)
//	Send {rdma_buf addr, rkey, size}   --->
//	                                   <---  RDMA Write into rdma_buf
//	                                   <---  Send "go ahead"
//
// The info message is 16 bytes, big-endian: be64 addr, be32 rkey, be32 size.
package rping

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/smbdirect/smbdirect/rdma"
)

// DefaultPort is rping's port.
const DefaultPort = 7174

// Size limits of rping: the buffer must hold the "rdma-ping-%d: " text and
// stay below 64 KiB.
const (
	MinSize     = 24 // sizeof(stringify(INT_MAX)) + sizeof(RPING_MSG_FMT) in rping.c
	MaxSize     = 64*1024 - 1
	DefaultSize = 64
	infoLen     = 16
	msgFormat   = "rdma-ping-%d: "
)

// Options configures a client or server.
type Options struct {
	// Addr is host:port to connect to (client).
	Addr string
	// Count is the number of pings; 0 means until ctx ends (client).
	Count int
	// Size is the ping buffer size (default 64).
	Size int
	// Verbose, if set, receives rping's -v lines.
	Verbose io.Writer
	// Validate compares what came back with what went out (client, -V).
	// The server always checks every ping against the expected pattern.
	Validate bool
	// Logger receives debug output (-d); nil discards.
	Logger *slog.Logger
}

// Stats summarizes a run.
type Stats struct {
	Pings        int           `json:"pings"`
	Size         int           `json:"size"`
	BytesRead    int64         `json:"bytes_rdma_read"`
	BytesWritten int64         `json:"bytes_rdma_written"`
	Validated    int           `json:"validated"`
	Duration     time.Duration `json:"duration_ns"`
	CRC          bool          `json:"crc"`
}

// ErrMismatch reports ping data that differs from what was sent.
var ErrMismatch = errors.New("rping: data mismatch")

func (o *Options) defaults() error {
	if o.Size == 0 {
		o.Size = DefaultSize
	}
	if o.Size < MinSize || o.Size > MaxSize {
		return fmt.Errorf("rping: invalid size %d (valid range is %d to %d)", o.Size, MinSize, MaxSize)
	}
	if o.Count < 0 {
		return fmt.Errorf("rping: invalid count %d", o.Count)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// Fill writes ping number ping's data into buf as rping's client does:
// the "rdma-ping-N: " text, then letters from 'A'+ping%58 cycling through
// 'A'..'z', and a final NUL.
func Fill(buf []byte, ping int) {
	cc := copy(buf, fmt.Sprintf(msgFormat, ping))
	if cc >= len(buf) {
		cc = len(buf) - 1 // snprintf truncates and terminates
	}
	c := byte(65 + ping%58)
	for i := cc; i < len(buf); i++ {
		buf[i] = c
		c++
		if c > 122 {
			c = 65
		}
	}
	buf[len(buf)-1] = 0
}

// cstring returns b up to its first NUL, as printf("%s") would print it.
func cstring(b []byte) []byte {
	for i, c := range b {
		if c == 0 {
			return b[:i]
		}
	}
	return b
}

type info struct {
	addr uint64
	rkey uint32
	size uint32
}

func putInfo(b []byte, m rdma.MR, size int) {
	binary.BigEndian.PutUint64(b, m.Addr())
	binary.BigEndian.PutUint32(b[8:], uint32(m.STag()))
	binary.BigEndian.PutUint32(b[12:], uint32(size))
}

func getInfo(b []byte) info {
	return info{binary.BigEndian.Uint64(b), binary.BigEndian.Uint32(b[8:]), binary.BigEndian.Uint32(b[12:])}
}

// conn tracks one rping connection's completions.
type conn struct {
	ep   rdma.Endpoint
	recv rdma.MR
	wc   [8]rdma.Completion
	// Completions seen but not yet asked for, by opcode.
	got map[rdma.Opcode]int
	// last receive's byte count
	recvBytes int
	// err is the first failure seen, returned once no completion asked
	// for is left (see wait).
	err error
}

// wait polls until a completion of op arrives. Receives are re-posted at
// once, as rping does, so the peer's next Send always finds a buffer.
//
// A failure in a batch is kept for a later wait, not returned at once: at
// the end of a connection the flushed receive can come in the batch that
// also holds the completion asked for (the peer disconnects as soon as it
// has our last Send), and that Send did complete.
func (c *conn) wait(ctx context.Context, op rdma.Opcode) error {
	for c.got[op] == 0 {
		if c.err != nil {
			return c.err
		}
		n, err := c.ep.Poll(ctx, c.wc[:])
		if err != nil {
			if errors.Is(err, rdma.ErrClosed) {
				if e := c.ep.Err(); e != nil {
					return e
				}
			}
			return err
		}
		for _, w := range c.wc[:n] {
			if w.Err != nil {
				if errors.Is(w.Err, rdma.ErrFlushed) && c.ep.Err() != nil {
					c.fail(c.ep.Err())
				} else {
					c.fail(fmt.Errorf("rping: %v completion failed: %w", w.Op, w.Err))
				}
				continue
			}
			if w.Op == rdma.OpRecv {
				if w.Bytes != infoLen {
					c.fail(fmt.Errorf("rping: received bogus data, size %d", w.Bytes))
					continue
				}
				c.recvBytes = w.Bytes
				if c.err == nil {
					if err := c.ep.PostRecv(&rdma.RecvWR{ID: 1, Local: rdma.SGE{MR: c.recv}}); err != nil {
						c.fail(err)
					}
				}
			}
			c.got[w.Op]++
		}
	}
	c.got[op]--
	return nil
}

// fail keeps the first failure.
func (c *conn) fail(err error) {
	if c.err == nil {
		c.err = err
	}
}
