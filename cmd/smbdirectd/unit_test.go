//go:build linux

package main

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/smbdirect/smbdirect/internal/syncbuf"
	"github.com/smbdirect/smbdirect/smbdirectd/server"
)

const unitFile = "../../contrib/systemd/smbdirectd.service"

// unit reads the example unit: its [Service] settings, Environment=
// expanded into ExecStart.
func unit(t *testing.T) map[string]string {
	t.Helper()
	f, err := os.Open(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	kv := map[string]string{}
	env := map[string]string{}
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "["):
			section = line
		case section == "[Service]":
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				t.Fatalf("unit: %q", line)
			}
			if k == "Environment" {
				ek, ev, _ := strings.Cut(v, "=")
				env[ek] = ev
			}
			kv[k] = v
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	kv["ExecStart"] = regexp.MustCompile(`\$\{(\w+)\}`).ReplaceAllStringFunc(kv["ExecStart"], func(m string) string {
		v, ok := env[m[2:len(m)-1]]
		if !ok {
			t.Fatalf("unit: ExecStart uses %s, which no Environment= sets", m)
		}
		return v
	})
	return kv
}

// TestSystemdUnit: the example unit's ExecStart starts the daemon (its
// flags are ones smbdirectd takes, with values it accepts), its socket is
// in the unit's RuntimeDirectory, and systemd-analyze finds nothing wrong
// with the unit.
func TestSystemdUnit(t *testing.T) {
	u := unit(t)
	argv := strings.Fields(u["ExecStart"])
	if len(argv) < 2 || filepath.Base(argv[0]) != "smbdirectd" {
		t.Fatalf("ExecStart %q does not run smbdirectd", u["ExecStart"])
	}
	args := argv[1:]
	// The socket as the unit has it, moved into a temporary directory.
	sock := ""
	for i, a := range args {
		if a == "--socket" && i+1 < len(args) {
			sock = args[i+1]
			args[i+1] = filepath.Join(t.TempDir(), filepath.Base(sock))
		}
	}
	if want := "/run/" + u["RuntimeDirectory"] + "/"; !strings.HasPrefix(sock, want) {
		t.Errorf("socket %q is not in the unit's RuntimeDirectory %s", sock, want)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var logs syncbuf.Buffer
	ready := make(chan *server.Server, 1)
	done := make(chan error, 1)
	go func() { done <- run(ctx, args, &logs, func(s *server.Server, _ string) { ready <- s }) }()
	select {
	case s := <-ready:
		st, err := os.Stat(s.Addr())
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o660 {
			t.Errorf("socket mode %v, want 0660 as the unit asks", st.Mode().Perm())
		}
	case err := <-done:
		t.Fatalf("smbdirectd %s: %v\n%s", strings.Join(args, " "), err, logs.String())
	case <-time.After(10 * time.Second):
		t.Fatal("the daemon did not start within 10 s")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	// systemd's own check, with ExecStart pointing at a binary that
	// exists here (it insists on that).
	text, err := os.ReadFile(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	copyPath := filepath.Join(t.TempDir(), "smbdirectd.service")
	if err := os.WriteFile(copyPath, []byte(strings.ReplaceAll(string(text), argv[0], self)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("systemd-analyze", "verify", copyPath).CombinedOutput()
	if err != nil || len(out) != 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}
