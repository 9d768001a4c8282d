package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"sort"
	"time"

	"github.com/smbdirect/smbdirect/iwarp"
	"github.com/smbdirect/smbdirect/rdma"
)

func init() {
	registerSub("bench", "benchmarks, each side by side with plain TCP over loopback in the same run", &command{
		name:  "rdma",
		usage: "[--sizes 64,4096,65536,1048576] [--fpdu N] [--duration 2s] [--depth 8] [--crc] [--provider iwarp|verbs --device NAME --local ADDR] [--json] [--cpuprofile FILE]",
		short: "soft-iWARP RDMA Write/Read/Send throughput and Send ping-pong vs plain TCP",
		long: `For each message size, measures RDMA Write, RDMA Read and Send throughput between
two soft-iWARP endpoints over 127.0.0.1 (with --depth operations outstanding), then
a 64-byte Send ping-pong round trip. Each figure is printed next to plain TCP over
loopback doing the same transfer (a stream of messages of that size, read whole on
the other side; a 64-byte echo for the ping-pong), measured in the same run, and
their ratio. Operations are posted in bursts, each burst as one batch
(rdma.SendWR.More), as a verbs program posts a list of work requests. Ours and TCP
take turns in five slices of --duration/5 each, so that
a busy machine weighs on both alike, and the median slice of each is reported.

The endpoints send FPDUs as large as loopback's MSS allows (about 64 KiB). Real
iWARP peers, Linux siw among them, send FPDUs of one TCP segment (1448 bytes on
Ethernet), so the sizes from 64 KiB up are measured again with 1448-byte FPDUs
(rows named *_fpdu1448). --fpdu N makes every row use FPDUs of at most N bytes
instead (the sender's largest FPDU, on the wire; soft-iWARP only).

--provider verbs measures an RDMA device through libibverbs instead (a build with
-tags verbs): both endpoints listen and connect at --local, an address of the
device (docs/verbs.md).

--json prints one object per line: test, msg_size, ours, tcp, ratio, unit.`,
		setup: func(fs *flag.FlagSet) func(context.Context, []string) error {
			sizesFlag := fs.String("sizes", "64,4096,65536,1048576", "message sizes")
			fpdu := fs.String("fpdu", "", "largest FPDU the senders send, in bytes (default: the MSS, plus 1448-byte rows)")
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
				fixed := 0
				if *fpdu != "" {
					if fixed, err = sizeFlag("--fpdu", *fpdu, 64); err != nil {
						return err
					}
					if fixed > 65536 {
						return usageError(fmt.Sprintf("--fpdu %d: an FPDU is at most 65536 bytes", fixed))
					}
				}
				if err := positive("--duration", *dur); err != nil {
					return err
				}
				if *depth < 1 || *depth > 64 {
					return usageError(fmt.Sprintf("--depth %d: want 1 to 64", *depth))
				}
				out := newBenchOut(stdoutOf(ctx), stderrOf(ctx), *asJSON)
				defer out.flush()
				stop, err := startCPUProfile(*cpuprof)
				if err != nil {
					return err
				}
				defer stop()
				b := rdmaBench{pc: pc, d: *dur, depth: *depth, fpdu: fixed}
				for _, row := range rdmaRows(sizes, fixed) {
					if err := ctx.Err(); err != nil {
						return err
					}
					b.fpdu = row.fpdu
					out.progress("%s %s", row.name, humanBytes(float64(row.size)))
					v, tv, err := interleave(b.d, func(d time.Duration) (float64, error) {
						return b.run(ctx, row.test, row.size, d)
					}, func(d time.Duration) (float64, error) {
						return tcpStream(row.size, d)
					})
					if err != nil {
						return fmt.Errorf("%s %d: %w", row.name, row.size, err)
					}
					out.add(benchResult{Test: row.name, MsgSize: row.size, Ours: v, TCP: tv, Unit: "MiB/s"})
				}
				b.fpdu = fixed
				out.progress("pingpong 64 B")
				v, tv, err := interleave(b.d, func(d time.Duration) (float64, error) {
					return b.pingPong(ctx, 64, d)
				}, func(d time.Duration) (float64, error) {
					return tcpPingPong(64, d)
				})
				if err != nil {
					return fmt.Errorf("pingpong: %w", err)
				}
				out.add(benchResult{Test: "pingpong", MsgSize: 64, Ours: v, TCP: tv, Unit: "us"})
				return nil
			}
		},
	})
}

// rdmaRow is one throughput row of bench rdma.
type rdmaRow struct {
	name, test string
	size, fpdu int
}

// rdmaRows lists the rows: each test at each size, then, unless the FPDU
// size is fixed, the sizes from 64 KiB up again with MSS-sized FPDUs
// (smaller messages fit in one or a few FPDUs either way).
func rdmaRows(sizes []int, fixed int) []rdmaRow {
	tests := []string{"rdma_write", "rdma_read", "send"}
	var rows []rdmaRow
	for _, size := range sizes {
		for _, t := range tests {
			rows = append(rows, rdmaRow{t, t, size, fixed})
		}
	}
	if fixed == 0 {
		for _, size := range sizes {
			if size < 64<<10 {
				continue
			}
			for _, t := range tests {
				rows = append(rows, rdmaRow{t + "_fpdu1448", t, size, realFPDU})
			}
		}
	}
	return rows
}

