//go:build linux

package sambatest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/smbdirect/smbdirect/internal/sambaconf"
)

// Errors of Start and Stop, for errors.Is.
var (
	// ErrExited: smbd (or its wrapper) ended before it accepted connections.
	ErrExited = errors.New("sambatest: smbd exited before it was ready")
	// ErrNotReady: it did not accept connections within Options.ReadyTimeout.
	ErrNotReady = errors.New("sambatest: smbd did not become ready")
	// ErrLeftOver: processes of the server's group outlived SIGTERM (Stop killed them).
	ErrLeftOver = errors.New("sambatest: processes left after SIGTERM")
)

// Options configures a server. The zero value is a plain smbd on a free port.
type Options struct {
	// Wrapper is an argv prefix: the command run is Wrapper... smbd -F --no-process-group
	// --debug-stdout -s CONF (for example smbdirect exec --socket S --listen 127.0.0.1:0 --port P --).
	// "{port}" in an element is replaced by the port, "{dir}" by the server's directory.
	Wrapper []string
	// Env is added to this process's environment for the wrapper and smbd.
	Env []string
	// Port is smbd's TCP port on 127.0.0.1; 0 picks a free one.
	Port int
	// User and Password are the account in the server's own passdb. User must be a Unix user on this
	// machine; default the current user (tests run as root). Password default "sambatest".
	User, Password string
	// Global and Share are extra smb.conf lines for [global] and [share] ("name = value").
	Global, Share []string
	// LogLevel is smbd's "log level" (default 1).
	LogLevel int
	// Ready, when set, replaces the readiness check (a TCP connection to 127.0.0.1:Port accepted);
	// Start calls it until it returns nil, ctx ends or smbd exits.
	Ready func(ctx context.Context, s *Server) error
	// ReadyTimeout bounds the wait for readiness (default 60 s: smbd's start is slow on a busy machine).
	ReadyTimeout time.Duration
	// StopGrace is how long Stop waits after SIGTERM before it kills what is left (default 15 s).
	StopGrace time.Duration
}

// Server is a running throwaway smbd.
type Server struct {
	dir, conf, share, logPath string
	port                      int
	user, password            string
	grace                     time.Duration

	cmd    *exec.Cmd
	exited chan struct{} // closed when the group leader has exited (not yet reaped: it keeps the group id ours)

	stopOnce sync.Once
	stopErr  error
}

// Binary is the smbd this package runs.
const Binary = "/usr/sbin/smbd"

// Check reports whether Samba's smbd and pdbedit are installed.
func Check() error {
	if _, err := os.Stat(Binary); err != nil {
		return fmt.Errorf("sambatest: %w (install the samba package)", err)
	}
	if _, err := exec.LookPath("pdbedit"); err != nil {
		return fmt.Errorf("sambatest: %w (install the samba package)", err)
	}
	return nil
}

// StartT starts a server for t in t.TempDir, fails t if it cannot, and stops it when t ends, failing t if
// Stop finds processes left over. The server's log is logged when t failed.
func StartT(t testing.TB, opts Options) *Server {
	t.Helper()
	if err := Check(); err != nil {
		t.Fatal(err)
	}
	s, err := Start(t.Context(), t.TempDir(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Error(err)
		}
		if t.Failed() {
			t.Logf("smbd log (%s):\n%s", s.logPath, s.Log())
		}
	})
	return s
}

