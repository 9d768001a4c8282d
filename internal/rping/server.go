package rping

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/smbdirect/smbdirect/rdma"
)

// Serve accepts one connection on ln and runs rping's server side until the
// client disconnects. It checks every ping's data against the pattern the
// client is expected to send.
func Serve(ctx context.Context, pd rdma.PD, ln rdma.Listener, opt Options) (st Stats, err error) {
	if err := opt.defaults(); err != nil {
		return st, err
	}
	st.Size = opt.Size
	req, err := ln.Accept(ctx)
	if err != nil {
		return st, err
	}
	buf, err := pd.RegisterMemory(make([]byte, opt.Size), rdma.AccessLocalWrite|rdma.AccessRemoteRead|rdma.AccessRemoteWrite)
	if err != nil {
		req.Reject(nil)
		return st, err
	}
	defer buf.Close()
	send, _ := pd.RegisterMemory(make([]byte, infoLen), 0)
	defer send.Close()
	recv, _ := pd.RegisterMemory(make([]byte, infoLen), rdma.AccessLocalWrite)
	defer recv.Close()
	ep, err := pd.NewEndpoint(rdma.EndpointConfig{SendQueueDepth: 16, RecvQueueDepth: 2})
	if err != nil {
		req.Reject(nil)
		return st, err
	}
	defer ep.Close()
	if err := ep.PostRecv(&rdma.RecvWR{ID: 1, Local: rdma.SGE{MR: recv}}); err != nil {
		return st, err
	}
	if err := req.Accept(ctx, ep, rdma.ConnParams{IRD: 1, ORD: 1}); err != nil {
		return st, fmt.Errorf("rping: accept: %w", err)
	}
	st.CRC = ep.Info().CRC
	opt.Logger.Debug("rping: accepted", "info", ep.Info())
	c := &conn{ep: ep, recv: recv, got: map[rdma.Opcode]int{}}
	t0 := time.Now()
	defer func() { st.Duration = time.Since(t0) }()
	want := make([]byte, opt.Size)
	for ping := 0; ; ping++ {
		// The client's source buffer.
		if err := c.wait(ctx, rdma.OpRecv); err != nil {
			if ended(err) {
				return st, nil // the client is done
			}
			return st, err
		}
		src := getInfo(recv.Bytes())
		if int(src.size) > opt.Size {
			return st, fmt.Errorf("rping: client buffer of %d bytes, ours is %d (use -S)", src.size, opt.Size)
		}
		n := int(src.size)
		if err := ep.PostSend(&rdma.SendWR{ID: 2, Op: rdma.OpRead, Local: rdma.SGE{MR: buf, Length: n},
			RemoteSTag: rdma.STag(src.rkey), RemoteAddr: src.addr}); err != nil {
			return st, err
		}
		if err := c.wait(ctx, rdma.OpRead); err != nil {
			return st, err
		}
		st.BytesRead += int64(n)
		// Our checksum: the data must be the pattern of this ping.
		Fill(want[:n], ping)
		if !bytes.Equal(buf.Bytes()[:n], want[:n]) {
			return st, fmt.Errorf("%w: ping %d read %q", ErrMismatch, ping, cstring(buf.Bytes()[:min(n, 64)]))
		}
		st.Validated++
		if opt.Verbose != nil {
			fmt.Fprintf(opt.Verbose, "server ping data: %s\n", cstring(buf.Bytes()))
		}
		if err := ep.PostSend(&rdma.SendWR{ID: 3, Op: rdma.OpSend, Local: rdma.SGE{MR: send}}); err != nil {
			return st, err
		}
		if err := c.wait(ctx, rdma.OpSend); err != nil {
			return st, err
		}
		// The client's sink buffer: write the data back.
		if err := c.wait(ctx, rdma.OpRecv); err != nil {
			return st, err
		}
		sink := getInfo(recv.Bytes())
		wlen := len(cstring(buf.Bytes()[:n])) + 1
		if wlen > n {
			wlen = n
		}
		if uint32(wlen) > sink.size {
			return st, fmt.Errorf("rping: client sink of %d bytes is too small for %d", sink.size, wlen)
		}
		if err := ep.PostSend(&rdma.SendWR{ID: 4, Op: rdma.OpWrite, Local: rdma.SGE{MR: buf, Length: wlen},
			RemoteSTag: rdma.STag(sink.rkey), RemoteAddr: sink.addr}); err != nil {
			return st, err
		}
		if err := c.wait(ctx, rdma.OpWrite); err != nil {
			return st, err
		}
		st.BytesWritten += int64(wlen)
		if err := ep.PostSend(&rdma.SendWR{ID: 5, Op: rdma.OpSend, Local: rdma.SGE{MR: send}}); err != nil {
			return st, err
		}
		if err := c.wait(ctx, rdma.OpSend); err != nil {
			return st, err
		}
		st.Pings++
	}
}

// ended reports an orderly end of the connection by the peer.
func ended(err error) bool {
	return errors.Is(err, rdma.ErrDisconnected) || errors.Is(err, rdma.ErrClosed)
}
