package iwarp

import (
	"context"
	"io"
	"net"
	"testing"

	"github.com/smbdirect/smbdirect/rdma"
)

// benchPair connects two endpoints without the siw start-up delay.
func benchPair(b *testing.B, crc bool) *pair {
	return newPair(b, Config{CRC: crc, FirstSendDelay: -1}, nil)
}

func benchOps(b *testing.B, crc bool, op rdma.Opcode, size int) {
	benchOpsWith(b, Config{CRC: crc}, op, size)
}

func benchOpsWith(b *testing.B, cfg Config, op rdma.Opcode, size int) {
	cfg.FirstSendDelay = -1
	p := newPair(b, cfg, nil)
	src := mustMR(b, p.pd, make([]byte, size), rdma.AccessRemoteRead)
	dst := mustMR(b, p.pd, make([]byte, size), rdma.AccessLocalWrite|rdma.AccessRemoteWrite)
	wr := rdma.SendWR{Op: rdma.OpWrite, Local: rdma.SGE{MR: src}, RemoteSTag: dst.STag(), RemoteAddr: dst.Addr()}
	if op == rdma.OpRead {
		wr = rdma.SendWR{Op: rdma.OpRead, Local: rdma.SGE{MR: dst}, RemoteSTag: src.STag(), RemoteAddr: src.Addr()}
	}
	ctx := context.Background()
	var wc [16]rdma.Completion
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()
	out := 0
	for i := 0; i < b.N; {
		// Each burst is one batch (More on all but its last request), as
		// a verbs program posts a list of work requests.
		for out < 8 && i+out < b.N {
			wr.More = out < 7 && i+out+1 < b.N
			if err := p.cli.PostSend(&wr); err != nil {
				b.Fatal(err)
			}
			out++
		}
		n, err := p.cli.Poll(ctx, wc[:])
		if err != nil {
			b.Fatal(err)
		}
		out -= n
		i += n
	}
}

func BenchmarkWrite1MiB(b *testing.B)    { benchOps(b, false, rdma.OpWrite, 1<<20) }
func BenchmarkRead1MiB(b *testing.B)     { benchOps(b, false, rdma.OpRead, 1<<20) }
func BenchmarkWrite1MiBCRC(b *testing.B) { benchOps(b, true, rdma.OpWrite, 1<<20) }
func BenchmarkWrite4KiB(b *testing.B)    { benchOps(b, false, rdma.OpWrite, 4096) }

// BenchmarkWrite1MiBFPDU1448 and BenchmarkRead1MiBFPDU1448 send FPDUs of
// one Ethernet TCP segment, as Linux siw and iWARP adapters do.
func BenchmarkWrite1MiBFPDU1448(b *testing.B) {
	benchOpsWith(b, Config{MaxFPDU: 1448}, rdma.OpWrite, 1<<20)
}
func BenchmarkRead1MiBFPDU1448(b *testing.B) {
	benchOpsWith(b, Config{MaxFPDU: 1448}, rdma.OpRead, 1<<20)
}

// BenchmarkSendPingPong64 is the round trip of a 64-byte Send answered by
// a Send; allocations per round trip should be zero. Both sides wait in
// Poll: the endpoints' goroutines run the receive path.
func BenchmarkSendPingPong64(b *testing.B) {
	pingPong64(b, func(ctx context.Context, ep rdma.Endpoint, wc []rdma.Completion) (int, error) {
		return ep.Poll(ctx, wc)
	})
}

// BenchmarkSendPingPong64Drive is BenchmarkSendPingPong64 with both sides
// running the receive path themselves (rdma.Driver).
func BenchmarkSendPingPong64Drive(b *testing.B) {
	now, stop := context.WithCancel(context.Background())
	stop()
	// Poll without blocking, and run the receive path when empty.
	pingPong64(b, func(ctx context.Context, ep rdma.Endpoint, wc []rdma.Completion) (int, error) {
		for {
			n, err := ep.Poll(now, wc)
			if n > 0 || (err != nil && err != context.Canceled) {
				return n, err
			}
			if ctx.Err() != nil {
				return 0, ctx.Err()
			}
			if !ep.(rdma.Driver).Drive(nil) {
				return ep.Poll(ctx, wc)
			}
		}
	})
}

