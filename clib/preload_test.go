//go:build linux

package clib_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
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
	"github.com/smbdirect/smbdirect/internal/ctl"
	"github.com/smbdirect/smbdirect/internal/syncbuf"
	"github.com/smbdirect/smbdirect/iwarp"
	"github.com/smbdirect/smbdirect/smbd"
	"github.com/smbdirect/smbdirect/smbdirectd/server"
)

var (
	buildOnce sync.Once
	preload   string
	testProg  string
	buildErr  error
)

// built compiles the preload library (through clib.BuildPreload, as
// smbdirect exec does) and the C test program once per test binary, into
// buildDir.
func built(t *testing.T) (string, string) {
	t.Helper()
	buildOnce.Do(func() {
		var fresh bool
		preload, fresh, buildErr = clib.BuildPreload(buildDir)
		if buildErr == nil && !fresh && !fuzzWorker {
			buildErr = fmt.Errorf("BuildPreload into an empty directory did not build")
		}
		if buildErr != nil {
			return
		}
		testProg, buildErr = gcc(buildDir, "test_preload", "-O2", "test_preload.c")
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return preload, testProg
}

// gcc compiles srcs into dir/name with warnings as errors. Fuzz workers
// build side by side into one directory: the output is renamed into place.
func gcc(dir, name string, args ...string) (string, error) {
	f, err := os.CreateTemp(dir, name+".tmp-")
	if err != nil {
		return "", err
	}
	f.Close()
	out, err := exec.Command("gcc", append([]string{"-std=c11", "-Wall", "-Wextra", "-Werror", "-o", f.Name()}, args...)...).CombinedOutput()
	if err != nil {
		os.Remove(f.Name())
		return "", fmt.Errorf("gcc: %v\n%s", err, out)
	}
	path := filepath.Join(dir, name)
	return path, os.Rename(f.Name(), path)
}

// buildDir holds what the tests build. The process that made it removes
// it at the end; fuzz workers, which the coordinator kills, share the
// coordinator's through the environment.
var (
	buildDir   string
	fuzzWorker bool
)

const buildDirEnv = "SMBDIRECT_CLIB_TEST_DIR"

func TestMain(m *testing.M) {
	if buildDir = os.Getenv(buildDirEnv); buildDir != "" {
		fuzzWorker = true
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "preload-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	buildDir = dir
	os.Setenv(buildDirEnv, dir)
	code := m.Run()
	if parser.cmd != nil && parser.cmd.Process != nil {
		parser.in.Close()
		if err := parser.cmd.Wait(); err != nil && code == 0 {
			fmt.Fprintln(os.Stderr, "fuzz_preload:", err)
			code = 1
		}
	}
	os.RemoveAll(buildDir)
	os.Exit(code)
}

func smbdConfig() *smbd.Config {
	return &smbd.Config{Provider: iwarp.New(iwarp.Config{FirstSendDelay: -1})}
}

func startDaemon(t *testing.T) *server.Server {
	t.Helper()
	s, err := server.Listen(server.Config{Socket: filepath.Join(t.TempDir(), "d.sock"), SMBD: smbdConfig()})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(context.Background()) }()
	t.Cleanup(func() {
		s.Close()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return s
}

// freePort is a TCP port on 127.0.0.1 below the ephemeral range, so that
// no port-0 listener of a concurrent test is handed it meanwhile.
func freePort(t *testing.T) int {
	t.Helper()
	for range 100 {
		p := 20000 + rand.IntN(10000)
		if l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p)); err == nil {
			l.Close()
			return p
		}
	}
	t.Fatal("no free port")
	return 0
}

// prog is the C test program running under the preload.
type prog struct {
	cmd    *exec.Cmd
	lines  chan string // stdout
	stderr syncbuf.Buffer
	out    syncbuf.Buffer // stdout, for failure messages
	done   chan struct{}  // closed when it has exited; err is then set
	err    error
}

// wait waits for the program to exit and returns Wait's error.
func (p *prog) wait() error {
	<-p.done
	return p.err
}

func startProg(t *testing.T, env []string, args ...string) *prog {
	t.Helper()
	lib, bin := built(t)
	p := &prog{cmd: exec.Command(bin, args...), lines: make(chan string, 64), done: make(chan struct{})}
	p.cmd.Env = append(append(os.Environ(), "LD_PRELOAD="+lib), env...)
	p.cmd.Stderr = &p.stderr
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			p.out.Write([]byte(sc.Text() + "\n"))
			p.lines <- sc.Text()
		}
		close(p.lines)
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		p.wait()
	})
	return p
}

