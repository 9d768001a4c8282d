//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/smbdirect/smbdirect/smbd"
	"github.com/smbdirect/smbdirect/smbdirectd/client"
	"github.com/smbdirect/smbdirect/smbdirectd/server"
)

// scaleClientEnv, set in the environment, makes this program a client
// process of bench scale --daemon (scaleClientMain) instead of the
// command line tool. Its value is the job: socket, peer address,
// connections, PDU size, PDUs, first end id, separated by spaces.
const scaleClientEnv = "SMBDIRECT_BENCH_SCALE_CLIENT"

// The client processes are driven by lines on stdin, one per phase, and
// answer each with a line on stdout: "ready" once connected to the
// daemon; "connect" → "connected"; "exchange" → "exchanged"; "close" (or
// the end of stdin) → they close everything and exit. A failure is the
// line "error: ..." and exit status 1.

// A client process is this program with scaleClientEnv set: it does its
// job and exits before main (in the tests' binary too).
func init() {
	if job := os.Getenv(scaleClientEnv); job != "" {
		os.Exit(scaleClientMain(job))
	}
}

// scaleDaemon runs o.conns connections through an in-process smbdirectd,
// opened by o.procs client processes, to an SMB Direct peer in this
// process.
func scaleDaemon(ctx context.Context, out *benchOut, o scaleOpts) (scaleFigures, error) {
	var f scaleFigures
	exe, err := os.Executable()
	if err != nil {
		return f, err
	}
	dir, err := os.MkdirTemp("", "smbdirect-bench-scale-")
	if err != nil {
		return f, err
	}
	defer os.RemoveAll(dir)
	per := (o.conns + o.procs - 1) / o.procs
	s, err := server.Listen(server.Config{Socket: filepath.Join(dir, "d.sock"), SMBD: benchProvider(), MaxConnsPerClient: per})
	if err != nil {
		return f, err
	}
	served := make(chan struct{})
	go func() {
		s.Serve(context.Background())
		close(served)
	}()
	defer func() {
		s.Close()
		<-served
	}()
	peer, err := smbd.Listen(ctx, "127.0.0.1:0", benchProvider())
	if err != nil {
		return f, err
	}
	defer peer.Close()

	g0 := settle()
	fd0 := openFDs()
	mem0 := heapAndStacks()

	// The peer's ends: each waits for the exchange to start, exchanges,
	// then reads until the client's close reaches it.
	start := make(chan struct{})
	var got atomic.Int64
	var peerWG sync.WaitGroup
	var peerMu sync.Mutex
	var peerErrs []error
	var peerEnds []*smbd.Conn
	accepted := make(chan struct{}, o.conns)
	acceptDone := make(chan struct{})
	go func() {
		defer close(acceptDone)
		for i := range o.conns {
			c, err := peer.AcceptSMBD(ctx)
			if err != nil {
				return
			}
			peerMu.Lock()
			peerEnds = append(peerEnds, c)
			peerMu.Unlock()
			peerWG.Add(1)
			accepted <- struct{}{}
			go func() {
				defer peerWG.Done()
				defer c.Close()
				select {
				case <-start:
				case <-ctx.Done():
					return
				}
				if err := exchange(c, uint32(2*i+1), o.pdu, o.count, &got); err != nil {
					peerMu.Lock()
					peerErrs = append(peerErrs, fmt.Errorf("peer end %d: %w", i, err))
					peerMu.Unlock()
					return
				}
				io.Copy(io.Discard, c)
			}()
		}
	}()
	stopPeers := func() {
		peer.Close()
		<-acceptDone
		peerMu.Lock()
		for _, c := range peerEnds {
			c.Close()
		}
		peerMu.Unlock()
		peerWG.Wait()
	}
	out.progress("daemon: starting %d client processes", o.procs)
	procs := make([]*scaleProc, 0, o.procs)
	// After a failure: the processes see the end of stdin, and the end of
	// their connections (a process in the middle of an exchange does not
	// read stdin); those still running after 5 s are killed.
	defer func() {
		for _, p := range procs {
			p.stdin.Close()
		}
		stopPeers()
		deadline := time.Now().Add(5 * time.Second)
		for _, p := range procs {
			p.stop(deadline)
		}
	}()
	first := 0
	for i := range o.procs {
		n := o.conns/o.procs + btoi(i < o.conns%o.procs)
		job := fmt.Sprintf("%s %s %d %d %d %d", s.Addr(), peer.Addr(), n, o.pdu, o.count, 2*first)
		p, err := startScaleProc(exe, job)
		if err != nil {
			return f, err
		}
		procs = append(procs, p)
		first += n
	}
	// phase sends cmd to every process and waits for each one's answer.
	phase := func(cmd, want string) error {
		for _, p := range procs {
			fmt.Fprintln(p.stdin, cmd)
		}
		var errs []error
		for i, p := range procs {
			if err := p.expect(ctx, want); err != nil {
				errs = append(errs, fmt.Errorf("client process %d: %w", i, err))
			}
		}
		return joinErrs(errs...)
	}
	if err := phase("", "ready"); err != nil { // an empty line asks nothing
		return f, err
	}

	out.progress("daemon: %d client processes setting up %d connections", o.procs, o.conns)
	t0 := time.Now()
	if err := phase("connect", "connected"); err != nil {
		return f, err
	}
	for range o.conns {
		<-accepted // the peer's side too
	}
	f.setupRate = float64(o.conns) / time.Since(t0).Seconds()
	f.goroutinesEnd = float64(settle()-g0) / float64(o.conns)
	// The daemon's and the peer's memory for the connections, and the
	// bench's own for its client processes (small, against a connection).
	f.memEnd = max(0, float64(int64(heapAndStacks())-int64(mem0))/float64(o.conns))

	out.progress("daemon: exchanging")
	want := int64(o.conns) * o.bytes()
	// Only the peer's ends count what they receive; the watchdog's abort
	// fails every wait: the peer's ends, and through them the clients'.
	stopWatch := watchExchange(out, "daemon", &got, want, func() {
		peerMu.Lock()
		for _, c := range peerEnds {
			c.Close()
		}
		peerMu.Unlock()
	})
	defer func() { stopWatch() }() // the one in place at return
	t0 = time.Now()
	close(start)
	for _, p := range procs {
		fmt.Fprintln(p.stdin, "exchange")
	}
	// The clients' ends report when they have received all; the peer's
	// are counted in got.
	var errs []error
	for i, p := range procs {
		if err := p.expect(ctx, "exchanged"); err != nil {
			errs = append(errs, fmt.Errorf("client process %d: %w", i, err))
		}
	}
	for got.Load() < want && len(errs) == 0 {
		peerMu.Lock()
		errs = append(errs, peerErrs...)
		peerMu.Unlock()
		time.Sleep(time.Millisecond)
	}
	el := time.Since(t0)
	stopWatch()
	stopWatch = func() {}
	if err := joinErrs(errs...); err != nil {
		return f, fmt.Errorf("daemon: exchange: %w", err)
	}
	f.exchange = float64(2*want) / el.Seconds() / (1 << 20)

	out.progress("daemon: closing")
	var exitErrs []error
	for i, p := range procs {
		fmt.Fprintln(p.stdin, "close")
		if err := p.wait(); err != nil {
			exitErrs = append(exitErrs, fmt.Errorf("client process %d: %w", i, err))
		}
	}
	procs = nil
	if err := joinErrs(exitErrs...); err != nil {
		return f, err
	}
	// Every client gone: the daemon disconnects their connections, and
	// the peer's ends read the end of their streams.
	peerWG.Wait()
	peerMu.Lock()
	peerEnds = nil
	err = joinErrs(peerErrs...)
	peerMu.Unlock()
	if err != nil {
		return f, err
	}
	for i := 0; i < 100 && (s.Stats().Conns != 0 || s.Stats().Clients != 0); i++ {
		time.Sleep(50 * time.Millisecond)
	}
	if st := s.Stats(); st.Conns != 0 || st.Clients != 0 {
		return f, fmt.Errorf("daemon: %w: %d connections and %d clients after every client process exited", errScaleLeak, st.Conns, st.Clients)
	}
	f.goroutinesLeft, f.fdsLeft = waitBack(g0, fd0)
	return f, nil
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// scaleProc is one client process.
type scaleProc struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string
	stderr bytes.Buffer
	done   chan struct{}
	err    error
}

