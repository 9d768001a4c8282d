//go:build linux

package server_test

import (
	"bufio"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/smbdirect/smbdirect/internal/syncbuf"
	"github.com/smbdirect/smbdirect/smbd"
)

// buildC compiles a program of the C library with gcc (a test dependency,
// installed by scripts/test.sh): warnings are errors.
func buildC(t *testing.T, name string, srcs ...string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), name)
	args := []string{"-std=c11", "-Wall", "-Wextra", "-Werror", "-O2", "-o", out}
	for _, s := range srcs {
		args = append(args, filepath.Join("..", "..", "clib", s))
	}
	cmd := exec.Command("gcc", args...)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, b)
	}
	return out
}

// The C library against the daemon and a Go SMB Direct peer: stream PDUs,
// an RDMA Write from a file to the peer's buffer with Send with
// Invalidate, a memfd registered for the peer's write, error codes.
func TestCLibrary(t *testing.T) {
	bin := buildC(t, "test_smbdirect", "test_smbdirect.c", "smbdirect.c")
	s := startDaemon(t, nil)
	p := startPeer(t, false)
	cmd := exec.Command(bin, s.Addr(), p.l.Addr().String())
	var out syncbuf.Buffer
	listening := make(chan string, 1)
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, &out
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			out.Write([]byte(sc.Text() + "\n"))
			if a, ok := strings.CutPrefix(sc.Text(), "LISTENING "); ok {
				listening <- a
			}
		}
	}()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer pw.Close()
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	fail := func(f string, args ...any) {
		t.Helper()
		cmd.Process.Kill()
		<-waited
		t.Fatalf(f+"\nC program output:\n%s", append(args, out.String())...)
	}
	var srv *smbd.Conn
	select {
	case srv = <-p.conns:
	case err := <-waited:
		t.Fatalf("C program ended: %v\n%s", err, out.String())
	case <-time.After(20 * time.Second):
		fail("no connection")
	}
	defer srv.Close()
	srv.SetDeadline(time.Now().Add(20 * time.Second))
	buf := make([]byte, 1<<16)
	if n, err := srv.ReadMessage(buf); err != nil || string(buf[:n]) != "hello from C" {
		fail("first PDU %q, %v", buf[:n], err)
	}
	dst := make([]byte, 1<<20)
	reg, err := srv.Register(dst, smbd.PeerWrite)
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	if err := srv.WriteMessage(reg.AppendDescriptor(nil)); err != nil {
		t.Fatal(err)
	}
	if n, err := srv.ReadMessage(buf); err != nil || string(buf[:n]) != "written, invalidating" {
		fail("second PDU %q, %v", buf[:n], err)
	}
	for i := range dst {
		if dst[i] != byte(i*7) {
			fail("byte %d written by the daemon's RDMA Write is %d", i, dst[i])
		}
	}
	if reg.Valid() {
		fail("the buffer is still valid after Send with Invalidate")
	}
	n, err := srv.ReadMessage(buf)
	if err != nil || n != 16 {
		fail("descriptor PDU: %d bytes, %v", n, err)
	}
	ds, err := smbd.ParseBufferDescriptors(buf[:n])
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, ds[0].Length)
	for i := range data {
		data[i] = byte(i * 3)
	}
	if err := srv.RDMAWrite(t.Context(), data, ds); err != nil {
		fail("RDMA Write into the C program's memfd: %v", err)
	}
	if err := srv.WriteMessage([]byte("written")); err != nil {
		t.Fatal(err)
	}
	// The C program listens through the daemon; we connect to it.
	var laddr string
	select {
	case laddr = <-listening:
	case err := <-waited:
		t.Fatalf("C program ended: %v\n%s", err, out.String())
	case <-time.After(20 * time.Second):
		fail("no LISTENING line")
	}
	lc, err := smbd.Dial(t.Context(), laddr, smbdConfig())
	if err != nil {
		fail("dialing the C program's listener: %v", err)
	}
	lc.SetDeadline(time.Now().Add(20 * time.Second))
	if err := lc.WriteMessage([]byte("hello server")); err != nil {
		t.Fatal(err)
	}
	if n, err := lc.ReadMessage(buf); err != nil || string(buf[:n]) != "hello client" {
		fail("reply from the C program: %q, %v", buf[:n], err)
	}
	lc.Close()
	select {
	case err := <-waited:
		if err != nil || !strings.Contains(out.String(), "C_TEST_OK") {
			t.Fatalf("C program: %v\n%s", err, out.String())
		}
	case <-time.After(20 * time.Second):
		fail("C program did not finish")
	}
}

// TestCExampleProgress: the C example prints each status line as it
// happens, also into a pipe: against a peer that never answers the SMB2
// NEGOTIATE, its connection line arrives while it waits.
func TestCExampleProgress(t *testing.T) {
	bin := buildC(t, "smbdirect_example", "example.c", "smbdirect.c")
	s := startDaemon(t, nil)
	p := startPeer(t, false)
	cmd := exec.Command(bin, "-s", s.Addr(), p.l.Addr().String())
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var errb syncbuf.Buffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 8)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	var srv *smbd.Conn
	select {
	case srv = <-p.conns:
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("no connection\n%s", errb.String())
	}
	defer srv.Close()
	select {
	case l := <-lines:
		if !strings.HasPrefix(l, "SMB Direct to ") {
			t.Errorf("first line %q", l)
		}
	case <-time.After(10 * time.Second):
		t.Errorf("no output while the example waits for the NEGOTIATE response")
	}
	cmd.Process.Kill()
	for range lines {
	}
	cmd.Wait()
}
