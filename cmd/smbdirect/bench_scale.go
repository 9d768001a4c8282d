//go:build linux

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"golang.org/x/sys/unix"

	"github.com/smbdirect/smbdirect/internal/framing"
	"github.com/smbdirect/smbdirect/smbd"
)

func init() {
	registerSub("bench", "benchmarks, each side by side with plain TCP over loopback in the same run", &command{
		name:  "scale",
		usage: "[--conns 1000] [--size 1MiB] [--pdu 16KiB] [--daemon] [--procs 50] [--json]",
		short: "many concurrent SMB Direct connections: set-up rate, idle memory, leaks",
		long: `Opens --conns SMB Direct connections at once in this process (over soft-iWARP
on 127.0.0.1, 50 set-ups in flight) and reports:

  scale_setup            connections set up per second
  scale_idle_mem_per_end heap and goroutine stacks an idle connection holds,
                         per end (one smbd.Conn), after GC: budget 128 KiB
  scale_idle_mem_per_pair the same per connection, both ends
  scale_mem_per_end_after_traffic  the same per end, idle again after the
                         exchange below (not held to the budget)
  scale_goroutines_per_end goroutines an idle connection end runs
  scale_fds_per_end      file descriptors an idle connection end holds
  scale_exchange         aggregate throughput while every connection sends
                         --size bytes each way at once, in --pdu-byte
                         Direct-TCP-framed PDUs, each carrying its sender,
                         sequence number and a CRC32C that the receiver checks

each next to the same with plain TCP connections. All connections are then
closed, and the goroutines and file descriptors of the process must be back
where they were.

--daemon then runs an smbdirectd in this process and --procs client processes
(this program, re-executed), which open --conns connections through it, in
equal shares, to an SMB Direct peer in this process, exchange the same
checksummed PDUs and close them: daemon_scale_setup and daemon_scale_exchange
are reported next to the in-process and TCP figures, with the memory and
goroutines of an idle connection in this process (the daemon's end and the
peer's, next to an in-process pair). The daemon must be left with no
connection, goroutine or file descriptor more than before.

The exit status is 1 if a PDU is lost or corrupt, something leaks, or an idle
connection end holds more than 128 KiB. A thousand connections need a few
thousand file descriptors: the hard RLIMIT_NOFILE (ulimit -Hn) must allow
them.`,
		setup: func(fs *flag.FlagSet) func(context.Context, []string) error {
			conns := fs.Int("conns", 1000, "concurrent connections")
			size := fs.String("size", "1MiB", "bytes each connection sends each way (whole PDUs)")
			pdu := fs.String("pdu", "16KiB", "PDU size")
			daemon := fs.Bool("daemon", false, "also run the connections through an smbdirectd from --procs client processes")
			procs := fs.Int("procs", 50, "client processes for --daemon")
			asJSON := fs.Bool("json", false, "JSON lines output")
			memprofile := fs.String("memprofile", "", "write a heap profile of the idle SMB Direct connections to `file`")
			return func(ctx context.Context, args []string) error {
				if err := noArgs(args); err != nil {
					return err
				}
				o := scaleOpts{conns: *conns, procs: *procs, daemon: *daemon, memprofile: *memprofile}
				if o.conns < 1 {
					return usageError(fmt.Sprintf("--conns %d: want at least 1", o.conns))
				}
				var err error
				if o.pdu, err = sizeFlag("--pdu", *pdu, 64); err != nil {
					return err
				}
				if o.pdu > maxScalePDU {
					return usageError(fmt.Sprintf("--pdu %s: at most 1 MiB (the largest SMB Direct message by default)", *pdu))
				}
				sz, err := sizeFlag("--size", *size, o.pdu)
				if err != nil {
					return err
				}
				o.count = sz / o.pdu
				if o.daemon && (o.procs < 1 || o.procs > o.conns) {
					return usageError(fmt.Sprintf("--procs %d: want 1 to --conns (%d)", o.procs, o.conns))
				}
				return benchScale(ctx, newBenchOut(stdoutOf(ctx), stderrOf(ctx), *asJSON), o)
			}
		},
	})
}

