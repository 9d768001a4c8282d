package iwarp

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/smbdirect/smbdirect/iwarp/internal/wire"
	"github.com/smbdirect/smbdirect/rdma"
)

// clampMSS is a dialer whose connections announce an MSS of mss in their
// SYN, so that both ends of a loopback connection get a small one, as on
// an Ethernet path.
func clampMSS(mss int) *net.Dialer {
	return &net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_MAXSEG, mss)
		})
		if err != nil {
			return err
		}
		return serr
	}}
}

// TestFPDUSizeOurEnds: two of our ends on a path with a 1000-byte MSS use
// large FPDUs when both announce them, and MSS-sized ones when one does
// not.
func TestFPDUSizeOurEnds(t *testing.T) {
	for _, tc := range []struct {
		name       string
		srv        Config
		wantLarge  bool
		wantMULPDU int // the client's; 0: from the MSS
	}{
		{"both announce", Config{}, true, wire.MaxULPDU},
		{"responder declines", Config{NoLargeFPDU: true}, false, 0},
		{"fixed size", Config{MaxFPDU: 1448}, true, wire.MaxULPDU},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			cpd, _ := New(Config{FirstSendDelay: -1, Dialer: clampMSS(1000)}).NewPD()
			spd, _ := New(tc.srv).NewPD()
			ln, err := spd.Listen(ctx, "127.0.0.1:0", rdma.ListenConfig{})
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			srv, _ := spd.NewEndpoint(rdma.EndpointConfig{})
			cli, _ := cpd.NewEndpoint(rdma.EndpointConfig{})
			defer srv.Close()
			defer cli.Close()
			errc := make(chan error, 1)
			go func() {
				req, err := ln.Accept(ctx)
				if err != nil {
					errc <- err
					return
				}
				errc <- req.Accept(ctx, srv, rdma.ConnParams{})
			}()
			if err := cli.Connect(ctx, ln.Addr().String(), rdma.ConnParams{}); err != nil {
				t.Fatal(err)
			}
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
			c, s := cli.(*endpoint), srv.(*endpoint)
			mss := tcpMSS(c.conn)
			if mss <= 0 || mss > 1000 {
				t.Fatalf("MSS %d, the clamp did not work", mss)
			}
			m := tc.wantMULPDU
			if m == 0 {
				m = mulpduOf(mss)
			}
			if c.segT != min(m-wire.TaggedLen, DefaultMaxSegment) || c.segU != min(m-wire.UntaggedLen, DefaultMaxSegment) {
				t.Fatalf("client FPDU payloads %d/%d, want a ULPDU of %d (MSS %d)", c.segT, c.segU, m, mss)
			}
			switch {
			case tc.srv.MaxFPDU > 0:
				if s.segT != mulpduOf(tc.srv.MaxFPDU)-wire.TaggedLen {
					t.Fatalf("server tagged payload %d", s.segT)
				}
			case tc.wantLarge:
				if s.segT != DefaultMaxSegment {
					t.Fatalf("server tagged payload %d, want %d", s.segT, DefaultMaxSegment)
				}
			default:
				if smss := tcpMSS(s.conn); s.segT != mulpduOf(smss)-wire.TaggedLen {
					t.Fatalf("server tagged payload %d, MSS %d", s.segT, smss)
				}
			}
		})
	}
}

// TestFPDUSizeSiwResponder: a responder that answers as Linux siw does
// (its MPA Reply is our Request with the key changed, our large-FPDU bit
// echoed) gets FPDUs that each fit in one TCP segment, and every FPDU but
// the last of a message is full.
func TestFPDUSizeSiwResponder(t *testing.T) {
	checkLeaks(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	const size = 20000
	type result struct {
		fpdus   []int
		payload int
		err     error
	}
	res := make(chan result, 1)
	go func() {
		var r result
		defer func() { res <- r }()
		conn, err := l.Accept()
		if err != nil {
			r.err = err
			return
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		req := make([]byte, wire.MPAHeaderLen+wire.MPAv2Len)
		if _, r.err = io.ReadFull(conn, req); r.err != nil {
			return
		}
		if binary.BigEndian.Uint16(req[16:])&mpaLarge == 0 {
			r.err = io.ErrUnexpectedEOF
			return
		}
		rep := bytes.Clone(req)
		copy(rep, wire.KeyReply)
		if _, r.err = conn.Write(rep); r.err != nil {
			return
		}
		for r.payload < size {
			var h [2]byte
			if _, r.err = io.ReadFull(conn, h[:]); r.err != nil {
				return
			}
			ulpdu := int(binary.BigEndian.Uint16(h[:]))
			rest := make([]byte, ulpdu+wire.PadLen(ulpdu)+wire.CRCSize)
			if _, r.err = io.ReadFull(conn, rest); r.err != nil {
				return
			}
			r.fpdus = append(r.fpdus, wire.FPDULen(ulpdu))
			r.payload += ulpdu - wire.TaggedLen
		}
	}()
	pd, _ := New(Config{FirstSendDelay: -1, Dialer: clampMSS(1000)}).NewPD()
	ep, _ := pd.NewEndpoint(rdma.EndpointConfig{})
	defer ep.Close()
	if err := ep.Connect(context.Background(), l.Addr().String(), rdma.ConnParams{}); err != nil {
		t.Fatal(err)
	}
	mss := tcpMSS(ep.(*endpoint).conn)
	src := mustMR(t, pd, make([]byte, size), 0)
	if err := ep.PostSend(&rdma.SendWR{Op: rdma.OpWrite, Local: rdma.SGE{MR: src}, RemoteSTag: 1, RemoteAddr: 0}); err != nil {
		t.Fatal(err)
	}
	r := <-res
	if r.err != nil {
		t.Fatal(r.err)
	}
	full := mss - mss%4
	for i, n := range r.fpdus {
		if n > mss || (i < len(r.fpdus)-1 && n != full) {
			t.Fatalf("FPDU %d of %d is %d bytes, MSS %d: %v", i, len(r.fpdus), n, mss, r.fpdus)
		}
	}
	if r.payload != size {
		t.Fatalf("payload %d", r.payload)
	}
}
