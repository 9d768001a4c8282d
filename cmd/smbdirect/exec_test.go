//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/smbdirect/smbdirect/clib"
	"github.com/smbdirect/smbdirect/internal/syncbuf"
)

// asMain: the test binary, run with this variable set, is smbdirect
// itself (the exec tests need a process of their own).
const asMain = "SMBDIRECT_TEST_AS_MAIN"

var testLibDir string

func TestMain(m *testing.M) {
	if os.Getenv(asMain) == "1" {
		os.Unsetenv(asMain) // not for PROGRAM
		main()
		return
	}
	code := m.Run()
	if testLibDir != "" {
		os.RemoveAll(testLibDir)
	}
	os.Exit(code)
}

var (
	libOnce sync.Once
	testLib string
	libErr  error
)

// preloadLib builds the preload library once per test binary.
func preloadLib(t *testing.T) string {
	t.Helper()
	libOnce.Do(func() {
		if testLibDir, libErr = os.MkdirTemp("", "smbdirect-exec-test-"); libErr == nil {
			testLib, _, libErr = clib.BuildPreload(testLibDir)
		}
	})
	if libErr != nil {
		t.Fatal(libErr)
	}
	return testLib
}

// smbdirectExec is "smbdirect exec ARGS" in a process of its own group
// (so that everything it starts can be found and killed).
type smbdirectExec struct {
	cmd    *exec.Cmd
	stdout chan string
	stderr syncbuf.Buffer
	done   chan struct{}
	err    error
}

func startExec(t *testing.T, env []string, args ...string) *smbdirectExec {
	t.Helper()
	e := &smbdirectExec{cmd: exec.Command(os.Args[0], append([]string{"exec"}, args...)...),
		stdout: make(chan string, 256), done: make(chan struct{})}
	e.cmd.Env = append(append(os.Environ(), asMain+"=1", "SMBDIRECT_PRELOAD="+preloadLib(t)), env...)
	e.cmd.Stderr = &e.stderr
	e.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := e.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := e.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			select {
			case e.stdout <- sc.Text():
			default: // nobody reads (smbd's debug output)
			}
		}
		close(e.stdout)
		e.err = e.cmd.Wait()
		close(e.done)
	}()
	t.Cleanup(func() {
		// The whole group: smbdirect, PROGRAM and whatever it forked.
		syscall.Kill(-e.cmd.Process.Pid, syscall.SIGKILL)
		<-e.done
		waitGroupGone(t, e.cmd.Process.Pid)
	})
	return e
}

// status waits for the exit and returns the exit status.
func (e *smbdirectExec) status(t *testing.T) int {
	t.Helper()
	select {
	case <-e.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("smbdirect exec did not exit\nstderr:\n%s", e.stderr.String())
	}
	var ee *exec.ExitError
	if e.err != nil && !errors.As(e.err, &ee) {
		t.Fatal(e.err)
	}
	return e.cmd.ProcessState.ExitCode()
}

func (e *smbdirectExec) line(t *testing.T) string {
	t.Helper()
	select {
	case l, ok := <-e.stdout:
		if ok {
			return l
		}
	case <-time.After(30 * time.Second):
	}
	t.Fatalf("no line on stdout\nstderr:\n%s", e.stderr.String())
	return ""
}

// waitGroupGone waits until no process of group pgid is left (zombies
// not yet reaped by init count as gone).
func waitGroupGone(t *testing.T, pgid int) {
	t.Helper()
	var left []string
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		left = nil
		ents, _ := os.ReadDir("/proc")
		for _, d := range ents {
			st, err := readStat(d.Name())
			if err == nil && st.pgrp == pgid && st.state != "Z" {
				left = append(left, d.Name()+" "+st.comm)
			}
		}
		if len(left) == 0 {
			return
		}
	}
	t.Errorf("processes of group %d left: %v", pgid, left)
}

type procStat struct {
	comm, state     string
	ppid, pgrp, pid int
}

// readStat parses /proc/PID/stat.
func readStat(pid string) (procStat, error) {
	b, err := os.ReadFile(filepath.Join("/proc", pid, "stat"))
	if err != nil {
		return procStat{}, err
	}
	s := string(b)
	i, j := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if i < 0 || j < i {
		return procStat{}, errors.New("bad stat")
	}
	var st procStat
	st.comm = s[i+1 : j]
	f := strings.Fields(s[j+1:])
	if len(f) < 3 {
		return procStat{}, errors.New("bad stat")
	}
	st.state = f[0]
	st.ppid, _ = strconv.Atoi(f[1])
	st.pgrp, _ = strconv.Atoi(f[2])
	st.pid, _ = strconv.Atoi(pid)
	return st, nil
}