// next returns the program's next stdout line.
func (p *prog) next(t *testing.T) string {
	t.Helper()
	select {
	case l, ok := <-p.lines:
		if !ok {
			t.Fatalf("the C program ended: %v\nstdout:\n%s\nstderr:\n%s", p.wait(), p.out.String(), p.stderr.String())
		}
		if strings.HasPrefix(l, "FAIL") {
			t.Fatalf("C program: %s\nstdout:\n%s\nstderr:\n%s", l, p.out.String(), p.stderr.String())
		}
		return l
	case <-time.After(30 * time.Second):
		t.Fatalf("no line from the C program\nstdout:\n%s\nstderr:\n%s", p.out.String(), p.stderr.String())
	}
	return ""
}

func (p *prog) expect(t *testing.T, want string) {
	t.Helper()
	if l := p.next(t); l != want {
		t.Fatalf("C program said %q, want %q\nstdout:\n%s\nstderr:\n%s", l, want, p.out.String(), p.stderr.String())
	}
}

// smbDirectAddr waits for the preload's line saying where the port went
// and returns the address (of the last such line).
func (p *prog) smbDirectAddr(t *testing.T, port int) string {
	t.Helper()
	prefix := fmt.Sprintf("smbdirect-preload: pid %d: TCP port %d is SMB Direct on ", p.cmd.Process.Pid, port)
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		addr := ""
		for _, l := range strings.Split(p.stderr.String(), "\n") {
			if a, ok := strings.CutPrefix(l, prefix); ok {
				addr = a
			}
		}
		if addr != "" {
			return addr
		}
	}
	t.Fatalf("no line %q on stderr:\n%s", prefix, p.stderr.String())
	return ""
}

