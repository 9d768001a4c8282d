//go:build linux

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

// leftovers lists the processes whose command line mentions dir (smbd
// and its children, smbclient) and what is left in dir.
func leftovers(t *testing.T, dir string) ([]string, []os.DirEntry) {
	t.Helper()
	var procs []string
	ents, _ := os.ReadDir("/proc")
	for _, d := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", d.Name(), "cmdline"))
		if err == nil && bytes.Contains(b, []byte(dir)) {
			if st, err := readStat(d.Name()); err == nil && st.state != "Z" {
				procs = append(procs, d.Name()+": "+string(bytes.ReplaceAll(b, []byte{0}, []byte{' '})))
			}
		}
	}
	files, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	return procs, files
}

// The unmodified smbclient against Samba's smbd over SMB Direct and TCP:
// every row in order with both figures and their ratio; the RDMA rows
// moved their data by RDMA (the client's daemon's counters), the inline
// ones none; afterwards no process of the run is left and its temporary
// directory is gone.
func TestBenchSambaJSON(t *testing.T) {
	t.Setenv("SMBDIRECT_PRELOAD", preloadLib(t))
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	smbdPath(t)
	smbclientPath(t)
	const size, files = 4 << 20, 16
	var out, errb bytes.Buffer
	if err := run(t.Context(), []string{"bench", "samba", "--json", "--size", "4MiB", "--files", "16", "--rounds", "2"}, &out, &errb); err != nil {
		t.Fatalf("%v\n%s", err, errb.String())
	}
	t.Logf("\n%s", out.String())
	want := []struct {
		test      string
		size      int
		unit      string
		rdmaBytes int64 // at least; 0: none
	}{
		{"samba_session", 0, "ms", 0},
		{"samba_put_rdma", size, "MiB/s", size},
		{"samba_get_rdma", size, "MiB/s", size},
		{"samba_put_inline", size, "MiB/s", 0},
		{"samba_get_inline", size, "MiB/s", 0},
		{"samba_small_put", 64 << 10, "ops/s", files * 64 << 10},
		{"samba_small_get", 64 << 10, "ops/s", files * 64 << 10},
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != len(want) {
		t.Fatalf("%d lines, want %d:\n%s", len(lines), len(want), out.String())
	}
	for i, l := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"test", "msg_size", "ours", "tcp", "ratio", "unit"} {
			if _, ok := m[k]; !ok {
				t.Fatalf("line %q lacks %s", l, k)
			}
		}
		var r benchResult
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatal(err)
		}
		w := want[i]
		if r.Test != w.test || r.MsgSize != w.size || r.Unit != w.unit || r.Ours <= 0 || r.TCP <= 0 || r.Ratio != r.Ours/r.TCP {
			t.Errorf("line %d: %q, want test %s, msg_size %d, unit %s, figures > 0", i, l, w.test, w.size, w.unit)
		}
		_, has := m["rdma_bytes"]
		if w.rdmaBytes == 0 && has || w.rdmaBytes > 0 && r.RDMABytes < w.rdmaBytes {
			t.Errorf("%s: %d bytes by RDMA, want at least %d (0: none)", r.Test, r.RDMABytes, w.rdmaBytes)
		}
	}
	if procs, files := leftovers(t, tmp); len(procs) > 0 || len(files) > 0 {
		t.Errorf("left running: %q; left in TMPDIR: %v", procs, files)
	}
}

// Interrupted (Ctrl-C cancels the context) in the middle of a run: the
// error is the cancellation, and everything is stopped and removed.
func TestBenchSambaInterrupt(t *testing.T) {
	t.Setenv("SMBDIRECT_PRELOAD", preloadLib(t))
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	for _, after := range []time.Duration{300 * time.Millisecond, 1500 * time.Millisecond} {
		ctx, cancel := context.WithTimeout(t.Context(), after)
		var out, errb bytes.Buffer
		start := time.Now()
		err := run(ctx, []string{"bench", "samba", "--json", "--size", "256MiB"}, &out, &errb)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("interrupted after %v: %v, want the context's error\n%s", after, err, errb.String())
		}
		// smbd gets 5 s after TERM before KILL.
		if el := time.Since(start); el > after+20*time.Second {
			t.Errorf("interrupted after %v: returned after %v", after, el)
		}
		if procs, files := leftovers(t, tmp); len(procs) > 0 || len(files) > 0 {
			t.Errorf("interrupted after %v: left running: %q; left in TMPDIR: %v", after, procs, files)
		}
	}
}

// Without smbclient (or samba), one line says which package to install,
// exit status 1.
func TestBenchSambaMissing(t *testing.T) {
	dir := t.TempDir()
	// pdbedit and smbclient are in /usr/bin, smbd in /usr/sbin (found
	// there without PATH): a PATH with pdbedit only lacks smbclient.
	pdbedit, err := lookTool("pdbedit")
	if err != nil {
		t.Fatal("no pdbedit: scripts/test.sh installs samba")
	}
	if err := os.Symlink(pdbedit, filepath.Join(dir, "pdbedit")); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir)
	var out, errb bytes.Buffer
	err = run(t.Context(), []string{"bench", "samba"}, &out, &errb)
	if !errors.Is(err, errMissingTool) || !strings.Contains(err.Error(), "no smbclient: install the smbclient package") {
		t.Fatalf("%v, want errMissingTool naming smbclient's package", err)
	}
	var e bytes.Buffer
	if code := exitCode(err, &e); code != 1 || strings.Count(e.String(), "\n") != 1 {
		t.Errorf("exit %d, stderr %q: want 1 and one line", code, e.String())
	}
	if out.Len() != 0 {
		t.Errorf("stdout: %q", out.String())
	}
}
