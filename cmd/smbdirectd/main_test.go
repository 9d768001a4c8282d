//go:build linux

package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/smbdirect/smbdirect/smbdirectd/client"
	"github.com/smbdirect/smbdirect/smbdirectd/server"
)

func TestRunMetricsAndShutdown(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "run", "d.sock")
	ctx, cancel := context.WithCancel(t.Context())
	type up struct {
		s       *server.Server
		metrics string
	}
	ready := make(chan up, 1)
	done := make(chan error, 1)
	var logs lockedBuffer
	go func() {
		done <- run(ctx, []string{"--socket", sock, "--metrics", "127.0.0.1:0", "--max-registered", "64MiB", "--log-json"}, &logs,
			func(s *server.Server, m string) { ready <- up{s, m} })
	}()
	var u up
	select {
	case u = <-ready:
	case err := <-done:
		t.Fatal(err)
	}
	cl, err := client.Dial(ctx, sock)
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
	stdout = &out
	defer func() { stdout = os.Stdout }()
	if err := run(t.Context(), []string{"--help"}, io.Discard, nil); err != nil || !strings.HasPrefix(out.String(), "smbdirectd: the SMB Direct daemon\n\nusage: smbdirectd [flags]") ||
		!strings.Contains(out.String(), "\nflags:\n  --allow-gid string\n") || strings.Contains(out.String(), "\n  -allow") {
		t.Fatalf("help: %v\n%s", err, out.String())
	}
	out.Reset()
	if err := run(t.Context(), []string{"--version"}, io.Discard, nil); err != nil || !strings.HasPrefix(out.String(), "smbdirectd ") || strings.Count(out.String(), "\n") != 1 {
		t.Fatalf("version: %v %q", err, out.String())
	}
	dir := t.TempDir()
	sock := filepath.Join(dir, "s")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--socket-mode", "999"}, `--socket-mode "999": want octal`},
		{[]string{"--max-registered", "lots"}, `--max-registered: "lots": want a positive size`},
		{[]string{"--allow-uid", "x"}, `--allow-uid: "x" is not an ID`},
		{[]string{"extra"}, `unexpected argument "extra"`},
		{[]string{"--max-conns", "0"}, "--max-conns 0: want at least 1"},
		{[]string{"--keepalive", "0"}, "--keepalive 0s: want a positive interval"},
		{[]string{"--dial-timeout", "-1s"}, "--dial-timeout -1s: want a positive duration"},
		{[]string{"--log-level", "loud"}, `--log-level "loud": want debug`},
		{[]string{"--nosuch"}, "flag provided but not defined: -nosuch"},
		{[]string{"--socket", ""}, "--socket: want a path"},
		{[]string{"--socket", "/" + strings.Repeat("d", 120) + "/s.sock"}, "--socket: the path is 128 bytes, too long for a Unix socket (at most 107)"},
	} {
		var errb bytes.Buffer
		err := run(t.Context(), append([]string{"--socket", sock}, c.args...), io.Discard, nil)
		code := exitCode(err, &errb)
		if code != 2 || !strings.HasPrefix(errb.String(), "smbdirectd: "+c.want) || strings.Count(errb.String(), "\n") != 1 {
			t.Errorf("%q: exit %d, stderr %q", c.args, code, errb.String())
		}
	}
	// An error of the daemon package has its own prefix: printed once.
	file := filepath.Join(dir, "file")
	os.WriteFile(file, nil, 0o644)
	var errb bytes.Buffer
	err := run(t.Context(), []string{"--socket", filepath.Join(file, "s.sock")}, io.Discard, nil)
	if code := exitCode(err, &errb); code != 1 || !strings.HasPrefix(errb.String(), "smbdirectd: ") || strings.Contains(errb.String(), "smbdirectd: smbdirectd:") {
		t.Errorf("exit %d, stderr %q", code, errb.String())
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
