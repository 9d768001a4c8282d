package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"runtime/pprof"
	"time"

	"github.com/smbdirect/smbdirect/rdma"
)

func init() {
	registerSub("bench", "benchmarks, each side by side with plain TCP over loopback in the same run", &command{
		name:  "rdma",
		usage: "[--sizes 64,4096,65536,1048576] [--duration 2s] [--depth 8] [--crc] [--provider iwarp|verbs --device NAME --local ADDR] [--json] [--cpuprofile FILE]",
		short: "soft-iWARP RDMA Write/Read/Send throughput and Send ping-pong vs plain TCP",
		long: `For each message size, measures RDMA Write, RDMA Read and Send throughput between
two soft-iWARP endpoints over 127.0.0.1 (with --depth operations outstanding), then
a 64-byte Send ping-pong round trip. Each figure is printed next to plain TCP over
loopback doing the same transfer (a stream of messages of that size, read whole on
the other side; a 64-byte echo for the ping-pong), measured in the same run, and
their ratio. --json prints one object per line: test, msg_size, ours, tcp, ratio,
unit.`,
		setup: func(fs *flag.FlagSet) func(context.Context, []string) error {
			sizesFlag := fs.String("sizes", "64,4096,65536,1048576", "message sizes")
			dur := fs.Duration("duration", 2*time.Second, "time per measurement")
			depth := fs.Int("depth", 8, "operations outstanding")
			crc := fs.Bool("crc", false, "use MPA CRC32c")
			choose := addProviderFlags(fs, crc, true)
			asJSON := fs.Bool("json", false, "JSON lines output")
			cpuprof := fs.String("cpuprofile", "", "write a CPU profile of the whole run to FILE (pick one --sizes value to focus it)")
			return func(ctx context.Context, args []string) error {
				if err := noArgs(args); err != nil {
					return err
				}
				sizes, err := parseSizes(*sizesFlag)
				if err != nil {
					return err
				}
				pc, err := choose()
				if err != nil {
					return err
				}
				if err := positive("--duration", *dur); err != nil {
					return err
				}
				if *depth < 1 || *depth > 64 {
					return usageError(fmt.Sprintf("--depth %d: want 1 to 64", *depth))
				}
				out := newBenchOut(stdoutOf(ctx), stderrOf(ctx), *asJSON)
				defer out.flush()
				if *cpuprof != "" {
					f, err := os.Create(*cpuprof)
					if err != nil {
						return err
					}
					defer f.Close()
					if err := pprof.StartCPUProfile(f); err != nil {
						return err
					}
					defer pprof.StopCPUProfile()
				}
				b := rdmaBench{pc: pc, d: *dur, depth: *depth}
				for _, size := range sizes {
					for _, test := range []string{"rdma_write", "rdma_read", "send"} {
						if err := ctx.Err(); err != nil {
							return err
						}
						out.progress("%s %s: ours", test, humanBytes(float64(size)))
						v, err := b.run(ctx, test, size)
						if err != nil {
							return fmt.Errorf("%s %d: %w", test, size, err)
						}
						out.progress("%s %s: tcp", test, humanBytes(float64(size)))
						tv, err := tcpStream(size, *dur)
						if err != nil {
							return err
						}
						out.add(benchResult{Test: test, MsgSize: size, Ours: v, TCP: tv, Unit: "MiB/s"})
					}
				}
				out.progress("pingpong 64 B: ours")
				v, err := b.pingPong(ctx, 64)
				if err != nil {
					return fmt.Errorf("pingpong: %w", err)
				}
				out.progress("pingpong 64 B: tcp")
				tv, err := tcpPingPong(64, *dur)
				if err != nil {
					return err
				}
				out.add(benchResult{Test: "pingpong", MsgSize: 64, Ours: v, TCP: tv, Unit: "us"})
				return nil
			}
		},
	})
}

type rdmaBench struct {
	pc    *providerChoice
	d     time.Duration
	depth int
}