type scaleOpts struct {
	conns, pdu, count, procs int
	daemon                   bool
	memprofile               string // heap profile at idle (the SMB Direct run)
}

// bytes is what one connection end sends.
func (o scaleOpts) bytes() int64 { return int64(o.count) * int64(framing.HeaderLen+o.pdu) }

// idleBudget is the most an idle connection end may hold (issue 11).
const idleBudget = 128 << 10

// setupParallel is the connection set-ups in flight.
const setupParallel = 50

var (
	// errScaleLeak: goroutines or file descriptors left after every
	// connection closed.
	errScaleLeak = errors.New("leak")
	// errScaleBudget: an idle connection holds more than idleBudget.
	errScaleBudget = errors.New("idle connection over its memory budget")
	// errFDLimit: RLIMIT_NOFILE is too low for --conns.
	errFDLimit = errors.New("too few file descriptors allowed")
)

// scaleFigures are one transport's results.
type scaleFigures struct {
	setupRate      float64 // connections per second
	memEnd         float64 // bytes per idle end (heap + stacks)
	memAfter       float64 // the same after the exchange
	goroutinesEnd  float64
	fdsEnd         float64
	exchange       float64 // MiB/s, all ends together
	goroutinesLeft int     // after close, more than before
	fdsLeft        int
}

func benchScale(ctx context.Context, out *benchOut, o scaleOpts) error {
	need := 2*o.conns + 64
	if o.daemon {
		// The daemon's end and stream fd of each connection, and the peer's.
		need = 3*o.conns + o.procs + 64
	}
	if err := checkFDLimit(need, o.conns); err != nil {
		return err
	}
	// A small run first: the first connections of a process also pay for
	// one-time growth (pools, the poller), which is not what a connection
	// holds.
	out.progress("warming up")
	warm := o
	warm.memprofile = ""
	warm.conns, warm.count = min(o.conns, 20), 1
	if _, err := scaleRun(ctx, out, "warm-up", smbdTransport(), warm); err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	if _, err := scaleRun(ctx, out, "warm-up", tcpTransport(), warm); err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	ours, err := scaleRun(ctx, out, "smbd", smbdTransport(), o)
	if err != nil {
		return err
	}
	o.memprofile = ""
	tcp, err := scaleRun(ctx, out, "tcp", tcpTransport(), o)
	if err != nil {
		return err
	}
	rows := []benchResult{
		{Test: "scale_setup", Ours: ours.setupRate, TCP: tcp.setupRate, Unit: "conn/s"},
		{Test: "scale_idle_mem_per_end", Ours: ours.memEnd / 1024, TCP: tcp.memEnd / 1024, Unit: "KiB"},
		{Test: "scale_idle_mem_per_pair", Ours: 2 * ours.memEnd / 1024, TCP: 2 * tcp.memEnd / 1024, Unit: "KiB"},
		{Test: "scale_mem_per_end_after_traffic", Ours: ours.memAfter / 1024, TCP: tcp.memAfter / 1024, Unit: "KiB"},
		{Test: "scale_goroutines_per_end", Ours: ours.goroutinesEnd, TCP: tcp.goroutinesEnd, Unit: "goroutines"},
		{Test: "scale_fds_per_end", Ours: ours.fdsEnd, TCP: tcp.fdsEnd, Unit: "fds"},
		{Test: "scale_exchange", MsgSize: o.pdu, Ours: ours.exchange, TCP: tcp.exchange, Unit: "MiB/s"},
	}
	var fails []error
	if ours.memEnd > idleBudget {
		fails = append(fails, fmt.Errorf("%w: %.1f KiB per end, budget %d KiB", errScaleBudget, ours.memEnd/1024, idleBudget>>10))
	}
	for _, f := range []struct {
		name string
		r    scaleFigures
	}{{"smbd", ours}, {"tcp", tcp}} {
		if f.r.goroutinesLeft != 0 || f.r.fdsLeft != 0 {
			fails = append(fails, fmt.Errorf("%s: %w: %d goroutines and %d fds more after closing every connection", f.name, errScaleLeak, f.r.goroutinesLeft, f.r.fdsLeft))
		}
	}
	if o.daemon {
		d, err := scaleDaemon(ctx, out, o)
		if err != nil {
			return err
		}
		rows = append(rows,
			benchResult{Test: "daemon_scale_setup", Ours: d.setupRate, InProcess: ours.setupRate, TCP: tcp.setupRate, Unit: "conn/s"},
			benchResult{Test: "daemon_scale_idle_mem_per_conn", Ours: d.memEnd / 1024, InProcess: 2 * ours.memEnd / 1024, Unit: "KiB"},
			benchResult{Test: "daemon_scale_goroutines_per_conn", Ours: d.goroutinesEnd, InProcess: 2 * ours.goroutinesEnd, Unit: "goroutines"},
			benchResult{Test: "daemon_scale_exchange", MsgSize: o.pdu, Ours: d.exchange, InProcess: ours.exchange, TCP: tcp.exchange, Unit: "MiB/s"})
		if d.goroutinesLeft != 0 || d.fdsLeft != 0 {
			fails = append(fails, fmt.Errorf("daemon: %w: %d goroutines and %d fds more after closing every connection", errScaleLeak, d.goroutinesLeft, d.fdsLeft))
		}
	}
	for _, r := range rows {
		out.add(r)
	}
	if !out.json {
		printScaleTable(out.w, rows, o)
	}
	return joinErrs(fails...)
}