// Start writes smb.conf and the passdb under dir (which must exist and should be empty), starts smbd and
// waits until it accepts connections. ctx bounds only the start.
func Start(ctx context.Context, dir string, opts Options) (*Server, error) {
	if err := Check(); err != nil {
		return nil, err
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	s := &Server{dir: dir, port: opts.Port, user: opts.User, password: opts.Password,
		conf: filepath.Join(dir, "smb.conf"), share: filepath.Join(dir, "share"),
		logPath: filepath.Join(dir, "smbd.log"), grace: opts.StopGrace, exited: make(chan struct{})}
	if s.grace <= 0 {
		s.grace = 15 * time.Second
	}
	if s.user == "" {
		u, err := user.Current()
		if err != nil {
			return nil, err
		}
		s.user = u.Username
	}
	if s.password == "" {
		s.password = "sambatest"
	}
	if s.port == 0 {
		// Free now and bound by smbd a moment later; smbd exits ("No sockets available to bind to")
		// should another process take it in between, which Start reports as ErrExited with the log.
		if s.port, err = freePort(); err != nil {
			return nil, err
		}
	}
	if err := s.writeConf(ctx, opts); err != nil {
		return nil, fmt.Errorf("sambatest: %w", err)
	}

	logf, err := os.OpenFile(s.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close() // the children hold their own copies
	var argv []string
	for _, a := range opts.Wrapper {
		a = strings.ReplaceAll(a, "{port}", strconv.Itoa(s.port))
		argv = append(argv, strings.ReplaceAll(a, "{dir}", dir))
	}
	argv = append(argv, Binary, "-F", "--no-process-group", "--debug-stdout", "-s", s.conf)
	s.cmd = exec.Command(argv[0], argv[1:]...)
	s.cmd.Dir = dir
	s.cmd.Env = append(os.Environ(), opts.Env...)
	// An *os.File goes to the children as is: no copying goroutine, and the log survives smbd.
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	// Its own process group, which Stop signals. --no-process-group keeps smbd from making another.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("sambatest: %w", err)
	}
	go s.watch()

	rt := opts.ReadyTimeout
	if rt <= 0 {
		rt = 60 * time.Second
	}
	rctx, cancel := context.WithTimeout(ctx, rt)
	defer cancel()
	ready := opts.Ready
	if ready == nil {
		ready = dialReady
	}
	for {
		err := ready(rctx, s)
		if err == nil {
			return s, nil
		}
		select {
		case <-s.exited:
			s.Stop()
			return nil, fmt.Errorf("%w: %s\nlog:\n%s", ErrExited, strings.Join(argv, " "), s.Log())
		case <-rctx.Done():
			s.Stop()
			return nil, fmt.Errorf("%w within %v (%v): last check: %v\nlog:\n%s", ErrNotReady, rt, rctx.Err(), err, s.Log())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// dialReady is the default readiness check: smbd accepts a TCP connection on its port.
func dialReady(ctx context.Context, s *Server) error {
	d := net.Dialer{Timeout: time.Second}
	c, err := d.DialContext(ctx, "tcp", s.Addr())
	if err != nil {
		return err
	}
	return c.Close()
}

// watch waits for the group leader to exit without reaping it, so the process group id cannot be taken by
// another process while Stop may still signal it.
func (s *Server) watch() {
	var info unix.Siginfo
	for {
		err := unix.Waitid(unix.P_PID, s.cmd.Process.Pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if err != unix.EINTR {
			break
		}
	}
	close(s.exited)
}

func (s *Server) writeConf(ctx context.Context, opts Options) error {
	conf, err := sambaconf.Write(ctx, sambaconf.Server{Dir: s.dir, Port: s.port, User: s.user, Password: s.password,
		LogLevel: opts.LogLevel, Global: opts.Global, Share: opts.Share})
	s.conf = conf
	return err
}

// Dir is the server's directory; Conf its smb.conf; ShareDir the directory served as [share].
func (s *Server) Dir() string      { return s.dir }
func (s *Server) Conf() string     { return s.conf }
func (s *Server) ShareDir() string { return s.share }

// Port is smbd's TCP port on 127.0.0.1 (10.0.2.2:Port from the VM's guest); Addr is 127.0.0.1:Port.
func (s *Server) Port() int    { return s.port }
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// User and Password are the account in the server's passdb.
func (s *Server) User() string     { return s.user }
func (s *Server) Password() string { return s.password }

// LogPath is the file with smbd's (and the wrapper's) stdout and stderr; Log returns its contents.
func (s *Server) LogPath() string { return s.logPath }
func (s *Server) Log() string {
	b, err := os.ReadFile(s.logPath)
	if err != nil {
		return fmt.Sprintf("(reading %s: %v)", s.logPath, err)
	}
	return string(b)
}

// PGID is the server's process group (the wrapper's, or smbd's when there is none).
func (s *Server) PGID() int { return s.cmd.Process.Pid }

// MainPID is smbd's main process (from its pid file; the wrapper's child when there is a wrapper).
func (s *Server) MainPID() (int, error) {
	b, err := os.ReadFile(filepath.Join(s.dir, "pid", "smbd.pid"))
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// ConnPIDs returns the live smbd processes serving a client connection, sorted: the main smbd's children
// named smbd (its helpers are smbd-notifyd, smbd-cleanupd, ...). smbd forks one per connection.
func (s *Server) ConnPIDs() ([]int, error) {
	main, err := s.MainPID()
	if err != nil {
		return nil, err
	}
	procs, err := processes()
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, p := range procs {
		if p.ppid == main && p.comm == "smbd" && p.state != 'Z' {
			pids = append(pids, p.pid)
		}
	}
	slices.Sort(pids)
	return pids, nil
}

// Processes describes the live (not zombie) processes of the server's group, one "pid comm" each.
func (s *Server) Processes() ([]string, error) {
	procs, err := processes()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, p := range procs {
		if p.pgrp == s.PGID() && p.state != 'Z' {
			out = append(out, fmt.Sprintf("%d %s", p.pid, p.comm))
		}
	}
	return out, nil
}

// Stop sends SIGTERM to the server's process group, waits up to StopGrace for every process in it to end,
// kills what is left (and reports it as ErrLeftOver), and reaps the leader. Further calls return the
// first one's result.
func (s *Server) Stop() error {
	s.stopOnce.Do(func() { s.stopErr = s.stop() })
	return s.stopErr
}

func (s *Server) stop() error {
	pg := s.PGID()
	// The leader is not reaped before the end of this function, so pg is still this server's group.
	syscall.Kill(-pg, syscall.SIGTERM)
	left, err := s.waitEmpty(s.grace)
	if err == nil && len(left) > 0 {
		syscall.Kill(-pg, syscall.SIGKILL)
		if still, _ := s.waitEmpty(10 * time.Second); len(still) > 0 {
			err = fmt.Errorf("sambatest: processes survive SIGKILL: %v", still)
		} else {
			err = fmt.Errorf("%w (%v): %v", ErrLeftOver, s.grace, left)
		}
	}
	<-s.exited
	s.cmd.Wait()
	return err
}

// waitEmpty waits until the server's group has no live process, or d has passed; it returns what is left.
func (s *Server) waitEmpty(d time.Duration) ([]string, error) {
	end := time.Now().Add(d)
	for {
		left, err := s.Processes()
		if err != nil || len(left) == 0 || time.Now().After(end) {
			return left, err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type proc struct {
	pid, ppid, pgrp int
	state           byte
	comm            string
}

// processes reads every process's /proc/PID/stat. Processes that end meanwhile are left out.
func processes() ([]proc, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var out []proc
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		if p, ok := parseStat(pid, string(b)); ok {
			out = append(out, p)
		}
	}
	return out, nil
}

// parseStat reads "pid (comm) state ppid pgrp ..."; comm may hold spaces and parentheses, so it ends at
// the last ')'.
func parseStat(pid int, s string) (proc, bool) {
	i, j := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if i < 0 || j < i {
		return proc{}, false
	}
	f := strings.Fields(s[j+1:])
	if len(f) < 3 || len(f[0]) != 1 {
		return proc{}, false
	}
	ppid, err1 := strconv.Atoi(f[1])
	pgrp, err2 := strconv.Atoi(f[2])
	if err1 != nil || err2 != nil {
		return proc{}, false
	}
	return proc{pid: pid, ppid: ppid, pgrp: pgrp, state: f[0][0], comm: s[i+1 : j]}, true
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