// run measures MiB/s of one test at one size.
func (b *rdmaBench) run(ctx context.Context, test string, size int) (float64, error) {
	const acks = 64 // receives consumed per credit-returning ack (send test)
	recvs := max(b.depth*2, 2*acks)
	p, err := newRDMAPair(ctx, b.pc, nil, nil, nil)
	if err != nil {
		return 0, err
	}
	defer p.close()
	src, _ := p.pd.RegisterMemory(make([]byte, size), rdma.AccessRemoteRead)
	dst, _ := p.pd.RegisterMemory(make([]byte, size*max(1, min(recvs, (64<<20)/size))), rdma.AccessLocalWrite|rdma.AccessRemoteWrite)
	ackBuf, _ := p.pd.RegisterMemory(make([]byte, 64), rdma.AccessLocalWrite)
	defer src.Close()
	defer dst.Close()
	defer ackBuf.Close()
	slots := len(dst.Bytes()) / size
	var wg waitGroupErr
	credits := 1 << 30
	if test == "send" {
		// Sends need receives at the peer: it posts recvs, returns a credit
		// ack every `acks` messages, and we never have more in flight than
		// it has posted.
		credits = recvs
		for i := 0; i < recvs; i++ {
			if err := p.srv.PostRecv(&rdma.RecvWR{ID: uint64(i), Local: rdma.SGE{MR: dst, Offset: (i % slots) * size, Length: size}}); err != nil {
				return 0, err
			}
		}
		for i := 0; i < 16; i++ {
			p.cli.PostRecv(&rdma.RecvWR{ID: 1 << 40, Local: rdma.SGE{MR: ackBuf}})
		}
		wg.Go(func() error {
			var wc [32]rdma.Completion
			got := 0
			for {
				n, err := p.srv.Poll(ctx, wc[:])
				if err != nil {
					return nil
				}
				for _, c := range wc[:n] {
					if c.Err != nil {
						if errors.Is(c.Err, rdma.ErrFlushed) {
							return nil
						}
						return c.Err
					}
					if c.Op != rdma.OpRecv {
						continue
					}
					if err := p.srv.PostRecv(&rdma.RecvWR{ID: c.ID, Local: rdma.SGE{MR: dst, Offset: int(c.ID%uint64(slots)) * size, Length: size}}); err != nil {
						return nil
					}
					if got++; got%acks == 0 {
						p.srv.PostSend(&rdma.SendWR{Op: rdma.OpSend, Unsignaled: true})
					}
				}
			}
		})
	}
	var wc [64]rdma.Completion
	var bytes int64
	out := 0
	t0 := time.Now()
	for time.Since(t0) < b.d {
		for out < b.depth && credits > 0 {
			var wr rdma.SendWR
			switch test {
			case "rdma_write":
				wr = rdma.SendWR{Op: rdma.OpWrite, Local: rdma.SGE{MR: src}, RemoteSTag: dst.STag(), RemoteAddr: dst.Addr()}
			case "rdma_read":
				wr = rdma.SendWR{Op: rdma.OpRead, Local: rdma.SGE{MR: dst, Length: size}, RemoteSTag: src.STag(), RemoteAddr: src.Addr()}
			default:
				wr = rdma.SendWR{Op: rdma.OpSend, Local: rdma.SGE{MR: src}}
				credits--
			}
			if err := p.cli.PostSend(&wr); err != nil {
				return 0, err
			}
			out++
		}
		n, err := p.cli.Poll(ctx, wc[:])
		if err != nil {
			return 0, err
		}
		for _, c := range wc[:n] {
			if c.Err != nil {
				return 0, c.Err
			}
			if c.Op == rdma.OpRecv {
				credits += acks
				p.cli.PostRecv(&rdma.RecvWR{ID: 1 << 40, Local: rdma.SGE{MR: ackBuf}})
				continue
			}
			out--
			bytes += int64(size)
		}
	}
	el := time.Since(t0)
	p.close()
	if err := wg.Wait(); err != nil {
		return 0, err
	}
	return float64(bytes) / el.Seconds() / (1 << 20), nil
}

// pingPong measures the average round trip of size-byte Sends: the
// server's receive completion triggers its Send back.
func (b *rdmaBench) pingPong(ctx context.Context, size int) (float64, error) {
	p, err := newRDMAPair(ctx, b.pc, nil, nil, nil)
	if err != nil {
		return 0, err
	}
	defer p.close()
	buf, _ := p.pd.RegisterMemory(make([]byte, 4*size), rdma.AccessLocalWrite)
	defer buf.Close()
	sgeOf := func(i int) rdma.SGE { return rdma.SGE{MR: buf, Offset: i * size, Length: size} }
	for i := 0; i < 4; i++ {
		p.srv.PostRecv(&rdma.RecvWR{Local: sgeOf(0)})
		p.cli.PostRecv(&rdma.RecvWR{Local: sgeOf(1)})
	}
	var wg waitGroupErr
	wg.Go(func() error {
		var wc [4]rdma.Completion
		for {
			n, err := p.srv.Poll(ctx, wc[:])
			if err != nil {
				return nil
			}
			for _, c := range wc[:n] {
				if c.Err != nil {
					return nil
				}
				if c.Op == rdma.OpRecv {
					p.srv.PostRecv(&rdma.RecvWR{Local: sgeOf(0)})
					p.srv.PostSend(&rdma.SendWR{Op: rdma.OpSend, Local: sgeOf(2), Unsignaled: true})
				}
			}
		}
	})
	var wc [4]rdma.Completion
	n := 0
	t0 := time.Now()
	for time.Since(t0) < b.d {
		if err := p.cli.PostSend(&rdma.SendWR{Op: rdma.OpSend, Local: sgeOf(3), Unsignaled: true}); err != nil {
			return 0, err
		}
	wait:
		for {
			k, err := p.cli.Poll(ctx, wc[:])
			if err != nil {
				return 0, err
			}
			for _, c := range wc[:k] {
				if c.Err != nil {
					return 0, c.Err
				}
				if c.Op == rdma.OpRecv {
					p.cli.PostRecv(&rdma.RecvWR{Local: sgeOf(1)})
					break wait
				}
			}
		}
		n++
	}
	el := time.Since(t0)
	p.close()
	wg.Wait()
	return float64(el.Microseconds()) / float64(n), nil
}

// waitGroupErr runs goroutines and keeps the first error.
type waitGroupErr struct {
	ch  chan error
	cnt int
}

func (w *waitGroupErr) Go(f func() error) {
	if w.ch == nil {
		w.ch = make(chan error, 8)
	}
	w.cnt++
	go func() { w.ch <- f() }()
}

func (w *waitGroupErr) Wait() error {
	var first error
	for ; w.cnt > 0; w.cnt-- {
		if err := <-w.ch; err != nil && first == nil {
			first = err
		}
	}
	return first
}
