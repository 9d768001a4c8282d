package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
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
	if len(lines) != 3 {
		t.Fatalf("%d lines:\n%s", len(lines), out.String())
	}
	for _, l := range lines {
		var r benchResult
		if err := json.Unmarshal([]byte(l), &r); err != nil || r.Ours <= 0 || r.TCP <= 0 || r.Ratio <= 0 {
			t.Fatalf("line %q: %+v %v", l, r, err)
		}
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