func dial(t *testing.T, addr string) *smbd.Conn {
	t.Helper()
	c, err := smbd.Dial(t.Context(), addr, smbdConfig())
	if err != nil {
		t.Fatalf("SMB Direct to %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(30 * time.Second))
	return c
}

func readMsg(t *testing.T, c *smbd.Conn) (string, error) {
	t.Helper()
	buf := make([]byte, 1<<16)
	n, err := c.ReadMessage(buf)
	return string(buf[:n]), err
}

// The preload against a real daemon and Go SMB Direct peers: the
// listening fd wakes epoll, accept and accept4 (blocking, non-blocking,
// flags), addresses, TCP options and TCP_INFO, FIONREAD/SIOCOUTQ, a
// forked child serving the accepted fd until the peer hangs up, and a
// plain TCP listener on another port left alone. With the listen address
// a wildcard, getsockname gives the address the peer reached.
func TestPreload(t *testing.T) {
	for _, listen := range []string{"127.0.0.1:0", ":0"} {
		t.Run(listen, func(t *testing.T) {
			s := startDaemon(t)
			port := freePort(t)
			p := startProg(t, []string{"SMBDIRECT_SOCKET=" + s.Addr(), "SMBDIRECT_LISTEN=" + listen,
				fmt.Sprintf("SMBDIRECT_PORT=%d", port), "SMBDIRECT_CHANNEL=0"}, "main", fmt.Sprint(port))
			p.expect(t, "DIAL 1")
			addr := p.smbDirectAddr(t, port)
			_, aport, _ := net.SplitHostPort(addr)
			target := net.JoinHostPort("127.0.0.1", aport)
			checkAddr := func(n int, c *smbd.Conn) {
				t.Helper()
				want := fmt.Sprintf("ADDR %d peer=%s local=%s", n, c.LocalAddr(), target)
				if l := p.next(t); l != want {
					t.Fatalf("C program said %q, want %q", l, want)
				}
			}

			c1 := dial(t, target)
			checkAddr(1, c1)
			if err := c1.WriteMessage([]byte("ping1")); err != nil {
				t.Fatal(err)
			}
			if m, err := readMsg(t, c1); err != nil || m != "pong1 from the child" {
				t.Fatalf("reply %q, %v\n%s", m, err, p.out.String())
			}
			c1.Close() // the child reads EOF and exits 0

			p.expect(t, "DIAL 2")
			c2 := dial(t, target)
			checkAddr(2, c2)

			p.expect(t, "DIAL 3")
			c3 := dial(t, target)
			checkAddr(3, c3)
			if m, err := readMsg(t, c3); err != nil || m != "hello 3" {
				t.Fatalf("from the C program: %q, %v", m, err)
			}
			// Its closes hang up connections 2 and 3.
			for i, c := range []*smbd.Conn{c2, c3} {
				if m, err := readMsg(t, c); err == nil {
					t.Fatalf("connection %d: %q after the program closed it", i+2, m)
				}
			}
			p.expect(t, "C_PRELOAD_OK")
			if err := p.wait(); err != nil {
				t.Fatalf("C program: %v\n%s", err, p.stderr.String())
			}
			// Its one line on stderr, nothing else.
			if n := strings.Count(p.stderr.String(), "\n"); n != 1 {
				t.Errorf("stderr has %d lines:\n%s", n, p.stderr.String())
			}
		})
	}
}

// An AF_INET6 listener reports an IPv4 peer and our side IPv4-mapped,
// with the listen address a wildcard or not.
func TestPreloadIPv6Listener(t *testing.T) {
	for _, listen := range []string{"127.0.0.1:0", ":0"} {
		s := startDaemon(t)
		port := freePort(t)
		p := startProg(t, []string{"SMBDIRECT_SOCKET=" + s.Addr(), "SMBDIRECT_LISTEN=" + listen,
			fmt.Sprintf("SMBDIRECT_PORT=%d", port), "SMBDIRECT_CHANNEL=0"}, "v6", fmt.Sprint(port))
		p.expect(t, "DIAL 1")
		_, aport, _ := net.SplitHostPort(p.smbDirectAddr(t, port))
		c := dial(t, net.JoinHostPort("127.0.0.1", aport))
		_, cport, _ := net.SplitHostPort(c.LocalAddr().String())
		p.expect(t, fmt.Sprintf("ADDR 1 peer=[::ffff:127.0.0.1]:%s local=[::ffff:127.0.0.1]:%s", cport, aport))
		p.expect(t, "C_PRELOAD_OK")
		if err := p.wait(); err != nil {
			t.Fatal(err)
		}
	}
}

// A program that closes its listener and listens again (smbd on a
// reload) gets a fresh session.
func TestPreloadRelisten(t *testing.T) {
	s := startDaemon(t)
	port := freePort(t)
	p := startProg(t, []string{"SMBDIRECT_SOCKET=" + s.Addr(), "SMBDIRECT_LISTEN=127.0.0.1:0",
		fmt.Sprintf("SMBDIRECT_PORT=%d", port), "SMBDIRECT_CHANNEL=0"}, "relisten", fmt.Sprint(port))
	p.expect(t, "DIAL 1")
	// stderr arrives through its own pipe, maybe after stdout's line.
	for deadline := time.Now().Add(10 * time.Second); strings.Count(p.stderr.String(), "is SMB Direct on") != 2; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("want 2 takeovers:\n%s", p.stderr.String())
		}
	}
	c := dial(t, p.smbDirectAddr(t, port))
	if m, err := readMsg(t, c); err != nil || m != "relistened" {
		t.Fatalf("%q, %v", m, err)
	}
	p.expect(t, "C_PRELOAD_OK")
	if err := p.wait(); err != nil {
		t.Fatal(err)
	}
}

// When the daemon goes away, the listener says so once and goes quiet.
func TestPreloadDaemonGone(t *testing.T) {
	s := startDaemon(t)
	port := freePort(t)
	p := startProg(t, []string{"SMBDIRECT_SOCKET=" + s.Addr(), "SMBDIRECT_LISTEN=127.0.0.1:0",
		fmt.Sprintf("SMBDIRECT_PORT=%d", port), "SMBDIRECT_CHANNEL=0"}, "gone", fmt.Sprint(port))
	p.expect(t, "STOP 1")
	s.Close()
	p.expect(t, "C_PRELOAD_OK")
	if err := p.wait(); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(p.stderr.String(), "smbdirect-preload: the smbdirectd session ended"); n != 1 {
		t.Errorf("stderr:\n%s", p.stderr.String())
	}
}

