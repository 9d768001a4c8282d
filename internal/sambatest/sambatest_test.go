//go:build linux

package sambatest

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	gosmb2 "github.com/cloudsoda/go-smb2"
)

// session logs in to s's share over TCP with the unmodified go-smb2 client; the session ends when t does
// or when the returned func is called.
func session(t *testing.T, s *Server) (*gosmb2.Share, func()) {
	t.Helper()
	conn, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	d := &gosmb2.Dialer{Initiator: &gosmb2.NTLMInitiator{User: s.User(), Password: s.Password()}}
	sess, err := d.DialConn(t.Context(), conn, s.Addr())
	if err != nil {
		conn.Close()
		t.Fatalf("session: %v", err)
	}
	share, err := sess.Mount(`\\127.0.0.1\share`)
	if err != nil {
		sess.Logoff()
		conn.Close()
		t.Fatalf("mount: %v", err)
	}
	// Once: go-smb2 waits for ever for an answer on a connection that is gone.
	end := sync.OnceFunc(func() {
		share.Umount()
		sess.Logoff()
		conn.Close()
	})
	t.Cleanup(end)
	return share, end
}

// waitConnPIDs waits until the server has n connection processes and returns them.
func waitConnPIDs(t *testing.T, s *Server, n int) []int {
	t.Helper()
	end := time.Now().Add(30 * time.Second)
	for {
		pids, err := s.ConnPIDs()
		if err != nil {
			t.Fatal(err)
		}
		if len(pids) == n {
			return pids
		}
		if time.Now().After(end) {
			t.Fatalf("connection processes %v, want %d", pids, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestServer: files written through the share land in ShareDir and read back; each connection has its own
// smbd process; Stop ends them all and the port is closed afterwards.
func TestServer(t *testing.T) {
	s := StartT(t, Options{})
	conf, err := os.ReadFile(s.Conf())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"smb ports = " + itoa(s.Port()), "interfaces = 127.0.0.1", "bind interfaces only = yes",
		"passdb backend = tdbsam:" + filepath.Join(s.Dir(), "private/passdb.tdb"), "path = " + s.ShareDir()} {
		if !strings.Contains(string(conf), want) {
			t.Errorf("smb.conf lacks %q:\n%s", want, conf)
		}
	}
	waitConnPIDs(t, s, 0) // the readiness probe's connection is gone

	share, end1 := session(t, s)
	data := bytes.Repeat([]byte("0123456789abcdef"), 70_000) // 1.1 MB: several SMB2 WRITEs
	if err := share.WriteFile("a.bin", data, 0o644); err != nil {
		t.Fatal(err)
	}
	onDisk, err := os.ReadFile(filepath.Join(s.ShareDir(), "a.bin"))
	if err != nil || !bytes.Equal(onDisk, data) {
		t.Fatalf("share dir has %d bytes (%v), want %d", len(onDisk), err, len(data))
	}
	if err := os.WriteFile(filepath.Join(s.ShareDir(), "b.txt"), []byte("from the host\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := share.ReadFile("b.txt")
	if err != nil || string(got) != "from the host\n" {
		t.Fatalf("read b.txt: %q, %v", got, err)
	}
	one := waitConnPIDs(t, s, 1)

	_, end2 := session(t, s)
	two := waitConnPIDs(t, s, 2)
	if !slices.Contains(two, one[0]) {
		t.Fatalf("connection processes %v lost the first one %v", two, one)
	}
	main, err := s.MainPID()
	if err != nil || slices.Contains(two, main) {
		t.Fatalf("main pid %d (%v) among the connection processes %v", main, err, two)
	}
	end1()
	end2()
	waitConnPIDs(t, s, 0)

	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	if c, err := net.Dial("tcp", s.Addr()); err == nil {
		c.Close()
		t.Fatal("port still accepts after Stop")
	}
	if left, _ := s.Processes(); len(left) != 0 {
		t.Fatalf("left after Stop: %v", left)
	}
}

// TestWrapper: smbd runs under a wrapper that stays its parent (as smbdirect exec does), with the
// wrapper's environment and placeholders replaced; Stop ends the wrapper and smbd's children too.
func TestWrapper(t *testing.T) {
	s := StartT(t, Options{
		// The shell stays (the command is not its last), so smbd is its child.
		Wrapper: []string{"sh", "-c", `echo "wrapper port $1 dir $2"; shift 2; "$@"; exit $?`, "sh", "{port}", "{dir}"},
		Env:     []string{"SAMBATEST_WRAPPED=yes"},
	})
	main, err := s.MainPID()
	if err != nil {
		t.Fatal(err)
	}
	if main == s.PGID() {
		t.Fatalf("smbd %d is the group leader: the wrapper did not stay", main)
	}
	env, err := os.ReadFile("/proc/" + itoa(main) + "/environ")
	if err != nil || !bytes.Contains(env, []byte("\x00SAMBATEST_WRAPPED=yes\x00")) {
		t.Fatalf("smbd's environment lacks SAMBATEST_WRAPPED=yes (%v)", err)
	}
	if want := "wrapper port " + itoa(s.Port()) + " dir " + s.Dir(); !strings.Contains(s.Log(), want) {
		t.Fatalf("log lacks %q:\n%s", want, s.Log())
	}
	_, end := session(t, s)
	waitConnPIDs(t, s, 1)
	end()
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	if left, _ := s.Processes(); len(left) != 0 {
		t.Fatalf("left after Stop: %v", left)
	}
}

// TestStopReportsLeftOver: a process of the group that ignores SIGTERM is killed and reported.
func TestStopReportsLeftOver(t *testing.T) {
	s, err := Start(t.Context(), t.TempDir(), Options{
		// Ignored signals stay ignored across exec: sleep outlives the SIGTERM.
		Wrapper:   []string{"sh", "-c", `trap "" TERM; sleep 600 & "$@"; exit $?`, "sh"},
		StopGrace: 500 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	err = s.Stop()
	if !errors.Is(err, ErrLeftOver) || !strings.Contains(err.Error(), "sleep") {
		t.Fatalf("Stop = %v, want ErrLeftOver naming sleep", err)
	}
	if left, _ := s.Processes(); len(left) != 0 {
		t.Fatalf("left after Stop: %v", left)
	}
	if err2 := s.Stop(); err2 != err {
		t.Fatalf("second Stop = %v, want the first's %v", err2, err)
	}
}

// TestStartFailures: smbd (here its wrapper) ending early, and a readiness check that never passes.
func TestStartFailures(t *testing.T) {
	_, err := Start(t.Context(), t.TempDir(), Options{Wrapper: []string{"sh", "-c", "echo no smbd today; exit 3", "sh"}})
	if !errors.Is(err, ErrExited) || !strings.Contains(err.Error(), "no smbd today") {
		t.Fatalf("Start = %v, want ErrExited with the log", err)
	}
	never := errors.New("never ready")
	_, err = Start(t.Context(), t.TempDir(), Options{
		Ready:        func(context.Context, *Server) error { return never },
		ReadyTimeout: time.Second,
	})
	if !errors.Is(err, ErrNotReady) || !strings.Contains(err.Error(), "never ready") {
		t.Fatalf("Start = %v, want ErrNotReady with the last check's error", err)
	}
}

func TestParseStat(t *testing.T) {
	for _, c := range []struct {
		in   string
		want proc
		ok   bool
	}{
		{"12 (smbd) S 1 10 10 0 -1", proc{12, 1, 10, 'S', "smbd"}, true},
		{"13 (a) b (c)) Z 12 10 10", proc{13, 12, 10, 'Z', "a) b (c)"}, true},
		{"14 (smbd-notifyd) R 12 10", proc{14, 12, 10, 'R', "smbd-notifyd"}, true},
		{"15 (x) S 1", proc{}, false},
		{"16 x S 1 2", proc{}, false},
		{"17 (x) S one 2", proc{}, false},
	} {
		pid := 0
		for _, ch := range c.in {
			if ch == ' ' {
				break
			}
			pid = pid*10 + int(ch-'0')
		}
		got, ok := parseStat(pid, c.in)
		if ok != c.ok || got != c.want {
			t.Errorf("parseStat(%q) = %+v, %v; want %+v, %v", c.in, got, ok, c.want, c.ok)
		}
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