// Signals reach PROGRAM; killed by one, smbdirect exits 128+N.
func TestExecSignals(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "d.sock")
	for _, c := range []struct {
		sig    syscall.Signal
		script string
		want   int
	}{
		{syscall.SIGUSR1, `trap 'exit 42' USR1; echo ready; while :; do sleep 0.02; done`, 42},
		{syscall.SIGUSR2, `trap 'exit 43' USR2; echo ready; while :; do sleep 0.02; done`, 43},
		{syscall.SIGHUP, `trap 'exit 44' HUP; echo ready; while :; do sleep 0.02; done`, 44},
		{syscall.SIGINT, `trap 'exit 45' INT; echo ready; while :; do sleep 0.02; done`, 45},
		{syscall.SIGQUIT, `trap 'exit 46' QUIT; echo ready; while :; do sleep 0.02; done`, 46},
		{syscall.SIGTERM, `echo ready; exec sleep 60`, 128 + 15},
		{syscall.SIGINT, `echo ready; exec sleep 60`, 128 + 2},
	} {
		e := startExec(t, nil, "--socket", sock, "--", "sh", "-c", c.script)
		if l := e.line(t); l != "ready" {
			t.Fatal(l)
		}
		syscall.Kill(e.cmd.Process.Pid, c.sig)
		if st := e.status(t); st != c.want {
			t.Errorf("%v: exit %d, want %d\nstderr:\n%s", c.sig, st, c.want, e.stderr.String())
		}
	}
}

// Usage errors exit 2 with one line; a PROGRAM that cannot be run 127;
// a bad SMBDIRECT_PRELOAD 1.
func TestExecErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"exec"}, "smbdirect: exec: give the PROGRAM to run"},
		{[]string{"exec", "--"}, "smbdirect: exec: give the PROGRAM to run"},
		{[]string{"exec", "--port", "0", "--", "true"}, "smbdirect: exec: --port 0: want a TCP port (1-65535)"},
		{[]string{"exec", "--port", "65536", "--", "true"}, "smbdirect: exec: --port 65536: want a TCP port (1-65535)"},
		{[]string{"exec", "--listen", "5445", "--", "true"}, `smbdirect: exec: --listen "5445": want host:port`},
		{[]string{"exec", "--listen", ":x", "--", "true"}, `smbdirect: exec: --listen ":x": bad port`},
		{[]string{"exec", "--socket", "", "--", "true"}, "smbdirect: exec: --socket: want a path"},
		{[]string{"exec", "--socket", "/" + strings.Repeat("s", 120), "--", "true"}, "smbdirect: exec: --socket: the path is 121 bytes"},
		{[]string{"exec", "--nosuch", "--", "true"}, "smbdirect: exec: flag provided but not defined: -nosuch"},
	} {
		var out, errb bytes.Buffer
		code := exitCode(run(context.Background(), c.args, &out, &errb), &errb)
		if code != 2 || strings.Count(errb.String(), "\n") != 1 || !strings.HasPrefix(errb.String(), c.want) || out.Len() != 0 {
			t.Errorf("%q: exit %d, stdout %q, stderr %q", c.args, code, out.String(), errb.String())
		}
	}
	sock := filepath.Join(t.TempDir(), "d.sock")
	e := startExec(t, nil, "--socket", sock, "--", "/nonexistent/program")
	if st := e.status(t); st != 127 || !strings.Contains(e.stderr.String(), "smbdirect: exec: ") {
		t.Errorf("missing program: exit %d\n%s", st, e.stderr.String())
	}
	e = startExec(t, []string{"SMBDIRECT_PRELOAD=/nonexistent/lib.so"}, "--socket", sock, "--", "true")
	if st := e.status(t); st != 1 || e.stderr.String() != "smbdirect: SMBDIRECT_PRELOAD: stat /nonexistent/lib.so: no such file or directory\n" {
		t.Errorf("bad SMBDIRECT_PRELOAD: exit %d, stderr %q", st, e.stderr.String())
	}
	var out bytes.Buffer
	if err := run(context.Background(), []string{"exec", "--help"}, &out, io.Discard); err != nil ||
		!strings.Contains(out.String(), "smbdirect exec -- smbd -F --no-process-group -s ") || !strings.Contains(out.String(), "SMBDIRECT_PRELOAD") {
		t.Errorf("help: %v\n%s", err, out.String())
	}
}

// Where the library comes from: next to the binary, in ../lib/smbdirect,
// else built once into the cache directory (one line says so).
func TestFindPreload(t *testing.T) {
	t.Setenv("SMBDIRECT_PRELOAD", "")
	root := t.TempDir()
	bin := filepath.Join(root, "bin", "smbdirect")
	os.MkdirAll(filepath.Dir(bin), 0o755)
	os.MkdirAll(filepath.Join(root, "lib", "smbdirect"), 0o755)
	t.Setenv("XDG_CACHE_HOME", filepath.Join(root, "cache"))
	var msg bytes.Buffer
	p, err := findPreload(bin, &msg)
	want := filepath.Join(root, "cache", "smbdirect", clib.Hash(), clib.PreloadName)
	if err != nil || p != want || msg.String() != "smbdirect: built "+want+" (none installed)\n" {
		t.Fatalf("build: %q, %v, %q", p, err, msg.String())
	}
	msg.Reset()
	if p, err := findPreload(bin, &msg); err != nil || p != want || msg.Len() != 0 {
		t.Errorf("cached: %q, %v, %q", p, err, msg.String())
	}
	for _, dir := range []string{filepath.Join(root, "lib", "smbdirect"), filepath.Join(root, "bin")} {
		lib := filepath.Join(dir, clib.PreloadName)
		if err := os.WriteFile(lib, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if p, err := findPreload(bin, &msg); err != nil || p != lib || msg.Len() != 0 {
			t.Errorf("installed in %s: %q, %v, %q", dir, p, err, msg.String())
		}
	}
	t.Setenv("SMBDIRECT_PRELOAD", want)
	if p, err := findPreload(bin, &msg); err != nil || p != want {
		t.Errorf("SMBDIRECT_PRELOAD: %q, %v", p, err)
	}
}