// Without a daemon, listen fails with the connect's errno and one line
// on stderr says why.
func TestPreloadNoDaemon(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "none.sock")
	port := freePort(t)
	p := startProg(t, []string{"SMBDIRECT_SOCKET=" + sock, fmt.Sprintf("SMBDIRECT_PORT=%d", port)}, "listen", fmt.Sprint(port))
	p.expect(t, fmt.Sprintf("LISTEN_FAIL %d", syscall.ENOENT))
	p.wait()
	want := fmt.Sprintf("smbdirect-preload: cannot reach smbdirectd at %s: %s\n", sock, syscall.ENOENT.Error())
	if got := p.stderr.String(); !strings.EqualFold(got, want) {
		t.Errorf("stderr %q, want %q", got, want)
	}
	// Bad settings fail every TCP listen the same way.
	for _, env := range []string{"SMBDIRECT_CHANNEL=yes", "SMBDIRECT_PORT=70000"} {
		p := startProg(t, []string{"SMBDIRECT_SOCKET=" + sock, fmt.Sprintf("SMBDIRECT_PORT=%d", port), env}, "listen", fmt.Sprint(port))
		p.expect(t, fmt.Sprintf("LISTEN_FAIL %d", syscall.EINVAL))
		p.wait()
		if !strings.HasPrefix(p.stderr.String(), "smbdirect-preload: "+env+": ") {
			t.Errorf("%s: stderr %q", env, p.stderr.String())
		}
	}
}

// Other ports than SMBDIRECT_PORT pass through: without a daemon, a
// listener on another port listens.
func TestPreloadOtherPort(t *testing.T) {
	port := freePort(t)
	p := startProg(t, []string{"SMBDIRECT_SOCKET=" + filepath.Join(t.TempDir(), "none.sock"),
		fmt.Sprintf("SMBDIRECT_PORT=%d", port+1)}, "listen", fmt.Sprint(port))
	p.expect(t, "LISTEN_OK")
	p.wait()
	if s := p.stderr.String(); s != "" {
		t.Errorf("stderr %q", s)
	}
}

// The Listen the preload sends: SMBDIRECT_CHANNEL=1 (the default) adds
// the u32 flags SDD_LISTEN_SERVER_CHANNEL after the address, 0 sends the
// address alone (what daemons before the flags understand). A fake daemon
// checks the exact bytes.
func TestPreloadListenFlags(t *testing.T) {
	for _, tc := range []struct {
		env  []string
		tail []byte
	}{
		{nil, []byte{1, 0, 0, 0}},
		{[]string{"SMBDIRECT_CHANNEL=1"}, []byte{1, 0, 0, 0}},
		{[]string{"SMBDIRECT_CHANNEL=0"}, nil},
	} {
		sock, got := fakeDaemon(t, func(id uint64) []byte {
			m := ctl.AppendHeader(nil, ctl.TypeListening, id)
			m = binary.LittleEndian.AppendUint64(m, 7)
			return ctl.Finish(ctl.AppendBytes16(m, []byte("127.0.0.1:5445")), 0)
		})
		port := freePort(t)
		p := startProg(t, append([]string{"SMBDIRECT_SOCKET=" + sock, "SMBDIRECT_LISTEN=127.0.0.1:5445",
			fmt.Sprintf("SMBDIRECT_PORT=%d", port)}, tc.env...), "listen", fmt.Sprint(port))
		p.expect(t, "LISTEN_OK")
		p.wait()
		msg := <-got
		want := ctl.AppendHeader(nil, ctl.TypeListen, 2)
		want = append(ctl.AppendBytes16(want, []byte("127.0.0.1:5445")), tc.tail...)
		want = ctl.Finish(want, 0)
		if !bytes.Equal(msg, want) {
			t.Errorf("%v: Listen\n% x\nwant\n% x", tc.env, msg, want)
		}
	}
}

