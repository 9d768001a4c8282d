package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/smbdirect/smbdirect/internal/rping"
	"github.com/smbdirect/smbdirect/internal/syncbuf"
	"github.com/smbdirect/smbdirect/internal/testbed"
)

func TestRpingCommand(t *testing.T) {
	port, err := testbed.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	p := strconv.Itoa(port)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var sout, serr syncbuf.Buffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"rping", "-s", "-a", "127.0.0.1", "-p", p, "-v", "-S", "100"}, &sout, &serr)
	}()
	for !strings.Contains(serr.String(), "listening") {
		time.Sleep(5 * time.Millisecond)
	}
	var cout, cerr bytes.Buffer
	if err := run(ctx, []string{"rping", "-c", "-a", "127.0.0.1", "-p", p, "-C", "5", "-S", "100", "-v", "-V", "--crc", "--json"}, &cout, &cerr); err != nil {
		t.Fatalf("client: %v\n%s", err, cerr.String())
	}
	if err := <-done; err != nil {
		t.Fatalf("server: %v\n%s", err, serr.String())
	}
	lines := strings.Split(strings.TrimSpace(cout.String()), "\n")
	if len(lines) != 6 || !strings.HasPrefix(lines[0], "ping data: rdma-ping-0: ABC") {
		t.Fatalf("client output:\n%s", cout.String())
	}
	var st rping.Stats
	if err := json.Unmarshal([]byte(lines[5]), &st); err != nil || st.Pings != 5 || st.Validated != 5 || !st.CRC {
		t.Fatalf("client JSON %q: %+v %v", lines[5], st, err)
	}
	if !strings.Contains(sout.String(), "server ping data: rdma-ping-4: ") {
		t.Fatalf("server output:\n%s", sout.String())
	}
}

func TestRpingUsage(t *testing.T) {
	var out, errb bytes.Buffer
	err := run(context.Background(), []string{"rping", "-a", "x"}, &out, &errb)
	if err == nil || !strings.Contains(err.Error(), "exactly one of -s (--server) and -c (--client)") {
		t.Fatalf("%v", err)
	}
	if err := run(context.Background(), []string{"rping", "--help"}, &out, &errb); err != nil || !strings.Contains(out.String(), "rping protocol") {
		t.Fatalf("help: %v\n%s", err, out.String())
	}
}

// TestRpingServerInterrupt: an interrupt ends the rping server as it ends
// `smbdirect listen`: no error, and the server's statistics.
func TestRpingServerInterrupt(t *testing.T) {
	port, err := testbed.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var sout, serr syncbuf.Buffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"rping", "-s", "-a", "127.0.0.1", "-p", strconv.Itoa(port)}, &sout, &serr)
	}()
	for !strings.Contains(serr.String(), "listening") {
		select {
		case err := <-done:
			t.Fatalf("server: %v\n%s", err, serr.String())
		case <-time.After(5 * time.Millisecond):
		}
	}
	cancel() // SIGINT
	select {
	case err := <-done:
		if err != nil || !strings.Contains(serr.String(), "rping: 0 pings of 64 bytes") {
			t.Fatalf("server: %v\n%s", err, serr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the server did not end")
	}
}