// printScaleTable prints the rows: the connection figures, then the traffic.
func printScaleTable(w io.Writer, rows []benchResult, o scaleOpts) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "test\tours\tin-process\ttcp\tvs tcp\tunit\t\n")
	// Small figures (a TCP connection's memory, in KiB) keep two
	// decimals; absent ones are "-".
	num := func(v float64) string {
		if v < 10 {
			return fmt.Sprintf("%.2f", v)
		}
		return fmt.Sprintf("%.1f", v)
	}
	dash := func(v float64) string {
		if v == 0 {
			return "-"
		}
		return num(v)
	}
	for _, r := range rows {
		ratio := "-"
		if r.TCP > 0 {
			ratio = fmt.Sprintf("%.3f", r.Ours/r.TCP)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t\n", r.Test, num(r.Ours), dash(r.InProcess), dash(r.TCP), ratio, r.Unit)
	}
	tw.Flush()
	fmt.Fprintf(w, "%d connections, each sending %s each way in %s PDUs, every PDU's CRC32C checked: none lost or corrupt.\n",
		o.conns, humanBytes(float64(o.bytes())), humanBytes(float64(o.pdu)))
	fmt.Fprintf(w, "Memory is heap + goroutine stacks after GC; no goroutine or file descriptor left after close.\n")
	if o.daemon {
		fmt.Fprintf(w, "daemon_* = through smbdirectd from %d client processes; its memory and goroutines per connection include the peer's end.\n", o.procs)
	}
}

// checkFDLimit fails with a clear message if the process may not open
// need file descriptors. (Go raised the soft limit to the hard one at
// start.)
func checkFDLimit(need, conns int) error {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		return err
	}
	if rl.Cur < uint64(need) {
		return fmt.Errorf("%w: %d connections need about %d file descriptors, RLIMIT_NOFILE is %d (hard %d): raise the hard limit (ulimit -Hn, LimitNOFILE=)",
			errFDLimit, conns, need, rl.Cur, rl.Max)
	}
	return nil
}

// openFDs counts the process's open file descriptors.
func openFDs() int {
	d, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	return len(d) - 1 // the directory's own
}

// scaleTransport opens connections of one kind: listen returns the
// address, the accept function and the closer of a listener.
type scaleTransport struct {
	listen func(ctx context.Context) (string, func(context.Context) (net.Conn, error), func() error, error)
	dial   func(ctx context.Context, addr string) (net.Conn, error)
}