// echoPeer is an SMB Direct listener that answers each message m with
// "echo: m"; conns counts the connections it has seen end.
func echoPeer(t *testing.T) (addr string, ended func() int) {
	t.Helper()
	l, err := smbd.Listen(t.Context(), "127.0.0.1:0", smbdConfig())
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	n := 0
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.AcceptSMBD(context.Background())
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				buf := make([]byte, 1<<16)
				for {
					k, err := c.ReadMessage(buf)
					if err != nil {
						mu.Lock()
						n++
						mu.Unlock()
						return
					}
					if c.WriteMessage(append([]byte("echo: "), buf[:k]...)) != nil {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		wg.Wait()
	})
	return l.Addr().String(), func() int {
		mu.Lock()
		defer mu.Unlock()
		return n
	}
}

// tcpEcho is a TCP echo server on 127.0.0.1; it returns the port and
// the peers' ports, as they connect.
func tcpEcho(t *testing.T) (int, chan int) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	peers := make(chan int, 16)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			select {
			case peers <- c.RemoteAddr().(*net.TCPAddr).Port:
			default:
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		wg.Wait()
	})
	return l.Addr().(*net.TCPAddr).Port, peers
}

// Outgoing connections (SMBDIRECT_DIAL): blocking and non-blocking
// connect (epoll for writability, SO_ERROR), close-on-exec and
// O_NONBLOCK kept, the asked address from getpeername, our side of its
// family, EISCONN, an AF_INET6 socket to the IPv4-mapped address, a
// forked child on a dup; a refused SMB Direct dial fails connect with
// ECONNREFUSED (one line on stderr each); other addresses are TCP.
// connect returns 0 at once also on a non-blocking socket ("NB 0").
func TestPreloadConnect(t *testing.T) {
	s := startDaemon(t)
	peer, ended := echoPeer(t)
	port := freePort(t)
	refused := fmt.Sprintf("127.0.0.1:%d", freePort(t)) // nothing listens there
	tport, tpeers := tcpEcho(t)
	dialEnv := fmt.Sprintf("SMBDIRECT_DIAL=127.0.0.1:%d=%s,127.0.0.2:%d=%s", port, peer, port, refused)
	p := startProg(t, []string{"SMBDIRECT_SOCKET=" + s.Addr(), dialEnv}, "connect", fmt.Sprint(port), fmt.Sprint(tport))
	p.expect(t, "NB 0")
	p.expect(t, "CLOSED 3")
	// The program closed its three connections: the peer sees them end.
	for deadline := time.Now().Add(20 * time.Second); ended() != 3; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d of 3 connections ended at the peer", ended())
		}
	}
	if l := p.next(t); !strings.EqualFold(l, "NB "+syscall.ECONNREFUSED.Error()) {
		t.Fatalf("non-blocking connect to a refusing peer: %q", l)
	}
	select {
	case tp := <-tpeers:
		p.expect(t, fmt.Sprintf("TCP %d", tp))
	case <-time.After(20 * time.Second):
		t.Fatal("no TCP connection")
	}
	p.expect(t, "C_CONNECT_OK")
	if err := p.wait(); err != nil {
		t.Fatalf("C program: %v\n%s", err, p.stderr.String())
	}
	lines := strings.Split(strings.TrimSuffix(p.stderr.String(), "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("stderr has %d lines, want 2 (the refused dials):\n%s", len(lines), p.stderr.String())
	}
	for _, l := range lines {
		if !strings.HasPrefix(l, "smbdirect-preload: SMB Direct to "+refused+": ") {
			t.Errorf("stderr line %q", l)
		}
	}
	if st := s.Stats(); st.ConnsTotal != 3 {
		t.Errorf("the daemon made %d connections, want 3", st.ConnsTotal)
	}
}