// waitFunc waits for completions of ep, as Poll does.
type waitFunc func(context.Context, rdma.Endpoint, []rdma.Completion) (int, error)

// pingPong64 runs the ping-pong, each side waiting for completions with
// wait.
func pingPong64(b *testing.B, wait waitFunc) {
	p := benchPair(b, false)
	roundTrip, stop := startPingPong(b, p.pd, p.cli, p.srv, wait)
	defer stop()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := roundTrip(); err != nil {
			b.Fatal(err)
		}
	}
}

// startPingPong has srv answer each 64-byte Send from cli with one, each
// side waiting with wait, and returns one round trip from cli and a stop
// that ends srv's side (closing srv) and waits for it. Work requests and
// the completion array are reused: passed through the interface they
// would escape to the heap if built per call.
func startPingPong(tb testing.TB, pd rdma.PD, cli, srv rdma.Endpoint, wait waitFunc) (roundTrip func() error, stop func()) {
	buf := mustMR(tb, pd, make([]byte, 256), rdma.AccessLocalWrite)
	sge := func(i int) rdma.SGE { return rdma.SGE{MR: buf, Offset: 64 * i, Length: 64} }
	for range 4 {
		srv.PostRecv(&rdma.RecvWR{Local: sge(0)})
		cli.PostRecv(&rdma.RecvWR{Local: sge(1)})
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		var wc [4]rdma.Completion
		recv := rdma.RecvWR{Local: sge(0)}
		pong := rdma.SendWR{Op: rdma.OpSend, Local: sge(2), Unsignaled: true}
		for {
			n, err := wait(ctx, srv, wc[:])
			if err != nil {
				return
			}
			for _, c := range wc[:n] {
				if c.Op == rdma.OpRecv && c.Err == nil {
					srv.PostRecv(&recv)
					srv.PostSend(&pong)
				}
			}
		}
	}()
	ping := rdma.SendWR{Op: rdma.OpSend, Local: sge(3), Unsignaled: true}
	recv := rdma.RecvWR{Local: sge(1)}
	var wc [4]rdma.Completion
	roundTrip = func() error {
		if err := cli.PostSend(&ping); err != nil {
			return err
		}
		for got := false; !got; {
			n, err := wait(ctx, cli, wc[:])
			if err != nil {
				return err
			}
			for _, c := range wc[:n] {
				got = got || c.Op == rdma.OpRecv
			}
		}
		return cli.PostRecv(&recv)
	}
	stop = func() {
		cancel()
		srv.Close()
		<-done
	}
	return roundTrip, stop
}

func tcpBenchPair(b *testing.B) (net.Conn, net.Conn) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	ch := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		ch <- c
	}()
	a, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	c := <-ch
	b.Cleanup(func() {
		a.Close()
		c.Close()
	})
	return a, c
}

// BenchmarkTCPStream1MiB is the TCP counterpart of BenchmarkWrite1MiB.
func BenchmarkTCPStream1MiB(b *testing.B) {
	a, c := tcpBenchPair(b)
	go io.Copy(io.Discard, c)
	msg := make([]byte, 1<<20)
	b.SetBytes(1 << 20)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := a.Write(msg); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkTCPPingPong64 is the TCP counterpart of BenchmarkSendPingPong64.
func BenchmarkTCPPingPong64(b *testing.B) {
	a, c := tcpBenchPair(b)
	go func() {
		buf := make([]byte, 64)
		for {
			if _, err := io.ReadFull(c, buf); err != nil {
				return
			}
			c.Write(buf)
		}
	}()
	buf := make([]byte, 64)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		a.Write(buf)
		io.ReadFull(a, buf)
	}
}

func BenchmarkRead64(b *testing.B)   { benchOps(b, false, rdma.OpRead, 64) }
func BenchmarkRead4KiB(b *testing.B) { benchOps(b, false, rdma.OpRead, 4096) }
func BenchmarkWrite64(b *testing.B)  { benchOps(b, false, rdma.OpWrite, 64) }
