//go:build linux

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/smbdirect/smbdirect/internal/syncbuf"
	"github.com/smbdirect/smbdirect/iwarp"
	"github.com/smbdirect/smbdirect/smbd"
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
	var logs syncbuf.Buffer
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
	for _, want := range []string{"smbdirectd_clients 1\n", "# TYPE smbdirectd_rdma_written_bytes_total counter\n", "smbdirectd_server_rdma_read_bytes_total 0\n", "smbdirectd_server_channel_passthrough_total 0\n", "smbdirectd_client_rdma_write_bytes_total 0\n", "# TYPE smbdirectd_goroutines gauge\n"} {
		if !strings.Contains(string(body), want) {
			t.Fatalf("metrics: want a line %q, got:\n%s", want, body)
		}
	}
	if g := regexp.MustCompile(`(?m)^smbdirectd_goroutines ([1-9][0-9]*)$`).FindSubmatch(body); g == nil {
		t.Fatalf("metrics: want smbdirectd_goroutines with a positive count, got:\n%s", body)
	}
	cancel() // SIGTERM
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run after the context ended (SIGTERM): want nil, got %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return within 10 s of the context's end (SIGTERM)")
	}
	// run returns only after the ordered shutdown, so "stopped" is there.
	if want := `"msg":"smbdirectd: stopped"`; !strings.Contains(logs.String(), want) {
		t.Fatalf("logs when run returned: want a line with %s, got:\n%s", want, logs.String())
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

// TestMain lets the test binary be the daemon itself (main, with its
// signal handling) when TestSIGTERM runs it as a child.
func TestMain(m *testing.M) {
	if os.Getenv("SMBDIRECTD_TEST_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// The daemon process, sent SIGTERM while a client is connected and holds
// an SMB Direct connection, disconnects the peer in order, logs "stopped"
// and exits 0. The exit used to race the shutdown (7 of 30 runs lacked
// "stopped"), hence several rounds.
func TestSIGTERM(t *testing.T) {
	peerCfg := &smbd.Config{Provider: iwarp.New(iwarp.Config{FirstSendDelay: -1})}
	l, err := smbd.Listen(t.Context(), "127.0.0.1:0", peerCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for round := range 10 {
		sock := filepath.Join(t.TempDir(), "d.sock")
		var stderr syncbuf.Buffer
		cmd := exec.Command(os.Args[0], "--socket", sock)
		cmd.Env = append(os.Environ(), "SMBDIRECTD_TEST_MAIN=1")
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		fail := func(format string, args ...any) {
			t.Helper()
			cmd.Process.Kill()
			<-exited
			t.Fatalf("round %d: %s; the daemon's log:\n%s", round, fmt.Sprintf(format, args...), stderr.String())
		}
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		defer cancel()
		// The socket exists once "listening" is logged.
		for !strings.Contains(stderr.String(), "smbdirectd: listening") {
			select {
			case err := <-exited:
				t.Fatalf("round %d: the daemon exited before listening: %v\n%s", round, err, stderr.String())
			case <-ctx.Done():
				fail("not listening after 20 s")
			case <-time.After(5 * time.Millisecond):
			}
		}
		cl, err := client.Dial(ctx, sock)
		if err != nil {
			fail("dial: %v", err)
		}
		defer cl.Close()
		conn, err := cl.Connect(ctx, l.Addr().String())
		if err != nil {
			fail("connect: %v", err)
		}
		defer conn.Close()
		srv, err := l.AcceptSMBD(ctx)
		if err != nil {
			fail("accept: %v", err)
		}
		defer srv.Close()
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			fail("SIGTERM: %v", err)
		}
		select {
		case err := <-exited:
			if err != nil {
				t.Fatalf("round %d: after SIGTERM the daemon exited with %v, want status 0; its log:\n%s", round, err, stderr.String())
			}
		case <-ctx.Done():
			fail("still running 20 s after SIGTERM")
		}
		if want := `msg="smbdirectd: stopped"`; !strings.Contains(stderr.String(), want) {
			t.Fatalf("round %d: the daemon exited after SIGTERM without logging %s; its log:\n%s", round, want, stderr.String())
		}
		srv.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := srv.ReadMessage(make([]byte, 64)); !errors.Is(err, io.EOF) {
			t.Fatalf("round %d: the peer read %v, want EOF (an orderly disconnect)", round, err)
		}
		conn.Stream.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := conn.Stream.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
			t.Fatalf("round %d: the client's stream read %v, want EOF", round, err)
		}
	}
}