// Connect's failures: no daemon (ECONNREFUSED and one line why), a
// malformed SMBDIRECT_DIAL (EINVAL and one line), an address not in the
// list (the kernel's own refusal, nothing on stderr).
func TestPreloadConnectFail(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "none.sock")
	port := freePort(t)
	for _, tc := range []struct {
		dial, want, stderr string
	}{
		{fmt.Sprintf("127.0.0.1:%d=127.0.0.1:5445", port), fmt.Sprintf("CONNECT_FAIL %d", syscall.ECONNREFUSED),
			fmt.Sprintf("smbdirect-preload: cannot reach smbdirectd at %s to dial 127.0.0.1:5445: %s\n", sock, syscall.ENOENT.Error())},
		{"127.0.0.1=127.0.0.1:5445", fmt.Sprintf("CONNECT_FAIL %d", syscall.EINVAL),
			"smbdirect-preload: SMBDIRECT_DIAL=127.0.0.1=127.0.0.1:5445: want IP:PORT=HOST:PORT[,...] ([v6]:port for IPv6)\n"},
		{fmt.Sprintf("127.0.0.1:%d=127.0.0.1:5445", port+1), fmt.Sprintf("CONNECT_FAIL %d", syscall.ECONNREFUSED), ""},
	} {
		p := startProg(t, []string{"SMBDIRECT_SOCKET=" + sock, "SMBDIRECT_DIAL=" + tc.dial}, "connect1", fmt.Sprint(port))
		p.expect(t, tc.want)
		p.wait()
		if got := p.stderr.String(); !strings.EqualFold(got, tc.stderr) {
			t.Errorf("%s: stderr %q, want %q", tc.dial, got, tc.stderr)
		}
	}
}

// The Dial the preload sends for a connect: SMBDIRECT_CHANNEL=1 (the
// default) adds the u32 flags SDD_DIAL_CLIENT_CHANNEL after the address,
// 0 sends the address alone. A fake daemon checks the exact bytes and
// refuses; connect fails with ECONNREFUSED.
func TestPreloadDialFlags(t *testing.T) {
	for _, tc := range []struct {
		env   []string
		flags uint32
	}{
		{nil, ctl.DialClientChannel},
		{[]string{"SMBDIRECT_CHANNEL=1"}, ctl.DialClientChannel},
		{[]string{"SMBDIRECT_CHANNEL=0"}, 0},
	} {
		sock, got := fakeDaemon(t, func(id uint64) []byte {
			return ctl.AppendError(nil, id, &ctl.Error{Code: ctl.CodeConnRefused, Message: "fake refuses"})
		})
		port := freePort(t)
		p := startProg(t, append([]string{"SMBDIRECT_SOCKET=" + sock, fmt.Sprintf("SMBDIRECT_DIAL=127.0.0.1:%d=127.0.0.1:5445", port)},
			tc.env...), "connect1", fmt.Sprint(port))
		p.expect(t, fmt.Sprintf("CONNECT_FAIL %d", syscall.ECONNREFUSED))
		p.wait()
		msg := <-got
		if want := ctl.AppendDial(nil, 2, &ctl.Dial{Addr: "127.0.0.1:5445", Flags: tc.flags}); !bytes.Equal(msg, want) {
			t.Errorf("%v: Dial\n% x\nwant\n% x", tc.env, msg, want)
		}
	}
}

// addrParser is fuzz_preload.c, the preload's address parser under
// AddressSanitizer and UBSan, one process per test binary.
type addrParser struct {
	cmd *exec.Cmd
	mu  sync.Mutex
	in  io.WriteCloser
	out *bufio.Scanner
	err error
}

var (
	parserOnce sync.Once
	parser     addrParser
)

func startParser(t *testing.T) *addrParser {
	t.Helper()
	built(t)
	parserOnce.Do(func() {
		bin, err := gcc(buildDir, "fuzz_preload", "-g", "-O1", "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
			"fuzz_preload.c", "smbdirect.c")
		if err != nil {
			parser.err = err
			return
		}
		cmd := exec.Command(bin)
		parser.cmd = cmd
		cmd.Stderr = os.Stderr // a sanitizer's report
		if parser.in, parser.err = cmd.StdinPipe(); parser.err != nil {
			return
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			parser.err = err
			return
		}
		parser.out = bufio.NewScanner(stdout)
		// It ends when TestMain closes its stdin.
		parser.err = cmd.Start()
	})
	if parser.err != nil {
		t.Fatal(parser.err)
	}
	return &parser
}

func (p *addrParser) parse(t *testing.T, v6 bool, s string) string {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	fam := "4"
	if v6 {
		fam = "6"
	}
	if _, err := fmt.Fprintf(p.in, "%s %x\n", fam, s); err != nil || !p.out.Scan() {
		t.Fatalf("the parser died on %q (see its sanitizer report above)", s)
	}
	return p.out.Text()
}

