package rping

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/smbdirect/smbdirect/rdma"
)

// Client runs rping's client side against opt.Addr.
func Client(ctx context.Context, pd rdma.PD, opt Options) (st Stats, err error) {
	if err := opt.defaults(); err != nil {
		return st, err
	}
	st.Size = opt.Size
	rw := rdma.AccessLocalWrite | rdma.AccessRemoteRead | rdma.AccessRemoteWrite
	var mrs []rdma.MR
	reg := func(n int, a rdma.Access) rdma.MR {
		if err != nil {
			return nil
		}
		var m rdma.MR
		m, err = pd.RegisterMemory(make([]byte, n), a)
		mrs = append(mrs, m)
		return m
	}
	start := reg(opt.Size, rw)
	sink := reg(opt.Size, rw)
	send := reg(infoLen, 0)
	recv := reg(infoLen, rdma.AccessLocalWrite)
	defer func() {
		for _, m := range mrs {
			if m != nil {
				m.Close()
			}
		}
	}()
	if err != nil {
		return st, err
	}
	ep, err := pd.NewEndpoint(rdma.EndpointConfig{SendQueueDepth: 16, RecvQueueDepth: 2})
	if err != nil {
		return st, err
	}
	defer ep.Close()
	if err := ep.PostRecv(&rdma.RecvWR{ID: 1, Local: rdma.SGE{MR: recv}}); err != nil {
		return st, err
	}
	if err := ep.Connect(ctx, opt.Addr, rdma.ConnParams{IRD: 1, ORD: 1}); err != nil {
		return st, fmt.Errorf("rping: connect %s: %w", opt.Addr, err)
	}
	st.CRC = ep.Info().CRC
	opt.Logger.Debug("rping: connected", "info", ep.Info())
	c := &conn{ep: ep, recv: recv, got: map[rdma.Opcode]int{}}
	t0 := time.Now()
	defer func() { st.Duration = time.Since(t0) }()
	for ping := 0; opt.Count == 0 || ping < opt.Count; ping++ {
		if ctx.Err() != nil {
			break
		}
		Fill(start.Bytes(), ping)
		// Advertise the source; the server RDMA Reads it.
		putInfo(send.Bytes(), start, opt.Size)
		if err := ep.PostSend(&rdma.SendWR{ID: 1, Op: rdma.OpSend, Local: rdma.SGE{MR: send}}); err != nil {
			return st, err
		}
		if err := c.wait(ctx, rdma.OpSend); err != nil {
			return st, err
		}
		if err := c.wait(ctx, rdma.OpRecv); err != nil {
			return st, err
		}
		st.BytesRead += int64(opt.Size)
		// Advertise the sink; the server RDMA Writes the data back.
		putInfo(send.Bytes(), sink, opt.Size)
		if err := ep.PostSend(&rdma.SendWR{ID: 2, Op: rdma.OpSend, Local: rdma.SGE{MR: send}}); err != nil {
			return st, err
		}
		if err := c.wait(ctx, rdma.OpSend); err != nil {
			return st, err
		}
		if err := c.wait(ctx, rdma.OpRecv); err != nil {
			return st, err
		}
		st.BytesWritten += int64(opt.Size)
		if opt.Validate {
			if !bytes.Equal(start.Bytes(), sink.Bytes()) {
				return st, fmt.Errorf("%w: ping %d", ErrMismatch, ping)
			}
			st.Validated++
		}
		if opt.Verbose != nil {
			fmt.Fprintf(opt.Verbose, "ping data: %s\n", cstring(sink.Bytes()))
		}
		st.Pings++
	}
	dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := ep.Disconnect(dctx); err != nil && !errors.Is(err, rdma.ErrClosed) {
		return st, err
	}
	return st, nil
}
