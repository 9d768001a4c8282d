//go:build linux

package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/smbdirect/smbdirect/iwarp"
	"github.com/smbdirect/smbdirect/smbd"
	"github.com/smbdirect/smbdirect/smbdirectd/client"
	"github.com/smbdirect/smbdirect/smbdirectd/server"
)

func init() {
	registerSub("bench", "benchmarks, each side by side with plain TCP over loopback in the same run", &command{
		name:  "daemon",
		usage: "[--duration 2s] [--rounds 3] [--file-size 1GiB] [--json] [--cpuprofile FILE]",
		short: "smbdirectd's stream fd and offload vs an in-process smbd.Conn (and TCP)",
		long: `Answers the design's open question: what does handing SMB Direct to a client
process through smbdirectd cost? Runs a daemon in this process on a temporary
socket and an SMB Direct peer on 127.0.0.1, and measures, each next to the same
traffic on an in-process smbd.Conn and on plain TCP:

  daemon_stream     1 MiB Direct-TCP-framed PDUs written to the daemon's stream fd
  daemon_roundtrip  a 64-byte PDU through the stream fd and back
  daemon_hop_roundtrip  the hop alone: 68 bytes back and forth over a bare
                    socketpair between a blocking fd (the program's end) and a
                    Go conn (the daemon's end); daemon_roundtrip is at least
                    in_process plus this
  daemon_rdma_write a file range RDMA-written to the peer by the daemon (the
                    client passes the file's fd; 1 MiB requests, 4 in flight)
  daemon_rdma_read  the peer's memory RDMA-read into a file range

The stream and round-trip figures are each measured --rounds times, the
daemon, in-process and TCP runs taking turns, and the best of each is
reported: on a shared machine other work only ever slows a run down, and
taking turns exposes the three to the same load. The file is created in the
temporary directory (--file-size, default 1 GiB).`,
		setup: func(fs *flag.FlagSet) func(context.Context, []string) error {
			dur := fs.Duration("duration", 2*time.Second, "time per stream and round-trip measurement")
			rounds := fs.Int("rounds", 3, "measurements of each stream and round-trip figure (the best is reported)")
			fileSize := fs.String("file-size", "1GiB", "size of the file range moved by RDMA")
			asJSON := fs.Bool("json", false, "JSON lines output")
			cpuprof := fs.String("cpuprofile", "", "write a CPU profile of the whole run (daemon, peer and program alike: one process) to FILE")
			return func(ctx context.Context, args []string) error {
				if err := noArgs(args); err != nil {
					return err
				}
				if err := positive("--duration", *dur); err != nil {
					return err
				}
				if *rounds < 1 {
					return usageError(fmt.Sprintf("--rounds %d: want at least 1", *rounds))
				}
				fsize, err := sizeFlag("--file-size", *fileSize, 1<<20)
				if err != nil {
					return err
				}
				out := newBenchOut(stdoutOf(ctx), stderrOf(ctx), *asJSON)
				defer out.flush()
				stop, err := startCPUProfile(*cpuprof)
				if err != nil {
					return err
				}
				defer stop()
				return benchDaemon(ctx, out, *dur, *rounds, int64(fsize))
			}
		},
	})
}

type daemonBench struct {
	dir  string
	srv  *server.Server
	peer *smbd.Listener
	cl   *client.Client
}

func benchProvider() *smbd.Config {
	return &smbd.Config{Provider: iwarp.New(iwarp.Config{FirstSendDelay: -1})}
}