func startScaleProc(exe, job string) (*scaleProc, error) {
	p := &scaleProc{cmd: exec.Command(exe), lines: make(chan string, 4), done: make(chan struct{})}
	p.cmd.Env = append(os.Environ(), scaleClientEnv+"="+job)
	p.cmd.Stderr = &p.stderr
	var err error
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		return nil, err
	}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
		close(p.lines)
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// expect waits for the process's next line, which must be want.
func (p *scaleProc) expect(ctx context.Context, want string) error {
	select {
	case l, ok := <-p.lines:
		switch {
		case !ok:
			<-p.done
			return fmt.Errorf("exited (%v) before %q: %s", p.err, want, strings.TrimSpace(p.stderr.String()))
		case l != want:
			return fmt.Errorf("said %q, want %q", l, want)
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// wait closes stdin and waits for the process to exit.
func (p *scaleProc) wait() error {
	p.stdin.Close()
	for range p.lines {
	}
	<-p.done
	if p.err != nil {
		return fmt.Errorf("%w: %s", p.err, strings.TrimSpace(p.stderr.String()))
	}
	return nil
}

// stop waits for a process whose stdin is closed to exit, and kills it
// at deadline.
func (p *scaleProc) stop(deadline time.Time) {
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-p.done:
		return
	case <-t.C:
	}
	p.cmd.Process.Kill()
	for range p.lines {
	}
	<-p.done
}

// scaleClientMain is a client process of bench scale --daemon; it returns
// the exit status.
func scaleClientMain(job string) int {
	if err := scaleClient(job, os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stdout, "error:", err)
		fmt.Fprintln(os.Stderr, "smbdirect bench scale client:", err)
		return 1
	}
	return 0
}

func scaleClient(job string, in io.Reader, out io.Writer) error {
	f := strings.Fields(job)
	if len(f) != 6 {
		return fmt.Errorf("bad job %q", job)
	}
	var v [4]int
	for i := range v {
		n, err := strconv.Atoi(f[2+i])
		if err != nil || n < 0 {
			return fmt.Errorf("bad job %q", job)
		}
		v[i] = n
	}
	socket, peer, n, pdu, count, firstID := f[0], f[1], v[0], v[1], v[2], v[3]
	// Anything unexpected on stdin, or its end, stops the process: the
	// bench has given up.
	lines := bufio.NewScanner(in)
	next := func(want string) error {
		if !lines.Scan() {
			return fmt.Errorf("stdin closed before %q", want)
		}
		if lines.Text() != want {
			return fmt.Errorf("got %q, want %q", lines.Text(), want)
		}
		return nil
	}
	ctx := context.Background()
	cl, err := client.Dial(ctx, socket)
	if err != nil {
		return err
	}
	defer cl.Close()
	if err := next(""); err != nil {
		return err
	}
	fmt.Fprintln(out, "ready")
	if err := next("connect"); err != nil {
		return err
	}
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	// One after another: a program opening its connections.
	for range n {
		c, err := cl.Connect(ctx, peer)
		if err != nil {
			return err
		}
		nc, err := c.NetConn()
		c.Close() // nc has its own copy of the fd
		if err != nil {
			return err
		}
		conns = append(conns, nc)
	}
	fmt.Fprintln(out, "connected")
	if err := next("exchange"); err != nil {
		return err
	}
	errc := make(chan error, n)
	for i, c := range conns {
		go func() { errc <- exchange(c, uint32(firstID+2*i), pdu, count, nil) }()
	}
	var errs []error
	for range conns {
		if err := <-errc; err != nil {
			errs = append(errs, err)
		}
	}
	if err := joinErrs(errs...); err != nil {
		return err
	}
	fmt.Fprintln(out, "exchanged")
	return next("close")
}
