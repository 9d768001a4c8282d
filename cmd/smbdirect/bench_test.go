package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestBenchRDMAJSON(t *testing.T) {
	var out, errb bytes.Buffer
	if err := run(context.Background(), []string{"bench", "rdma", "--json", "--duration", "150ms", "--sizes", "4096"}, &out, &errb); err != nil {
		t.Fatalf("%v\n%s", err, errb.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	want := []string{"rdma_write", "rdma_read", "send", "pingpong"}
	if len(lines) != len(want) {
		t.Fatalf("%d lines:\n%s", len(lines), out.String())
	}
	for i, l := range lines {
		var r map[string]any
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"test", "msg_size", "ours", "tcp", "ratio", "unit"} {
			if _, ok := r[k]; !ok {
				t.Fatalf("line %q lacks %s", l, k)
			}
		}
		if r["test"] != want[i] || r["ratio"].(float64) <= 0 {
			t.Fatalf("line %d: %q", i, l)
		}
	}
}

func TestBenchSMBDJSON(t *testing.T) {
	var out, errb bytes.Buffer
	if err := run(context.Background(), []string{"bench", "smbd", "--json", "--duration", "150ms"}, &out, &errb); err != nil {
		t.Fatalf("%v\n%s", err, errb.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	want := []string{"smbd_stream_default", "smbd_stream_large", "smbd_stream_large_fpdu1448", "smbd_roundtrip"}
	if len(lines) != len(want) {
		t.Fatalf("%d lines:\n%s", len(lines), out.String())
	}
	for i, l := range lines {
		var r benchResult
		if err := json.Unmarshal([]byte(l), &r); err != nil || r.Test != want[i] || r.Ours <= 0 || r.TCP <= 0 || r.Ratio <= 0 {
			t.Fatalf("line %q: %+v %v", l, r, err)
		}
	}
	out.Reset()
	if err := run(context.Background(), []string{"bench", "smbd", "--json", "--duration", "100ms", "--fpdu", "1448"}, &out, &errb); err != nil {
		t.Fatalf("--fpdu: %v\n%s", err, errb.String())
	}
	if n := strings.Count(out.String(), "\n"); n != 3 {
		t.Fatalf("--fpdu 1448: %d lines:\n%s", n, out.String())
	}
}

func TestBenchDaemonJSON(t *testing.T) {
	var out, errb bytes.Buffer
	if err := run(context.Background(), []string{"bench", "daemon", "--json", "--duration", "150ms", "--rounds", "2", "--file-size", "4MiB"}, &out, &errb); err != nil {
		t.Fatalf("%v\n%s", err, errb.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	want := []string{"daemon_stream", "daemon_roundtrip", "daemon_hop_roundtrip", "daemon_rdma_write", "daemon_rdma_read"}
	if len(lines) != len(want) {
		t.Fatalf("%d lines:\n%s", len(lines), out.String())
	}
	for i, l := range lines {
		var r benchResult
		if err := json.Unmarshal([]byte(l), &r); err != nil || r.Test != want[i] || r.Ours <= 0 || r.InProcess <= 0 || r.RatioInProcess <= 0 {
			t.Fatalf("line %q: %+v %v", l, r, err)
		}
		// The RDMA offload rows have no TCP figure: null, not 0.
		var m map[string]any
		json.Unmarshal([]byte(l), &m)
		tcp, ok := m["tcp"]
		if _, ratio := m["ratio"]; !ok || !ratio || (tcp == nil) != strings.HasPrefix(r.Test, "daemon_rdma_") || (m["ratio"] == nil) != (tcp == nil) {
			t.Fatalf("line %q: tcp and ratio", l)
		}
	}
	if err := run(context.Background(), []string{"bench", "daemon", "--file-size", "1KiB"}, &out, &errb); err == nil {
		t.Fatal("a file size under 1 MiB was accepted")
	}
	if err := run(context.Background(), []string{"bench", "daemon", "--rounds", "0"}, &out, &errb); err == nil {
		t.Fatal("--rounds 0 was accepted")
	}
}

// TestBenchRDMAFPDURows: from 64 KiB up the default output measures each
// test again with 1448-byte FPDUs; --fpdu fixes the size for every row.
func TestBenchRDMAFPDURows(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{nil, []string{"rdma_write", "rdma_read", "send", "rdma_write_fpdu1448", "rdma_read_fpdu1448", "send_fpdu1448", "pingpong"}},
		{[]string{"--fpdu", "1448"}, []string{"rdma_write", "rdma_read", "send", "pingpong"}},
	} {
		var out, errb bytes.Buffer
		args := append([]string{"bench", "rdma", "--json", "--duration", "100ms", "--sizes", "65536"}, tc.args...)
		if err := run(context.Background(), args, &out, &errb); err != nil {
			t.Fatalf("%v: %v\n%s", tc.args, err, errb.String())
		}
		lines := strings.Split(strings.TrimSpace(out.String()), "\n")
		if len(lines) != len(tc.want) {
			t.Fatalf("%v: %d lines:\n%s", tc.args, len(lines), out.String())
		}
		for i, l := range lines {
			var r benchResult
			if err := json.Unmarshal([]byte(l), &r); err != nil || r.Test != tc.want[i] || r.Ours <= 0 || r.TCP <= 0 || r.Ratio <= 0 {
				t.Fatalf("%v: line %q: %+v %v", tc.args, l, r, err)
			}
		}
	}
	for _, bad := range []string{"10", "65537", "x"} {
		var out, errb bytes.Buffer
		if err := run(context.Background(), []string{"bench", "rdma", "--fpdu", bad}, &out, &errb); err == nil {
			t.Fatalf("--fpdu %s accepted", bad)
		}
	}
}

// TestInterleaveMedian: each side's figure is its median slice, and the
// two take turns, ours first.
func TestInterleaveMedian(t *testing.T) {
	var order []string
	ours := []float64{5, 1, 100, 3, 4}
	tcp := []float64{10, 20, 30, 0.5, 40}
	var i, j int
	o, tc, err := interleave(5*time.Millisecond, func(time.Duration) (float64, error) {
		order = append(order, "o")
		i++
		return ours[i-1], nil
	}, func(time.Duration) (float64, error) {
		order = append(order, "t")
		j++
		return tcp[j-1], nil
	})
	if err != nil || o != 4 || tc != 20 {
		t.Fatalf("interleave = %v, %v, %v; want 4, 20", o, tc, err)
	}
	if got := strings.Join(order, ""); got != "ototototot" {
		t.Fatalf("order %s", got)
	}
	if m := median([]float64{4, 1, 3, 2}); m != 2.5 {
		t.Fatalf("median of 4 = %v", m)
	}
	if m := median(nil); m != 0 {
		t.Fatalf("median of none = %v", m)
	}
	boom := errors.New("boom")
	if _, _, err := interleave(time.Millisecond, func(time.Duration) (float64, error) { return 0, boom }, nil); !errors.Is(err, boom) {
		t.Fatalf("err %v", err)
	}
}

// TestBenchSMBDCPUProfile: --cpuprofile writes a profile of the run.
func TestBenchSMBDCPUProfile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cpu.prof")
	var out, errb bytes.Buffer
	if err := run(context.Background(), []string{"bench", "smbd", "--json", "--duration", "100ms", "--fpdu", "1448", "--cpuprofile", path}, &out, &errb); err != nil {
		t.Fatalf("%v\n%s", err, errb.String())
	}
	b, err := os.ReadFile(path)
	// A pprof profile is a gzipped protocol buffer.
	if err != nil || len(b) < 2 || b[0] != 0x1f || b[1] != 0x8b {
		t.Fatalf("profile: %d bytes, % x, %v", len(b), b[:min(len(b), 2)], err)
	}
}