// FuzzPreloadAddr: the preload parses "host:port" and "[v6]:port" from
// the daemon without memory errors, and every address Go can parse comes
// out as Go parses it (IPv4-mapped when the listener is AF_INET6).
func FuzzPreloadAddr(f *testing.F) {
	for _, s := range []string{"127.0.0.1:5445", "[::1]:5445", ":0", "[::]:445", "0.0.0.0:65535", "1.2.3.4:65536",
		"[fe80::1%eth0]:1", "host:1", "[::1]", "::1:80", "1.2.3.4: 80", "1.2.3.4:+80", "1.2.3.4:-1", "01.2.3.4:1",
		"[::ffff:1.2.3.4]:9", "[::1.2.3.4]:9", "[" + strings.Repeat("1", 80) + "]:1", "[]:1", "[:1", "]:1", "", ":", "1.2.3.4:00080"} {
		f.Add(false, s)
		f.Add(true, s)
	}
	f.Fuzz(func(t *testing.T, v6 bool, s string) {
		if len(s) > 1000 {
			return
		}
		got := startParser(t).parse(t, v6, s)
		if i := strings.IndexByte(s, 0); i >= 0 {
			s = s[:i] // a C string
		}
		var host, port string
		ok := true
		if strings.HasPrefix(s, "[") {
			end := strings.IndexByte(s, ']')
			ok = end > 0 && end+1 < len(s) && s[end+1] == ':'
			if ok {
				host, port = s[1:end], s[end+2:]
			}
		} else if i := strings.LastIndexByte(s, ':'); i >= 0 {
			host, port = s[:i], s[i+1:]
		} else {
			ok = false
		}
		pn := 0
		if ok {
			ok = len(host) < 64 && len(port) >= 1 && len(port) <= 5
			for _, c := range port {
				ok = ok && c >= '0' && c <= '9'
				pn = pn*10 + int(c-'0')
			}
			ok = ok && pn <= 65535
		}
		if !ok {
			if got != "bad" {
				t.Fatalf("%q: %q, want bad", s, got)
			}
			return
		}
		var want netip.Addr
		if host == "" {
			want = netip.IPv4Unspecified()
			if v6 {
				want = netip.IPv6Unspecified()
			}
		} else if a, err := netip.ParseAddr(host); err == nil && a.Zone() == "" {
			want = a
			if v6 && a.Is4() {
				want = netip.AddrFrom16(a.As16())
			}
		} else {
			return // Go does not parse it; only memory safety is checked
		}
		f := strings.Fields(got)
		if len(f) != 5 || f[0] != "ok" {
			t.Fatalf("%q: %q, want %v port %d", s, got, want, pn)
		}
		ip, err := netip.ParseAddr(f[2])
		wantFam, wantLen := "4", "16"
		if want.Is6() {
			wantFam, wantLen = "6", "28"
		}
		if err != nil || ip.As16() != want.As16() || f[1] != wantFam || f[3] != strconv.Itoa(pn) || f[4] != wantLen {
			t.Fatalf("%q (v6 listener %v): %q, want %s %v port %d", s, v6, got, wantFam, want, pn)
		}
	})
}

// fakeDaemon listens on a control socket of its own for one session: it
// answers the Hello, then the one request that follows with reply(its
// ID), sends that request on got, and reads until the program closes
// the session. It returns the socket's path.
func fakeDaemon(t *testing.T, reply func(id uint64) []byte) (string, <-chan []byte) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "fake.sock")
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: sock, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan []byte, 1)
	go func() {
		defer ln.Close()
		c, err := ln.AcceptUnix()
		if err != nil {
			got <- nil
			return
		}
		defer c.Close()
		buf := make([]byte, 1<<16)
		n, _ := c.Read(buf) // Hello
		h, _, _ := ctl.ParseHeader(buf[:n])
		m := ctl.AppendHeader(nil, ctl.TypeHelloOK, h.ID)
		m = append(m, 1, 0)
		c.Write(ctl.Finish(ctl.AppendBytes16(m, []byte("fake")), 0))
		n, _ = c.Read(buf) // the request
		msg := append([]byte(nil), buf[:n]...)
		h, _, _ = ctl.ParseHeader(msg)
		c.Write(reply(h.ID))
		got <- msg
		io.Copy(io.Discard, c)
	}()
	return sock, got
}