func benchDaemon(ctx context.Context, out *benchOut, d time.Duration, rounds int, fsize int64) error {
	dir, err := os.MkdirTemp("", "smbdirect-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	s, err := server.Listen(server.Config{Socket: filepath.Join(dir, "d.sock"), SMBD: benchProvider()})
	if err != nil {
		return err
	}
	go s.Serve(context.Background())
	defer s.Close()
	peer, err := smbd.Listen(ctx, "127.0.0.1:0", benchProvider())
	if err != nil {
		return err
	}
	defer peer.Close()
	cl, err := client.Dial(ctx, s.Addr())
	if err != nil {
		return err
	}
	defer cl.Close()
	b := &daemonBench{dir: dir, srv: s, peer: peer, cl: cl}

	const size = 1 << 20
	// best keeps the best of each figure over the rounds: the highest
	// rate, or the lowest time (lower true).
	best := func(lower bool, cur *float64, v float64) {
		if *cur == 0 || (lower && v < *cur) || (!lower && v > *cur) {
			*cur = v
		}
	}
	var v, ip, tv float64
	for r := range rounds {
		out.progress("daemon_stream: through the daemon (round %d of %d)", r+1, rounds)
		x, err := b.stream(ctx, size, d)
		if err != nil {
			return fmt.Errorf("daemon_stream: %w", err)
		}
		best(false, &v, x)
		out.progress("daemon_stream: in-process")
		if x, err = smbdStream(ctx, &smbd.Config{}, size, d); err != nil {
			return err
		}
		best(false, &ip, x)
		out.progress("daemon_stream: tcp")
		if x, err = tcpStream(size+4, d); err != nil {
			return err
		}
		best(false, &tv, x)
	}
	out.add(benchResult{Test: "daemon_stream", MsgSize: size, Ours: v, InProcess: ip, TCP: tv, Unit: "MiB/s"})

	v, ip, tv = 0, 0, 0
	var hop float64
	for r := range rounds {
		out.progress("daemon_roundtrip: through the daemon (round %d of %d)", r+1, rounds)
		x, err := b.roundTrip(ctx, 64, d)
		if err != nil {
			return fmt.Errorf("daemon_roundtrip: %w", err)
		}
		best(true, &v, x)
		if x, err = smbdRoundTrip(ctx, 64, d); err != nil {
			return err
		}
		best(true, &ip, x)
		if x, err = tcpPingPong(68, d); err != nil {
			return err
		}
		best(true, &tv, x)
		if x, err = socketpairPingPong(68, d); err != nil {
			return err
		}
		best(true, &hop, x)
	}
	out.add(benchResult{Test: "daemon_roundtrip", MsgSize: 64, Ours: v, InProcess: ip, TCP: tv, Unit: "us"})
	out.add(benchResult{Test: "daemon_hop_roundtrip", MsgSize: 64, Ours: hop, InProcess: ip, TCP: tv, Unit: "us"})

	for _, write := range []bool{true, false} {
		name := map[bool]string{true: "daemon_rdma_write", false: "daemon_rdma_read"}[write]
		out.progress("%s: through the daemon", name)
		v, ip, err := b.offload(ctx, write, fsize)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		out.add(benchResult{Test: name, MsgSize: int(fsize), Ours: v, InProcess: ip, Unit: "MiB/s"})
	}
	return nil
}

// connect opens a connection through the daemon and returns the client's
// stream and the peer's side.
func (b *daemonBench) connect(ctx context.Context) (*client.Conn, *smbd.Conn, error) {
	ch := make(chan *smbd.Conn, 1)
	go func() {
		c, _ := b.peer.AcceptSMBD(ctx)
		ch <- c
	}()
	conn, err := b.cl.Connect(ctx, b.peer.Addr().String())
	if err != nil {
		return nil, nil, err
	}
	p := <-ch
	if p == nil {
		conn.Close()
		return nil, nil, fmt.Errorf("accept failed")
	}
	return conn, p, nil
}

func (b *daemonBench) stream(ctx context.Context, size int, d time.Duration) (float64, error) {
	conn, p, err := b.connect(ctx)
	if err != nil {
		return 0, err
	}
	defer p.Close()
	defer conn.Close()
	return pduStream(conn.Stream, p, func() { conn.Close() }, size, d)
}

func (b *daemonBench) roundTrip(ctx context.Context, size int, d time.Duration) (float64, error) {
	conn, p, err := b.connect(ctx)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	defer p.Close()
	return pduRoundTrip(conn.Stream, p, size, d)
}

// offloadDepth is the RDMA requests kept in flight by the offload runs.
const offloadDepth = 4

// offload moves fsize bytes of a file by RDMA in MaxReadWriteSize
// requests, through the daemon and in-process, and returns both rates.
func (b *daemonBench) offload(ctx context.Context, write bool, fsize int64) (float64, float64, error) {
	conn, p, err := b.connect(ctx)
	if err != nil {
		return 0, 0, err
	}
	defer conn.Close()
	defer p.Close()
	path := filepath.Join(b.dir, "data")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	if st, _ := f.Stat(); st.Size() != fsize {
		chunk := make([]byte, 1<<20)
		for i := range chunk {
			chunk[i] = byte(i * 13)
		}
		for off := int64(0); off < fsize; off += int64(len(chunk)) {
			if _, err := f.WriteAt(chunk[:min(int64(len(chunk)), fsize-off)], off); err != nil {
				return 0, 0, err
			}
		}
	}
	rw := int(conn.Info.MaxReadWriteSize)
	// The peer's memory: one region it registers, reused for each request.
	mem := make([]byte, rw)
	access := smbd.PeerWrite
	if !write {
		access = smbd.PeerRead
	}
	reg, err := p.Register(mem, access)
	if err != nil {
		return 0, 0, err
	}
	defer reg.Close()
	pd := reg.Descriptor()
	desc := []client.Descriptor{{Offset: pd.Offset, Token: pd.Token, Length: pd.Length}}
	t0 := time.Now()
	// Asynchronous requests, offloadDepth in flight, as a server would
	// issue them.
	var calls []*client.Call
	for off := int64(0); off+int64(rw) <= fsize; off += int64(rw) {
		if len(calls) == offloadDepth {
			if _, err := calls[0].Wait(ctx); err != nil {
				return 0, 0, err
			}
			calls = calls[1:]
		}
		if write {
			calls = append(calls, b.cl.StartRDMAWrite(conn.Handle, f, off, desc))
		} else {
			calls = append(calls, b.cl.StartRDMARead(conn.Handle, f, off, desc))
		}
	}
	for _, k := range calls {
		if _, err := k.Wait(ctx); err != nil {
			return 0, 0, err
		}
	}
	viaDaemon := float64(fsize) / time.Since(t0).Seconds() / (1 << 20)

	// In-process: the same with an smbd.Conn pair of our own.
	a, q, err := smbdPair(ctx, &smbd.Config{})
	if err != nil {
		return 0, 0, err
	}
	defer a.Close()
	defer q.Close()
	// Its own memory: the race detector cannot see that the first
	// connection's receive goroutine is done with mem.
	reg2, err := q.Register(make([]byte, rw), access)
	if err != nil {
		return 0, 0, err
	}
	defer reg2.Close()
	descs := []smbd.BufferDescriptor{reg2.Descriptor()}
	t0 = time.Now()
	// The same depth: offloadDepth goroutines take the requests in turn.
	next := make(chan int64)
	errs := make(chan error, offloadDepth)
	for range offloadDepth {
		go func() {
			var err error
			for off := range next {
				if err != nil {
					continue
				}
				if write {
					err = a.RDMAWriteFile(ctx, f, off, descs)
				} else {
					err = a.RDMAReadFile(ctx, f, off, descs)
				}
			}
			errs <- err
		}()
	}
	for off := int64(0); off+int64(rw) <= fsize; off += int64(rw) {
		next <- off
	}
	close(next)
	for range offloadDepth {
		if err := <-errs; err != nil {
			return 0, 0, err
		}
	}
	inProcess := float64(fsize) / time.Since(t0).Seconds() / (1 << 20)
	return viaDaemon, inProcess, nil
}

// socketpairPingPong measures the daemon's hop alone: size bytes back and
// forth over a socketpair whose ends are those of a stream, a blocking fd
// (the program's, as client.Conn.Stream) and a Go conn (the daemon's),
// in microseconds per round trip.
func socketpairPingPong(size int, d time.Duration) (float64, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	f := os.NewFile(uintptr(fds[0]), "daemon-end")
	nc, err := net.FileConn(f)
	f.Close()
	prog := os.NewFile(uintptr(fds[1]), "program-end")
	if err != nil {
		prog.Close()
		return 0, err
	}
	done := make(chan struct{})
	defer func() {
		prog.Close() // the echo reads EOF
		<-done
		nc.Close()
	}()
	go func() {
		defer close(done)
		buf := make([]byte, size)
		for {
			if _, err := io.ReadFull(nc, buf); err != nil {
				return
			}
			if _, err := nc.Write(buf); err != nil {
				return
			}
		}
	}()
	buf := make([]byte, size)
	n := 0
	t0 := time.Now()
	for time.Since(t0) < d {
		if _, err := prog.Write(buf); err != nil {
			return 0, err
		}
		if _, err := io.ReadFull(prog, buf); err != nil {
			return 0, err
		}
		n++
	}
	return float64(time.Since(t0).Microseconds()) / float64(n), nil
}
