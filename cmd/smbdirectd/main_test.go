//go:build linux

package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/smbdirect/smbdirect/daemon"
	"github.com/smbdirect/smbdirect/smbdirectd"
)

func TestRunMetricsAndShutdown(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "run", "d.sock")
	ctx, cancel := context.WithCancel(t.Context())
	type up struct {
		s       *daemon.Server
		metrics string
	}
	ready := make(chan up, 1)
	done := make(chan error, 1)
	var logs lockedBuffer
	go func() {
		done <- run(ctx, []string{"--socket", sock, "--metrics", "127.0.0.1:0", "--max-registered", "64MiB", "--log-json"}, &logs,
			func(s *daemon.Server, m string) { ready <- up{s, m} })
	}()
	var u up
	select {
	case u = <-ready:
	case err := <-done:
		t.Fatal(err)
	}
	cl, err := smbdirectd.Dial(ctx, sock)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	resp, err := http.Get("http://" + u.metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "smbdirectd_clients 1\n") || !strings.Contains(string(body), "# TYPE smbdirectd_rdma_written_bytes_total counter") {
		t.Fatalf("metrics:\n%s", body)
	}
	cancel() // SIGTERM
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no shutdown")
	}
	if !strings.Contains(logs.String(), `"msg":"smbdirectd: stopped"`) {
		t.Fatalf("logs:\n%s", logs.String())
	}
}

func TestFlags(t *testing.T) {
	var out bytes.Buffer
	if err := run(t.Context(), []string{"--help"}, &out, nil); err == nil || !strings.Contains(out.String(), "--allow-gid") && !strings.Contains(out.String(), "-allow-gid") {
		t.Fatalf("help: %v\n%s", err, out.String())
	}
	for _, args := range [][]string{{"--socket-mode", "999"}, {"--max-registered", "lots"}, {"--allow-uid", "x"}, {"extra"}} {
		if err := run(t.Context(), append(args, "--socket", filepath.Join(t.TempDir(), "s")), io.Discard, nil); err == nil {
			t.Errorf("%v accepted", args)
		}
	}
}

// lockedBuffer is a bytes.Buffer safe for the daemon's goroutines to log
// into while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