func smbdTransport() scaleTransport {
	return scaleTransport{
		listen: func(ctx context.Context) (string, func(context.Context) (net.Conn, error), func() error, error) {
			l, err := smbd.Listen(ctx, "127.0.0.1:0", benchProvider())
			if err != nil {
				return "", nil, nil, err
			}
			return l.Addr().String(), func(ctx context.Context) (net.Conn, error) {
				c, err := l.AcceptSMBD(ctx)
				if err != nil {
					return nil, err // not a typed nil in the interface
				}
				return c, nil
			}, l.Close, nil
		},
		dial: func(ctx context.Context, addr string) (net.Conn, error) {
			c, err := smbd.Dial(ctx, addr, benchProvider())
			if err != nil {
				return nil, err
			}
			return c, nil
		},
	}
}

func tcpTransport() scaleTransport {
	return scaleTransport{
		listen: func(ctx context.Context) (string, func(context.Context) (net.Conn, error), func() error, error) {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				return "", nil, nil, err
			}
			return l.Addr().String(), func(context.Context) (net.Conn, error) { return l.Accept() }, l.Close, nil
		},
		dial: func(ctx context.Context, addr string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", addr)
		},
	}
}

// settle waits until the goroutine count has stopped changing (the
// set-up's and teardown's goroutines have finished) and returns it.
func settle() int {
	n, same := runtime.NumGoroutine(), 0
	for i := 0; i < 500 && same < 10; i++ {
		time.Sleep(10 * time.Millisecond)
		m := runtime.NumGoroutine()
		if m == n {
			same++
		} else {
			n, same = m, 0
		}
	}
	return n
}

// waitBack waits until the goroutines and fds are back to g and fds, and
// returns how many more there are after it has given up: teardown
// finishes asynchronously (a connection's goroutines exit once its
// socket's close is seen), so the counts are looked at until they stop
// changing, not once.
func waitBack(g, fds int) (int, int) {
	var dg, dfd int
	for i := 0; i < 50; i++ {
		runtime.GC() // closes nothing of ours: all is closed explicitly
		settle()
		dg, dfd = runtime.NumGoroutine()-g, openFDs()-fds
		if dg <= 0 && dfd <= 0 {
			return 0, 0
		}
		time.Sleep(100 * time.Millisecond)
	}
	return dg, dfd
}

func heapAndStacks() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc + m.StackInuse
}

