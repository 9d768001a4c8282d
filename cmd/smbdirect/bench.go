package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"
)

// benchResult is one line of a benchmark: our figure and plain TCP's in the
// same run, and their ratio.
type benchResult struct {
	Test    string  `json:"test"`
	MsgSize int     `json:"msg_size"`
	Ours    float64 `json:"ours"`
	TCP     float64 `json:"tcp"`
	Ratio   float64 `json:"ratio"`
	Unit    string  `json:"unit"`
	// InProcess is, for bench daemon, the same traffic on an in-process
	// smbd.Conn, and RatioInProcess = Ours / InProcess.
	InProcess      float64 `json:"in_process,omitempty"`
	RatioInProcess float64 `json:"ratio_in_process,omitempty"`
	// RDMABytes is, for bench samba, what the client's daemon moved by
	// RDMA during the row's SMB Direct run.
	RDMABytes int64 `json:"rdma_bytes,omitempty"`
}

// MarshalJSON writes null, not 0, for the TCP figure and its ratio of a
// row that has none (the daemon's RDMA offload rows).
func (r benchResult) MarshalJSON() ([]byte, error) {
	type plain benchResult
	var tcp, ratio *float64
	if r.TCP > 0 {
		tcp, ratio = &r.TCP, &r.Ratio
	}
	return json.Marshal(struct {
		plain
		TCP   *float64 `json:"tcp"`
		Ratio *float64 `json:"ratio"`
	}{plain(r), tcp, ratio})
}

// benchOut prints results as a table or as JSON lines.
type benchOut struct {
	w      io.Writer
	json   bool
	rows   []benchResult
	errw   io.Writer
	isTerm bool
}

func (b *benchOut) progress(format string, a ...any) {
	if b.isTerm {
		fmt.Fprintf(b.errw, "\r\033[K"+format, a...)
	}
}

func (b *benchOut) add(r benchResult) {
	if r.TCP > 0 {
		r.Ratio = r.Ours / r.TCP
	}
	if r.InProcess > 0 {
		r.RatioInProcess = r.Ours / r.InProcess
	}
	b.progress("")
	if b.json {
		json.NewEncoder(b.w).Encode(r)
		return
	}
	b.rows = append(b.rows, r)
}

func (b *benchOut) flush() {
	if b.json || len(b.rows) == 0 {
		return
	}
	tw := tabwriter.NewWriter(b.w, 0, 4, 2, ' ', tabwriter.AlignRight)
	inproc := false
	for _, r := range b.rows {
		inproc = inproc || r.InProcess > 0
	}
	if inproc {
		fmt.Fprintf(tw, "test\tsize\tours\tin-process\tvs in-process\ttcp\tvs tcp\tunit\t\n")
	} else {
		fmt.Fprintf(tw, "test\tsize\tours\ttcp\tratio\tunit\t\n")
	}
	for _, r := range b.rows {
		if inproc {
			tcp, ratio := "-", "-"
			if r.TCP > 0 {
				tcp, ratio = fmt.Sprintf("%.1f", r.TCP), fmt.Sprintf("%.3f", r.Ratio)
			}
			fmt.Fprintf(tw, "%s\t%s\t%.1f\t%.1f\t%.3f\t%s\t%s\t%s\t\n", r.Test, humanBytes(float64(r.MsgSize)), r.Ours, r.InProcess, r.RatioInProcess, tcp, ratio, r.Unit)
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%.1f\t%.1f\t%.3f\t%s\t\n", r.Test, humanBytes(float64(r.MsgSize)), r.Ours, r.TCP, r.Ratio, r.Unit)
	}
	tw.Flush()
	if inproc {
		fmt.Fprintln(b.w, "ours = through smbdirectd; ratios: above 1 is better for throughput (MiB/s), below 1 is better for latency (us, ms).")
		return
	}
	fmt.Fprintln(b.w, "ratio = ours / tcp: above 1 is better for throughput (MiB/s), below 1 is better for latency (us, ms).")
}

func newBenchOut(w, errw io.Writer, asJSON bool) *benchOut {
	f, ok := errw.(*os.File)
	return &benchOut{w: w, errw: errw, json: asJSON, isTerm: ok && isTerminal(f)}
}

func parseSizes(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := sizeFlag("--sizes", f, 1)
		if err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	sort.Ints(out)
	return out, nil
}

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair() (net.Conn, net.Conn, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, err
	}
	defer ln.Close()
	ch := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		ch <- c
	}()
	a, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		return nil, nil, err
	}
	b := <-ch
	if b == nil {
		a.Close()
		return nil, nil, fmt.Errorf("accept failed")
	}
	return a, b, nil
}

// tcpStream measures MiB/s of a one-way stream of size-byte messages, each
// read whole on the other side: the TCP counterpart of a stream of RDMA
// operations of that size.
func tcpStream(size int, d time.Duration) (float64, error) {
	a, b, err := tcpPair()
	if err != nil {
		return 0, err
	}
	defer a.Close()
	defer b.Close()
	var got int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, size)
		for {
			if _, err := io.ReadFull(b, buf); err != nil {
				return
			}
			got += int64(size)
		}
	}()
	msg := make([]byte, size)
	t0 := time.Now()
	for time.Since(t0) < d {
		if _, err := a.Write(msg); err != nil {
			return 0, err
		}
	}
	el := time.Since(t0)
	a.Close()
	wg.Wait()
	return float64(got) / el.Seconds() / (1 << 20), nil
}

// tcpPingPong measures the average round trip of size-byte messages.
func tcpPingPong(size int, d time.Duration) (float64, error) {
	a, b, err := tcpPair()
	if err != nil {
		return 0, err
	}
	defer a.Close()
	defer b.Close()
	go func() {
		buf := make([]byte, size)
		for {
			if _, err := io.ReadFull(b, buf); err != nil {
				return
			}
			if _, err := b.Write(buf); err != nil {
				return
			}
		}
	}()
	buf := make([]byte, size)
	n := 0
	t0 := time.Now()
	for time.Since(t0) < d {
		if _, err := a.Write(buf); err != nil {
			return 0, err
		}
		if _, err := io.ReadFull(a, buf); err != nil {
			return 0, err
		}
		n++
	}
	return float64(time.Since(t0).Microseconds()) / float64(n), nil
}

func sizeList(sizes []int) string {
	s := make([]string, len(sizes))
	for i, n := range sizes {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ",")
}

// startCPUProfile writes a CPU profile of the rest of the run to path
// (--cpuprofile); with path empty it does nothing. stop ends it.
func startCPUProfile(path string) (stop func(), err error) {
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}