// realFPDU is the FPDU of a real iWARP peer on Ethernet: one TCP segment
// of a 1500-byte MTU with timestamps.
const realFPDU = 1448

// benchSlices is how many turns ours and TCP each take in a measurement:
// odd, so that the median is one of them.
const benchSlices = 5

// interleave measures ours and tcp in turns, benchSlices slices of d each
// split between them, and returns the median of each. On a shared machine
// the load changes over seconds: taking turns exposes both to it alike,
// so their ratio means more than that of two measurements one after the
// other. The median, not the mean: a slice that another process's burst
// halved (or a slice that ran alone) moves the mean of five by 10-20%,
// the median not at all.
func interleave(d time.Duration, ours, tcp func(time.Duration) (float64, error)) (float64, float64, error) {
	var o, t [benchSlices]float64
	slice := d / benchSlices
	for i := range benchSlices {
		var err error
		if o[i], err = ours(slice); err != nil {
			return 0, 0, err
		}
		if t[i], err = tcp(slice); err != nil {
			return 0, 0, err
		}
	}
	return median(o[:]), median(t[:]), nil
}

// median returns the middle value of v (the mean of the middle two for an
// even count), sorting v.
func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	sort.Float64s(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

type rdmaBench struct {
	pc    *providerChoice
	d     time.Duration
	depth int
	fpdu  int // the senders' largest FPDU; 0: the default
}

func (b *rdmaBench) pair(ctx context.Context) (*rdmaPair, error) {
	return newRDMAPairTuned(ctx, b.pc, func(c *iwarp.Config) { c.MaxFPDU = b.fpdu }, nil, nil, nil)
}

// run measures MiB/s of one test at one size for d.
func (b *rdmaBench) run(ctx context.Context, test string, size int, d time.Duration) (float64, error) {
	const acks = 64 // receives consumed per credit-returning ack (send test)
	recvs := max(b.depth*2, 2*acks)
	p, err := b.pair(ctx)
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
			// Work requests are reused: a fresh one per call escapes to
			// the heap through the interface, an allocation per message
			// that TCP's side does not make.
			var rwr rdma.RecvWR
			ack := rdma.SendWR{Op: rdma.OpSend, Unsignaled: true}
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
					rwr = rdma.RecvWR{ID: c.ID, Local: rdma.SGE{MR: dst, Offset: int(c.ID%uint64(slots)) * size, Length: size}}
					if err := p.srv.PostRecv(&rwr); err != nil {
						return nil
					}
					if got++; got%acks == 0 {
						p.srv.PostSend(&ack)
					}
				}
			}
		})
	}
	var wc [64]rdma.Completion
	var wr rdma.SendWR
	switch test {
	case "rdma_write":
		wr = rdma.SendWR{Op: rdma.OpWrite, Local: rdma.SGE{MR: src}, RemoteSTag: dst.STag(), RemoteAddr: dst.Addr()}
	case "rdma_read":
		wr = rdma.SendWR{Op: rdma.OpRead, Local: rdma.SGE{MR: dst, Length: size}, RemoteSTag: src.STag(), RemoteAddr: src.Addr()}
	default:
		wr = rdma.SendWR{Op: rdma.OpSend, Local: rdma.SGE{MR: src}}
	}
	ackRecv := rdma.RecvWR{ID: 1 << 40, Local: rdma.SGE{MR: ackBuf}}
	var bytes int64
	out := 0
	t0 := time.Now()
	for time.Since(t0) < d {
		// Each burst is one batch (More on all but its last request), as
		// a verbs program posts a list of work requests.
		for out < b.depth && credits > 0 {
			if wr.Op == rdma.OpSend {
				credits--
			}
			wr.More = out+1 < b.depth && credits > 0
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
				p.cli.PostRecv(&ackRecv)
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
func (b *rdmaBench) pingPong(ctx context.Context, size int, d time.Duration) (float64, error) {
	p, err := b.pair(ctx)
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
		recv := rdma.RecvWR{Local: sgeOf(0)} // reused, see run
		pong := rdma.SendWR{Op: rdma.OpSend, Local: sgeOf(2), Unsignaled: true}
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
					p.srv.PostRecv(&recv)
					p.srv.PostSend(&pong)
				}
			}
		}
	})
	var wc [4]rdma.Completion
	ping := rdma.SendWR{Op: rdma.OpSend, Local: sgeOf(3), Unsignaled: true}
	recv := rdma.RecvWR{Local: sgeOf(1)}
	n := 0
	t0 := time.Now()
	for time.Since(t0) < d {
		if err := p.cli.PostSend(&ping); err != nil {
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
					p.cli.PostRecv(&recv)
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
