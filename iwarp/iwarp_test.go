package iwarp

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/smbdirect/smbdirect/rdma"
)

// pair is two connected endpoints over loopback.
type pair struct {
	pd       rdma.PD
	cli, srv rdma.Endpoint
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// newPair connects two endpoints of one PD. prepost runs on each endpoint
// before it connects (to post receives).
func newPair(t testing.TB, cfg Config, prepost func(ep rdma.Endpoint, server bool)) *pair {
	t.Helper()
	ctx := testCtx(t)
	p := New(cfg)
	pd, err := p.NewPD()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := pd.Listen(ctx, "127.0.0.1:0", rdma.ListenConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	srv, _ := pd.NewEndpoint(rdma.EndpointConfig{})
	cli, _ := pd.NewEndpoint(rdma.EndpointConfig{})
	if prepost != nil {
		prepost(srv, true)
		prepost(cli, false)
	}
	errc := make(chan error, 1)
	go func() {
		req, err := ln.Accept(ctx)
		if err != nil {
			errc <- err
			return
		}
		if string(req.PrivateData()) != "hello" {
			errc <- errors.New("private data lost: " + string(req.PrivateData()))
			return
		}
		errc <- req.Accept(ctx, srv, rdma.ConnParams{PrivateData: []byte("welcome")})
	}()
	if err := cli.Connect(ctx, ln.Addr().String(), rdma.ConnParams{PrivateData: []byte("hello")}); err != nil {
		t.Fatal("connect:", err)
	}
	if err := <-errc; err != nil {
		t.Fatal("accept:", err)
	}
	if got := string(cli.Info().PrivateData); got != "welcome" {
		t.Fatalf("reply private data %q", got)
	}
	t.Cleanup(func() {
		cli.Close()
		srv.Close()
	})
	return &pair{pd: pd, cli: cli, srv: srv}
}

func mustMR(t testing.TB, pd rdma.PD, buf []byte, a rdma.Access) rdma.MR {
	t.Helper()
	m, err := pd.RegisterMemory(buf, a)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func poll1(t testing.TB, ep rdma.Endpoint) rdma.Completion {
	t.Helper()
	var wc [1]rdma.Completion
	n, err := ep.Poll(testCtx(t), wc[:])
	if err != nil || n != 1 {
		t.Fatalf("poll: %d %v", n, err)
	}
	return wc[0]
}

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7) + seed
	}
	return b
}

func TestSendWriteRead(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"nocrc", Config{}},
		{"crc", Config{CRC: true}},
		// MSS-sized FPDUs, as Linux siw sends them: an odd payload per FPDU.
		{"fpdu1448", Config{MaxFPDU: 1448}},
		{"fpdu1448crc", Config{MaxFPDU: 1448, CRC: true}},
	} {
		crc := tc.cfg.CRC
		t.Run(tc.name, func(t *testing.T) {
			const size = 1<<20 + 333 // several FPDUs, odd length
			var srvRecv rdma.MR
			p := newPair(t, tc.cfg, nil)
			srvRecv = mustMR(t, p.pd, make([]byte, size), rdma.AccessLocalWrite)
			if err := p.srv.PostRecv(&rdma.RecvWR{ID: 7, Local: rdma.SGE{MR: srvRecv}}); err != nil {
				t.Fatal(err)
			}
			if got := p.cli.Info().CRC; got != crc {
				t.Fatalf("CRC negotiated %v", got)
			}
			// Send.
			src := mustMR(t, p.pd, pattern(size, 1), 0)
			if err := p.cli.PostSend(&rdma.SendWR{ID: 1, Op: rdma.OpSend, Local: rdma.SGE{MR: src}, Solicited: true}); err != nil {
				t.Fatal(err)
			}
			if c := poll1(t, p.cli); c.Err != nil || c.ID != 1 || c.Op != rdma.OpSend {
				t.Fatalf("send completion %+v", c)
			}
			c := poll1(t, p.srv)
			if c.Err != nil || c.ID != 7 || c.Bytes != size || !c.Solicited {
				t.Fatalf("recv completion %+v", c)
			}
			if !bytes.Equal(srvRecv.Bytes(), src.Bytes()) {
				t.Fatal("send data differs")
			}
			// RDMA Write into the server's region.
			sink := mustMR(t, p.pd, make([]byte, size+100), rdma.AccessLocalWrite|rdma.AccessRemoteWrite|rdma.AccessRemoteRead)
			if err := p.cli.PostSend(&rdma.SendWR{ID: 2, Op: rdma.OpWrite, Local: rdma.SGE{MR: src}, RemoteSTag: sink.STag(), RemoteAddr: sink.Addr() + 100}); err != nil {
				t.Fatal(err)
			}
			if c := poll1(t, p.cli); c.Err != nil || c.ID != 2 || c.Bytes != size {
				t.Fatalf("write completion %+v", c)
			}
			// RDMA Read it back (ordering: the Read follows the Write).
			dst := mustMR(t, p.pd, make([]byte, size), rdma.AccessLocalWrite)
			if err := p.cli.PostSend(&rdma.SendWR{ID: 3, Op: rdma.OpRead, Local: rdma.SGE{MR: dst}, RemoteSTag: sink.STag(), RemoteAddr: sink.Addr() + 100}); err != nil {
				t.Fatal(err)
			}
			if c := poll1(t, p.cli); c.Err != nil || c.ID != 3 || c.Bytes != size || c.Op != rdma.OpRead {
				t.Fatalf("read completion %+v", c)
			}
			if !bytes.Equal(dst.Bytes(), src.Bytes()) {
				t.Fatal("read data differs")
			}
		})
	}
}