// scaleRun opens o.conns connections of transport tr, measures them idle,
// exchanges PDUs on all of them at once, closes them and checks that
// nothing is left.
func scaleRun(ctx context.Context, out *benchOut, name string, tr scaleTransport, o scaleOpts) (scaleFigures, error) {
	var f scaleFigures
	g0 := settle()
	fd0 := openFDs()
	mem0 := heapAndStacks()

	addr, accept, closeL, err := tr.listen(ctx)
	if err != nil {
		return f, err
	}
	ends := make([]net.Conn, 0, 2*o.conns)
	var mu sync.Mutex
	closeAll := func() {
		mu.Lock()
		for _, c := range ends {
			c.Close()
		}
		ends = ends[:0]
		mu.Unlock()
	}
	// Cancelling (^C) ends every phase: blocked reads and writes fail.
	stop := context.AfterFunc(ctx, closeAll)
	defer stop()
	defer closeAll()

	out.progress("%s: setting up %d connections", name, o.conns)
	t0 := time.Now()
	acceptErr := make(chan error, 1)
	go func() {
		for range o.conns {
			c, err := accept(ctx)
			if err != nil {
				acceptErr <- err
				return
			}
			mu.Lock()
			ends = append(ends, c)
			mu.Unlock()
		}
		acceptErr <- nil
	}()
	next := make(chan struct{})
	dialErr := make(chan error, setupParallel)
	var dialed atomic.Int64
	for range min(setupParallel, o.conns) {
		go func() {
			var err error
			for range next {
				if err != nil {
					continue
				}
				var c net.Conn
				if c, err = tr.dial(ctx, addr); err == nil {
					mu.Lock()
					ends = append(ends, c)
					mu.Unlock()
					if n := dialed.Add(1); n%100 == 0 {
						out.progress("%s: %d of %d connections set up", name, n, o.conns)
					}
				}
			}
			dialErr <- err
		}()
	}
	for range o.conns {
		next <- struct{}{}
	}
	close(next)
	var errs []error
	for range min(setupParallel, o.conns) {
		errs = append(errs, <-dialErr)
	}
	if err := joinErrs(errs...); err != nil {
		closeL()
		<-acceptErr
		return f, fmt.Errorf("%s: set-up: %w", name, err)
	}
	if err := <-acceptErr; err != nil {
		closeL()
		return f, fmt.Errorf("%s: set-up: accept: %w", name, err)
	}
	f.setupRate = float64(o.conns) / time.Since(t0).Seconds()
	closeL()

	out.progress("%s: %d connections idle", name, o.conns)
	k := float64(2 * o.conns)
	f.goroutinesEnd = float64(settle()-g0) / k
	f.fdsEnd = float64(openFDs()-fd0) / k
	// Below zero is noise (garbage of earlier runs freed since): none.
	f.memEnd = max(0, float64(int64(heapAndStacks())-int64(mem0))/k)
	if o.memprofile != "" {
		if err := writeHeapProfile(o.memprofile); err != nil {
			return f, err
		}
	}

	var got atomic.Int64
	total := int64(2*o.conns) * o.bytes()
	stopWatch := watchExchange(out, name, &got, total, closeAll)
	mu.Lock()
	all := append([]net.Conn(nil), ends...)
	mu.Unlock()
	t0 = time.Now()
	errc := make(chan error, len(all))
	for i, c := range all {
		go func() { errc <- exchange(c, uint32(i), o.pdu, o.count, &got) }()
	}
	for range all {
		if err := <-errc; err != nil {
			errs = append(errs, err)
		}
	}
	el := time.Since(t0)
	stopWatch()
	if err := joinErrs(errs...); err != nil {
		return f, fmt.Errorf("%s: exchange: %w", name, err)
	}
	f.exchange = float64(total) / el.Seconds() / (1 << 20)
	// Idle again: what the traffic left behind (receive buffers posted
	// for the credits the peer asked for stay posted).
	settle()
	f.memAfter = max(0, float64(int64(heapAndStacks())-int64(mem0))/k)

	out.progress("%s: closing", name)
	closeAll()
	f.goroutinesLeft, f.fdsLeft = waitBack(g0, fd0)
	return f, nil
}

// watchExchange shows the progress of an exchange, and is its watchdog:
// with nothing received for a minute the exchange has stalled (a PDU
// lost for good), and abort turns the waits into errors. stop ends it.
func watchExchange(out *benchOut, name string, got *atomic.Int64, total int64, abort func()) (stop func()) {
	done := make(chan struct{})
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		tk := time.NewTicker(time.Second)
		defer tk.Stop()
		last, idle := int64(-1), 0
		for {
			select {
			case <-done:
				return
			case <-tk.C:
			}
			n := got.Load()
			out.progress("%s: exchanging: %s of %s", name, humanBytes(float64(n)), humanBytes(float64(total)))
			if n != last {
				last, idle = n, 0
			} else if idle++; idle == 60 {
				abort()
			}
		}
	}()
	return func() {
		close(done)
		<-exited
	}
}

// errList is errors of many connections in one line (the CLI prints one
// line), the first few of them; errors.Is and As see them all.
type errList []error

func (e errList) Error() string {
	const shown = 3
	var b strings.Builder
	for i, err := range e[:min(len(e), shown)] {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(err.Error())
	}
	if len(e) > shown {
		fmt.Fprintf(&b, " (and %d more)", len(e)-shown)
	}
	return b.String()
}

func (e errList) Unwrap() []error { return e }

// joinErrs is errors.Join, on one line.
func joinErrs(errs ...error) error {
	var l errList
	for _, err := range errs {
		if err != nil {
			l = append(l, err)
		}
	}
	if len(l) == 0 {
		return nil
	}
	return l
}

func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := pprof.WriteHeapProfile(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
