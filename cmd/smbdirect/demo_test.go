package main

import (
	"bytes"
	"context"
	"encoding/json"
	"runtime"
	"strings"
	"testing"
	"time"
)

func TestDemo(t *testing.T) {
	base := runtime.NumGoroutine()
	for _, crc := range []string{"", "--crc"} {
		var out, errb bytes.Buffer
		args := []string{"demo", "--size", "8M"}
		if crc != "" {
			args = append(args, crc)
		}
		if err := run(context.Background(), args, &out, &errb); err != nil {
			t.Fatalf("demo %s: %v\n%s%s", crc, err, out.String(), errb.String())
		}
		for _, want := range []string{"Send with Solicited Event", "RDMA Write", "RDMA Read", "invalidated", "invalid STag", "SMB Direct", "fragments", "Send with Invalidate", "All 7 transfers verified"} {
			if !strings.Contains(out.String(), want) {
				t.Fatalf("demo output lacks %q:\n%s", want, out.String())
			}
		}
	}
	var out bytes.Buffer
	if err := run(context.Background(), []string{"demo", "--size", "4M", "--json"}, &out, &out); err != nil {
		t.Fatal(err)
	}
	var sum demoSummary
	if err := json.Unmarshal(out.Bytes(), &sum); err != nil || !sum.OK || sum.Steps != 7 || sum.WriteMiBs <= 0 {
		t.Fatalf("json %q: %+v %v", out.String(), sum, err)
	}
	deadline := time.Now().Add(3 * time.Second)
	for runtime.NumGoroutine() > base && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > base {
		buf := make([]byte, 1<<16)
		t.Fatalf("%d goroutines after the demo, %d before:\n%s", n, base, buf[:runtime.Stack(buf, true)])
	}
}

func TestUnits(t *testing.T) {
	for in, want := range map[string]int{"4096": 4096, "64K": 65536, "1M": 1 << 20, "1MiB": 1 << 20, "2G": 2 << 30} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v", in, got, err)
		}
	}
	if _, err := parseSize("lots"); err == nil {
		t.Error("parseSize accepted junk")
	}
	if got := humanRate(3 << 29); got != "1.5 GiB/s" {
		t.Errorf("humanRate: %q", got)
	}
}
