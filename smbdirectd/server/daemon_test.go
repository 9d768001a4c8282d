//go:build linux

package server_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/smbdirect/smbdirect/internal/framing"
	"github.com/smbdirect/smbdirect/iwarp"
	"github.com/smbdirect/smbdirect/smbd"
	"github.com/smbdirect/smbdirect/smbdirectd/client"
	"github.com/smbdirect/smbdirect/smbdirectd/server"
)

func smbdConfig() *smbd.Config {
	return &smbd.Config{Provider: iwarp.New(iwarp.Config{FirstSendDelay: -1})}
}

// startDaemon runs a daemon on a socket in a temporary directory.
func startDaemon(t *testing.T, mod func(*server.Config)) *server.Server {
	t.Helper()
	cfg := server.Config{Socket: filepath.Join(t.TempDir(), "d.sock"), SMBD: smbdConfig()}
	if mod != nil {
		mod(&cfg)
	}
	s, err := server.Listen(cfg)
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

// peer is an SMB Direct server of our own: it echoes each PDU with a
// prefix, and hands each accepted connection to conns.
type peer struct {
	l     *smbd.Listener
	conns chan *smbd.Conn
}

func startPeer(t *testing.T, echo bool) *peer {
	t.Helper()
	l, err := smbd.Listen(t.Context(), "127.0.0.1:0", smbdConfig())
	if err != nil {
		t.Fatal(err)
	}
	p := &peer{l: l, conns: make(chan *smbd.Conn, 16)}
	go func() {
		for {
			c, err := l.AcceptSMBD(context.Background())
			if err != nil {
				return
			}
			if echo {
				go func() {
					defer c.Close()
					buf := make([]byte, 1<<20)
					for {
						n, err := c.ReadMessage(buf)
						if err != nil {
							return
						}
						if c.WriteMessage(append([]byte("echo:"), buf[:n]...)) != nil {
							return
						}
					}
				}()
				continue
			}
			p.conns <- c
		}
	}()
	t.Cleanup(func() { l.Close() })
	return p
}

// through opens a session with the daemon and, through it, a connection
// to addr; both are closed when t ends.
func through(t *testing.T, s *server.Server, addr string) (*client.Client, *client.Conn) {
	t.Helper()
	cl, err := client.Dial(ctx(t), s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	conn, err := cl.Connect(ctx(t), addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return cl, conn
}

func writePDU(w io.Writer, pdu []byte) error {
	b, err := framing.Append(nil, len(pdu))
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, pdu...))
	return err
}

func readPDU(r io.Reader) ([]byte, error) {
	var h [framing.HeaderLen]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return nil, err
	}
	size, ok := framing.Parse(h[:])
	if !ok {
		return nil, fmt.Errorf("bad framing % x", h)
	}
	b := make([]byte, size)
	_, err := io.ReadFull(r, b)
	return b, err
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

// The stream fd behaves like a TCP socket carrying framed PDUs, large
// ones included, with deadlines through net.Conn.
func TestDialStream(t *testing.T) {
	s := startDaemon(t, nil)
	p := startPeer(t, true)
	_, conn := through(t, s, p.l.Addr().String())
	if conn.Info.MaxSendSize != 1364 || conn.Info.MaxFragmentedSend != 1<<20 {
		t.Fatalf("negotiated %+v", conn.Info)
	}
	nc, err := conn.NetConn()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	for _, n := range []int{1, 1000, 65536, 1<<20 - 5} {
		pdu := bytes.Repeat([]byte{byte(n)}, n)
		if err := writePDU(nc, pdu); err != nil {
			t.Fatal(err)
		}
		got, err := readPDU(nc)
		if err != nil || !bytes.Equal(got, append([]byte("echo:"), pdu...)) {
			t.Fatalf("%d-byte PDU: %d bytes back, %v", n, len(got), err)
		}
	}
	st := s.Stats()
	if st.Conns != 1 || st.BytesSent == 0 || st.BytesReceived == 0 {
		t.Fatalf("stats %+v", st)
	}
}

// A child process that inherits the stream fd continues the same SMB
// Direct connection; the connection ends when the last copy is closed.
func TestForkChildContinues(t *testing.T) {
	s := startDaemon(t, nil)
	p := startPeer(t, false)
	_, conn := through(t, s, p.l.Addr().String())
	srv := <-p.conns
	defer srv.Close()
	buf := make([]byte, 4096)
	expect := func(want string) {
		t.Helper()
		srv.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, err := srv.ReadMessage(buf)
		if err != nil || string(buf[:n]) != want {
			t.Fatalf("server got %q, %v; want %q", buf[:n], err, want)
		}
	}
	if err := writePDU(conn.Stream, []byte("from parent")); err != nil {
		t.Fatal(err)
	}
	expect("from parent")

	cmd := exec.Command(os.Args[0], "-test.run=^TestChildHelper$")
	cmd.Env = append(os.Environ(), "SMBDIRECTD_CHILD=1")
	cmd.ExtraFiles = []*os.File{conn.Stream} // fd 3 in the child
	out := &bytes.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	expect(fmt.Sprintf("from child %d", cmd.Process.Pid))
	if err := srv.WriteMessage([]byte("to child")); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	// The parent's copy still works after the child exited.
	if err := writePDU(conn.Stream, []byte("parent again")); err != nil {
		t.Fatal(err)
	}
	expect("parent again")
	// Last copy closed: the daemon hangs up, the peer sees the end.
	conn.Close()
	srv.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := srv.ReadMessage(buf); !errors.Is(err, io.EOF) {
		t.Fatalf("after the last fd closed the peer read %v, want EOF", err)
	}
}

// TestChildHelper is the child of TestForkChildContinues.
func TestChildHelper(t *testing.T) {
	if os.Getenv("SMBDIRECTD_CHILD") != "1" {
		t.Skip("helper process for TestForkChildContinues")
	}
	f := os.NewFile(3, "inherited")
	if err := writePDU(f, []byte(fmt.Sprintf("from child %d", os.Getpid()))); err != nil {
		t.Fatal(err)
	}
	got, err := readPDU(f)
	if err != nil || string(got) != "to child" {
		t.Fatalf("child read %q, %v", got, err)
	}
}

func memfd(t *testing.T, n int) *os.File {
	t.Helper()
	fd, err := unix.MemfdCreate("smbdirectd-test", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "memfd")
	if err := f.Truncate(int64(n)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// RDMA offload through the daemon, both sides: the peer RDMA-writes into
// a memfd range the client registered (an SMB2 READ's data arriving),
// and the daemon RDMA-writes a file range to the peer's buffer and
// RDMA-reads the peer's buffer into a file (a server's READ and WRITE),
// then answers with Send with Invalidate.
func TestOffloadThroughDaemon(t *testing.T) {
	s := startDaemon(t, nil)
	p := startPeer(t, false)
	cl, conn := through(t, s, p.l.Addr().String())
	srv := <-p.conns
	defer srv.Close()
	c := ctx(t)

	// Peer -> registered memfd.
	mf := memfd(t, 1<<20)
	reg, err := cl.Register(c, conn.Handle, mf, 0, 1<<20, client.PeerWrite)
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 1<<20)
	for i := range data {
		data[i] = byte(i*31 + i>>9)
	}
	d := reg.Descriptor
	if err := srv.RDMAWrite(c, data, []smbd.BufferDescriptor{{Offset: d.Offset, Token: d.Token, Length: d.Length}}); err != nil {
		t.Fatal(err)
	}
	if err := srv.WriteMessage([]byte("READ response")); err != nil {
		t.Fatal(err)
	}
	if got, err := readPDU(conn.Stream); err != nil || string(got) != "READ response" {
		t.Fatal(string(got), err)
	}
	got := make([]byte, 1<<20)
	if _, err := mf.ReadAt(got, 0); err != nil || sha256.Sum256(got) != sha256.Sum256(data) {
		t.Fatalf("memfd content differs (%v)", err)
	}
	if byPeer, err := reg.Deregister(c); err != nil || byPeer {
		t.Fatal(byPeer, err)
	}
	if st := s.Stats(); st.Registered != 0 {
		t.Fatalf("registered bytes %d after Deregister", st.Registered)
	}

	// File -> peer buffer (daemon RDMA Write), then Send with Invalidate.
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	os.WriteFile(src, append(make([]byte, 777), data...), 0o600)
	sf, _ := os.Open(src)
	defer sf.Close()
	dst := make([]byte, len(data))
	pb, err := srv.Register(dst, smbd.PeerWrite)
	if err != nil {
		t.Fatal(err)
	}
	defer pb.Close()
	pd := pb.Descriptor()
	n, err := cl.RDMAWrite(c, conn.Handle, sf, 777, []client.Descriptor{{Offset: pd.Offset, Token: pd.Token, Length: pd.Length}})
	if err != nil || n != int64(len(data)) {
		t.Fatal(n, err)
	}
	if err := cl.Send(c, conn.Handle, []byte("READ response, invalidating"), pd.Token); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 100)
	if n, err := srv.ReadMessage(buf); err != nil || string(buf[:n]) != "READ response, invalidating" {
		t.Fatal(string(buf[:n]), err)
	}
	if !bytes.Equal(dst, data) || pb.Valid() {
		t.Fatalf("peer buffer: data equal %v, still valid %v", bytes.Equal(dst, data), pb.Valid())
	}

	// Peer buffer -> file (daemon RDMA Read).
	rb, err := srv.Register(data, smbd.PeerRead)
	if err != nil {
		t.Fatal(err)
	}
	defer rb.Close()
	out, err := os.OpenFile(filepath.Join(dir, "out"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	rd := rb.Descriptor()
	call := cl.StartRDMARead(conn.Handle, out, 4096, []client.Descriptor{{Offset: rd.Offset, Token: rd.Token, Length: rd.Length}})
	if n, err := call.Wait(c); err != nil || n != int64(len(data)) {
		t.Fatal(n, err)
	}
	got, _ = os.ReadFile(out.Name())
	if len(got) != 4096+len(data) || !bytes.Equal(got[4096:], data) {
		t.Fatal("file written by RDMA Read differs")
	}
	st := s.Stats()
	if st.RDMAWritten != int64(len(data)) || st.RDMARead != int64(len(data)) {
		t.Fatalf("stats %+v", st)
	}
	// A read-only fd cannot be registered for the peer's write.
	if _, err := cl.Register(c, conn.Handle, sf, 0, 4096, client.PeerWrite); err == nil {
		t.Fatal("registered a read-only file for the peer's write")
	}
}

// Clients are isolated; garbage on the control socket gets an error and
// the daemon goes on; a client's death releases its registrations.
func TestIsolationAndGarbage(t *testing.T) {
	s := startDaemon(t, func(c *server.Config) { c.MaxConnsPerClient = 1 })
	p := startPeer(t, true)
	a, err := client.Dial(ctx(t), s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := client.Dial(ctx(t), s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	conn, err := a.Connect(ctx(t), p.l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := a.Connect(ctx(t), p.l.Addr().String()); !errors.Is(err, unix.EDQUOT) {
		t.Fatalf("second connection past the limit: %v", err)
	}
	// b cannot use a's connection.
	if err := b.Send(ctx(t), conn.Handle, []byte("x"), 0); !errors.Is(err, unix.ENOENT) {
		t.Fatalf("another client's handle: %v", err)
	}
	if err := b.CloseHandle(ctx(t), conn.Handle); !errors.Is(err, unix.ENOENT) {
		t.Fatalf("closing another client's handle: %v", err)
	}
	// Garbage datagrams.
	raw, err := net.Dial("unixpacket", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	for _, g := range [][]byte{{1, 2, 3}, bytes.Repeat([]byte{0xff}, 100), append([]byte{0x53, 0x44, 1, 0x07, 16, 0, 0, 0}, make([]byte, 8)...)} {
		raw.Write(g)
		raw.SetReadDeadline(time.Now().Add(5 * time.Second))
		r := make([]byte, 2048)
		n, err := raw.Read(r)
		if err != nil || n < 16 || r[3] != 0xff {
			t.Fatalf("garbage %x: reply % x, %v", g, r[:n], err)
		}
	}
	// b registers on its own connection, then dies without deregistering.
	bc, err := b.Connect(ctx(t), p.l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer bc.Close()
	if _, err := b.Register(ctx(t), bc.Handle, memfd(t, 65536), 0, 65536, client.PeerWrite); err != nil {
		t.Fatal(err)
	}
	if s.Stats().Registered != 65536 {
		t.Fatal(s.Stats())
	}
	b.Close()
	// The daemon releases b's registrations, then counts b gone: wait for
	// both, not just the first.
	gone := func(st server.Stats) bool { return st.Registered == 0 && st.Clients == 2 }
	deadline := time.Now().Add(5 * time.Second)
	for !gone(s.Stats()) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if st := s.Stats(); !gone(st) {
		t.Fatalf("5 s after the client died: want 0 bytes registered and 2 clients (a and the raw one), got %+v", st)
	}
	// a's connection still works.
	if err := writePDU(conn.Stream, []byte("still")); err != nil {
		t.Fatal(err)
	}
	if got, err := readPDU(conn.Stream); err != nil || string(got) != "echo:still" {
		t.Fatal(string(got), err)
	}
}

func openFDs(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// No goroutine or fd leaks over 1000 connect/close cycles (200 with
// -short).
func TestConnectCloseCycles(t *testing.T) {
	s := startDaemon(t, nil)
	p := startPeer(t, true)
	cl, err := client.Dial(ctx(t), s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	cycles := 1000
	if testing.Short() {
		cycles = 200
	}
	one := func() {
		conn, err := cl.Connect(ctx(t), p.l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		if err := writePDU(conn.Stream, []byte("ping")); err != nil {
			t.Fatal(err)
		}
		if got, err := readPDU(conn.Stream); err != nil || string(got) != "echo:ping" {
			t.Fatal(string(got), err)
		}
		conn.Close()
	}
	for range 20 {
		one()
	}
	settle := func() {
		deadline := time.Now().Add(5 * time.Second)
		for s.Stats().Conns != 0 && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		time.Sleep(100 * time.Millisecond)
	}
	settle()
	g0, f0 := runtime.NumGoroutine(), openFDs(t)
	var m0 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	start := time.Now()
	for range cycles {
		one()
	}
	settle()
	var m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m1)
	g1, f1 := runtime.NumGoroutine(), openFDs(t)
	t.Logf("%d cycles in %v; goroutines %d -> %d, fds %d -> %d, heap %d -> %d KiB", cycles, time.Since(start), g0, g1, f0, f1, m0.HeapAlloc>>10, m1.HeapAlloc>>10)
	if g1 > g0+2 || f1 > f0+2 || m1.HeapAlloc > m0.HeapAlloc+8<<20 {
		t.Fatalf("leak: goroutines %d -> %d, fds %d -> %d, heap %d -> %d KiB", g0, g1, f0, f1, m0.HeapAlloc>>10, m1.HeapAlloc>>10)
	}
	if st := s.Stats(); st.ConnsTotal < int64(cycles) || st.Conns != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// TestDialErrors: a Dial that fails reports why, as an errno: a closed
// port is ECONNREFUSED, an address without a port EINVAL, a peer that
// accepts TCP but never answers ETIMEDOUT.
func TestDialErrors(t *testing.T) {
	s := startDaemon(t, func(c *server.Config) { c.DialTimeout = 300 * time.Millisecond })
	cl, err := client.Dial(t.Context(), s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := closed.Addr().String()
	closed.Close()
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepting := make(chan struct{})
	defer func() {
		silent.Close()
		<-accepting
	}()
	go func() {
		defer close(accepting)
		var held []net.Conn // answered by nobody until the test ends
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	}()
	for _, c := range []struct {
		addr string
		want unix.Errno
	}{
		{closedAddr, unix.ECONNREFUSED},
		{"127.0.0.1", unix.EINVAL},
		{silent.Addr().String(), unix.ETIMEDOUT},
	} {
		conn, err := cl.Connect(context.Background(), c.addr)
		if err == nil {
			conn.Close()
		}
		if !errors.Is(err, c.want) {
			t.Errorf("dial %s: %v, want %v", c.addr, err, c.want)
		}
	}
}

// PDUs written back to back in one write reach the peer as one SMB
// Direct message each, intact, although the daemon's reads take a PDU's
// tail and the next one's start together.
func TestStreamPDUsBackToBack(t *testing.T) {
	s := startDaemon(t, nil)
	p := startPeer(t, false)
	_, conn := through(t, s, p.l.Addr().String())
	var pc *smbd.Conn
	select {
	case pc = <-p.conns:
	case <-ctx(t).Done():
		t.Fatal("no connection at the peer")
	}
	defer pc.Close()
	sizes := []int{300_000, 5, 700_001, 1, 65536, 1<<20 - 5, 17}
	var all []byte
	var pdus [][]byte
	for i, n := range sizes {
		pdu := make([]byte, n)
		for j := range pdu {
			pdu[j] = byte(i*31 + j*7)
		}
		pdus = append(pdus, pdu)
		var err error
		if all, err = framing.Append(all, n); err != nil {
			t.Fatal(err)
		}
		all = append(all, pdu...)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := conn.Stream.Write(all)
		errc <- err
	}()
	buf := make([]byte, 1<<20)
	for i, want := range pdus {
		n, err := pc.ReadMessage(buf)
		if err != nil || !bytes.Equal(buf[:n], want) {
			t.Fatalf("message %d: %d bytes (want %d), equal %v, %v", i, n, len(want), bytes.Equal(buf[:n], want), err)
		}
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}
