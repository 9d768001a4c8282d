//go:build linux

package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime/pprof"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/smbdirect/smbdirect/internal/sambaconf"
	"github.com/smbdirect/smbdirect/internal/syncbuf"
	"github.com/smbdirect/smbdirect/internal/testbed"
	"github.com/smbdirect/smbdirect/iwarp"
	"github.com/smbdirect/smbdirect/smbd"
	"github.com/smbdirect/smbdirect/smbdirectd/server"
)

// smbclientConf writes a client smb.conf of its own (state in a
// temporary directory, SMB3 only) with the extra lines in [global].
func smbclientConf(t *testing.T, global ...string) string {
	t.Helper()
	conf, err := sambaconf.WriteClient(t.TempDir(), global...)
	if err != nil {
		t.Fatal(err)
	}
	return conf
}

func smbclientPath(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("smbclient")
	if err != nil {
		t.Fatal("no smbclient: scripts/test.sh installs it")
	}
	return p
}

// smbclientRun runs "smbdirect exec EXECARGS -- smbclient ARGS -c CMDS"
// in a process group of its own and returns its output (stdout and
// stderr); it fails t if the run fails or takes over timeout.
func smbclientRun(t *testing.T, timeout time.Duration, execArgs, args []string, cmds string) string {
	t.Helper()
	out, err := smbclientRunErr(timeout, execArgs, append(args, "-c", cmds))
	if err != nil {
		t.Fatalf("smbclient -c %q: %v\n%s", cmds, err, out)
	}
	return out
}

func smbclientRunErr(timeout time.Duration, execArgs, args []string) (string, error) {
	full := append(append(append([]string{"exec"}, execArgs...), "--", "smbclient"), args...)
	cmd := exec.Command(os.Args[0], full...)
	cmd.Env = append(os.Environ(), asMain+"=1", "SMBDIRECT_PRELOAD="+testLib)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return "", err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return out.String(), err
	case <-time.After(timeout):
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		return out.String(), fmt.Errorf("still running after %v: killed", timeout)
	}
}

// randomFile writes size random bytes into dir/name and returns the path
// and their sha256.
func randomFile(t *testing.T, dir, name string, size int) (string, [32]byte) {
	t.Helper()
	b := make([]byte, size)
	rand.Read(b)
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p, sha256.Sum256(b)
}

func fileSum(t *testing.T, p string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

// smbDirectSizes are the smb.conf lines that keep smbd's offered
// MaxRead/MaxWrite/MaxTransact sizes (8 MiB by default) within one SMB
// Direct message (1 MiB with its SMB2 header): smbclient, not knowing it
// rides SMB Direct, sends WRITEs as large as the server offers, inline.
var smbDirectSizes = []string{"smb2 max read = 1048064", "smb2 max write = 1048064", "smb2 max trans = 1048064"}

// The unmodified smbclient over SMB Direct, through two daemons, to the
// unmodified smbd, without RDMA channels (all data inline in SMB Direct
// messages): smbdirect exec --dial (its own daemon) -> SMB Direct
// on iWARP over loopback -> smbdirect exec --listen (another daemon) ->
// smbd. put/get of 64 MiB, ls, mkdir, rm with equal checksums; then 8
// smbclients at once, each its own file, checksums equal. smbd's TCP port
// is not listened on, so nothing went over TCP.
func TestExecSmbclient(t *testing.T) {
	preloadLib(t)
	port := freeTCPPort(t)
	sb := newSamba(t, port, smbDirectSizes...)
	e := startExec(t, nil, "--socket", filepath.Join(t.TempDir(), "server.sock"), "--listen", "127.0.0.1:0",
		"--port", fmt.Sprint(port), "--no-rdma-channel",
		"--", smbdPath(t), "-F", "--no-process-group", "--debug-stdout", "-s", sb.conf)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("smbd's smbdirect exec stderr:\n%s", e.stderr.String())
		}
	})
	_, addr := e.smbDirectAddr(t, port)
	conf := smbclientConf(t)
	// Inline: smbd's side has no server channel, so neither has this one.
	execArgs := []string{"--socket", filepath.Join(t.TempDir(), "client.sock"), "--no-rdma-channel",
		"--dial", fmt.Sprintf("127.0.0.1:%d=%s", port, addr)}
	args := []string{"//127.0.0.1/share", "-p", fmt.Sprint(port), "-U", "root%secret", "-s", conf}
	local := t.TempDir()

	src, sum := randomFile(t, local, "big.bin", 64<<20)
	back := filepath.Join(local, "big.back")
	start := time.Now()
	out := smbclientRun(t, 5*time.Minute, execArgs, args, fmt.Sprintf("put %s big.bin; get big.bin %s", src, back))
	t.Logf("64 MiB put and get in %v:\n%s", time.Since(start).Round(time.Millisecond), out)
	if !strings.Contains(out, "smbdirect: no smbdirectd answers on") {
		t.Errorf("smbclient's exec ran no daemon of its own:\n%s", out)
	}
	if got, onDisk := fileSum(t, back), fileSum(t, filepath.Join(sb.share, "big.bin")); got != sum || onDisk != sum {
		t.Fatalf("sha256: sent %x, got back %x, on the share %x", sum, got, onDisk)
	}

	out = smbclientRun(t, time.Minute, execArgs, args, "mkdir sub; ls")
	for _, want := range []string{"sub", "big.bin"} {
		if !strings.Contains(out, "  "+want+" ") {
			t.Fatalf("ls lacks %s:\n%s", want, out)
		}
	}
	if !strings.Contains(out, " 67108864 ") {
		t.Fatalf("ls does not show big.bin's size:\n%s", out)
	}
	if st, err := os.Stat(filepath.Join(sb.share, "sub")); err != nil || !st.IsDir() {
		t.Fatalf("mkdir: %v", err)
	}
	smbclientRun(t, time.Minute, execArgs, args, "rm big.bin; rmdir sub")
	if ents, err := os.ReadDir(sb.share); err != nil || len(ents) != 0 {
		t.Fatalf("the share after rm and rmdir: %v, %v", ents, err)
	}

	// 8 at once, through one daemon that runs throughout (execs starting
	// together would each start one of their own on the socket).
	d := startTestDaemon(t, &smbd.Config{Provider: iwarp.New(iwarp.Config{FirstSendDelay: -1})})
	execArgs[1] = d.Addr()
	const n, size = 8, 8 << 20
	type result struct {
		out string
		err error
	}
	res := make(chan result, n)
	sums := make([][32]byte, n)
	for i := range n {
		var p string
		p, sums[i] = randomFile(t, local, fmt.Sprintf("f%d", i), size+i)
		go func() {
			out, err := smbclientRunErr(5*time.Minute, execArgs, append(args, "-c",
				fmt.Sprintf("put %s f%d; get f%d %s.back", p, i, i, p)))
			res <- result{out, err}
		}()
	}
	for range n {
		if r := <-res; r.err != nil {
			t.Errorf("smbclient: %v\n%s", r.err, r.out)
		}
	}
	for i := range n {
		p := filepath.Join(local, fmt.Sprintf("f%d", i))
		if got, onDisk := fileSum(t, p+".back"), fileSum(t, filepath.Join(sb.share, fmt.Sprintf("f%d", i))); got != sums[i] || onDisk != sums[i] {
			t.Errorf("f%d: sha256 sent %x, got back %x, on the share %x", i, sums[i], got, onDisk)
		}
	}
	if st := d.Stats(); st.ConnsTotal != n || st.BytesSent < n*size || st.BytesReceived < n*size {
		t.Errorf("the shared daemon's counters: %+v, want %d connections, %d bytes each way", st, n, n*size)
	}
}

// --dial values become SMBDIRECT_DIAL: numeric addresses as given, names
// resolved to every address (IPv6 in brackets, IPv4-mapped unmapped),
// the SMB Direct address HOST:5445 unless given; bad values are usage
// errors.
func TestExecDialList(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want string
	}{
		{nil, ""},
		{[]string{"127.0.0.1"}, "127.0.0.1:445=127.0.0.1:5445"},
		{[]string{"127.0.0.1:4450=127.0.0.2:15445", "[::1]"}, "127.0.0.1:4450=127.0.0.2:15445,[::1]:445=[::1]:5445"},
		{[]string{"::ffff:10.0.0.1"}, "10.0.0.1:445=[::ffff:10.0.0.1]:5445"},
		{[]string{"[fe80::1]:445=[fe80::1%eth0]:5445"}, "[fe80::1]:445=[fe80::1%eth0]:5445"},
	} {
		got, err := dialList(t.Context(), tc.in)
		if err != nil || got != tc.want {
			t.Errorf("%q: %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	// localhost resolves through /etc/hosts to 127.0.0.1 (and maybe ::1).
	got, err := dialList(t.Context(), []string{"localhost:139"})
	if err != nil || !strings.Contains(","+got+",", ",127.0.0.1:139=localhost:5445,") {
		t.Errorf("localhost: %q, %v", got, err)
	}
	for _, bad := range []string{"127.0.0.1:0", "127.0.0.1:x", "=127.0.0.1:5445", "127.0.0.1=nohostport", "127.0.0.1=:5445",
		"127.0.0.1=h:0", "a,b", "[::1", ""} {
		if _, err := dialList(t.Context(), []string{bad}); !errors.As(err, new(usageError)) {
			t.Errorf("%q: %v, want a usage error", bad, err)
		}
	}
	// PROGRAM gets it.
	e := startExec(t, nil, "--socket", filepath.Join(t.TempDir(), "d.sock"), "--dial", "127.0.0.1:4450", "--dial", "[::1]=[::1]:1",
		"--", "sh", "-c", `echo "$SMBDIRECT_DIAL"`)
	if l := e.line(t); l != "127.0.0.1:4450=127.0.0.1:5445,[::1]:445=[::1]:1" {
		t.Errorf("PROGRAM's SMBDIRECT_DIAL: %q", l)
	}
	if st := e.status(t); st != 0 {
		t.Errorf("exit %d: %s", st, e.stderr.String())
	}
}

// The unmodified smbclient on the host against Linux ksmbd in the VM over
// siw: smbdirect exec --dial sends its TCP connection to 127.0.0.1:P to
// ksmbd's SMB Direct port (5445, forwarded), through a daemon in the test.
// put/get of 64 MiB, ls, mkdir, rm; checksums equal.
func TestVMSmbclientKsmbd(t *testing.T) {
	preloadLib(t)
	// ksmbd offers 4 MiB READ/WRITE sizes over SMB Direct (for clients
	// that use the RDMA channel), but takes inline messages of at most
	// 173910 bytes (255 credits of 1364 bytes, halved): smbclient, not
	// knowing, would send 4 MiB WRITEs inline. 128 KiB fits.
	// smbclient keeps as many READs or WRITEs in flight as it has credits
	// (ksmbd grants up to 8192) and times each out 20 s after it was
	// queued: in the emulated VM on a busy host (1 MB/s at worst) the last
	// of hundreds of 128 KiB requests timed out waiting behind the others.
	// 8 credits keep 1 MiB in flight, which bounds that wait. Fewer also
	// leave ksmbd fewer responses to spend SMB Direct credits on: it
	// spends its last one without granting any (docs/smbd.md, "ksmbd
	// spends its last credit"), and with 32 in flight both sides ended at
	// zero credits in about 1 run of 10 (smbclient: NT_STATUS_IO_TIMEOUT).
	global := `[global]\n\tserver min protocol = SMB2_10\n`
	script := strings.Replace(testbed.KsmbdGuest, global, global+
		`\tsmb2 max read = 128K\n\tsmb2 max write = 128K\n\tsmb2 max trans = 128K\n\tsmb2 max credits = 8\n`, 1)
	// The VM lives longer than testbed's default 120 s, which the whole
	// test outlasted on a busy host (qemu was killed mid-transfer and
	// smbclient saw NT_STATUS_CONNECTION_DISCONNECTED): 4 x 64 MiB
	// through an emulated CPU took 40-110 s.
	const life = 8 * time.Minute
	script2 := regexp.MustCompile(`\[ \$i -lt [0-9]+ \]`).ReplaceAllLiteralString(script,
		fmt.Sprintf("[ $i -lt %d ]", int(life/(100*time.Millisecond))))
	if script == testbed.KsmbdGuest || script2 == script {
		t.Fatal("KsmbdGuest's ksmbd.conf or wait loop changed: update this test")
	}
	vm := testbed.StartT(t, testbed.Options{GuestScript: script2, Forwards: []testbed.Forward{{GuestPort: 5445}}, Timeout: life})
	defer os.WriteFile(filepath.Join(vm.ShareDir(), "done"), nil, 0o644)
	ctx, cancel := context.WithTimeout(t.Context(), 150*time.Second)
	defer cancel()
	if _, err := vm.WaitFor(ctx, "KSMBD_READY"); err != nil {
		t.Fatalf("ksmbd did not start: %v", err)
	}
	port := freeTCPPort(t) // smbclient's TCP port: nothing listens there
	target := fmt.Sprintf("127.0.0.1:%d", vm.HostPort(5445))
	conf := smbclientConf(t)
	// One daemon in the test process for all of it: when smbclient fails,
	// its log and the goroutines' stacks say where the transfer stood (an
	// IO_TIMEOUT in CI once gave nothing else to go on).
	var dlog syncbuf.Buffer
	d := startTestDaemon(t, &smbd.Config{Logger: slog.New(slog.NewTextHandler(&dlog, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	t.Cleanup(func() {
		if t.Failed() {
			var stacks bytes.Buffer
			pprof.Lookup("goroutine").WriteTo(&stacks, 2)
			t.Logf("daemon %+v, log:\n%s\ngoroutines:\n%s", d.Stats(), dlog.String(), stacks.String())
		}
	})
	// Inline first.
	execArgs := []string{"--socket", d.Addr(), "--no-rdma-channel",
		"--dial", fmt.Sprintf("127.0.0.1:%d=%s", port, target)}
	args := []string{"//127.0.0.1/share", "-p", fmt.Sprint(port), "-U", "tester%secret", "-s", conf}
	local := t.TempDir()

	src, sum := randomFile(t, local, "big.bin", 64<<20)
	back := filepath.Join(local, "big.back")
	start := time.Now()
	out := smbclientRun(t, 5*time.Minute, execArgs, args, fmt.Sprintf("put %s big.bin; get big.bin %s", src, back))
	t.Logf("64 MiB put and get against ksmbd in %v:\n%s", time.Since(start).Round(time.Millisecond), out)
	if got := fileSum(t, back); got != sum {
		t.Fatalf("sha256: sent %x, got back %x", sum, got)
	}
	// Which messages smbclient signs (its -d10 says "signed SMB2 message"
	// per signed request): a few of the session's, or every one.
	small, _ := randomFile(t, local, "small.bin", 4<<20)
	smbclientRun(t, time.Minute, execArgs, args, fmt.Sprintf("put %s small.bin", small))
	sign := func(opts ...string) int {
		out := smbclientRun(t, time.Minute, execArgs, append(append(args, opts...), "-d10"), fmt.Sprintf("get small.bin %s.back", small))
		return strings.Count(out, "signed SMB2 message")
	}
	t.Logf("smbclient's signed messages for a 4 MiB get from ksmbd: %d by default, %d with client signing = disabled, %d with required",
		sign(), sign("--option=clientsigning=disabled"), sign("--option=clientsigning=required"))
	out = smbclientRun(t, time.Minute, execArgs, args, "mkdir sub; ls")
	for _, want := range []string{"  sub ", "  big.bin ", " 67108864 "} {
		if !strings.Contains(out, want) {
			t.Fatalf("ls lacks %q:\n%s", want, out)
		}
	}
	out = smbclientRun(t, time.Minute, execArgs, args, "rm big.bin; rm small.bin; rmdir sub; ls")
	if strings.Contains(out, "big.bin") || strings.Contains(out, "  sub ") {
		t.Fatalf("after rm and rmdir:\n%s", out)
	}

	// With the client-side RDMA channel (the default provider settings,
	// as against siw): ksmbd RDMA-reads every WRITE's data and RDMA-writes
	// every READ's.
	execArgs = []string{"--socket", d.Addr(), "--dial", fmt.Sprintf("127.0.0.1:%d=%s", port, target)}
	start = time.Now()
	out = smbclientRun(t, 5*time.Minute, execArgs, args, fmt.Sprintf("put %s rdma.bin; get rdma.bin %s; rm rdma.bin", src, back))
	st := d.Stats()
	t.Logf("64 MiB put and get against ksmbd with the RDMA channel in %v:\n%s\ndaemon: %+v", time.Since(start).Round(time.Millisecond), out, st)
	if got := fileSum(t, back); got != sum {
		t.Fatalf("sha256: sent %x, got back %x", sum, got)
	}
	if st.ClientRDMAWriteBytes != 64<<20 || st.ClientRDMAReadBytes != 64<<20 {
		t.Errorf("by RDMA: %d bytes of WRITE data, %d of READ data; want 64 MiB each", st.ClientRDMAWriteBytes, st.ClientRDMAReadBytes)
	}
}

// startTestDaemon runs a daemon in the test process (its counters are
// the evidence) until the test ends.
func startTestDaemon(t *testing.T, cfg *smbd.Config) *server.Server {
	t.Helper()
	d, err := server.Listen(server.Config{Socket: filepath.Join(t.TempDir(), "d.sock"), SMBD: cfg, Logger: cfg.Logger})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- d.Serve(context.Background()) }()
	t.Cleanup(func() {
		d.Close()
		if err := <-served; err != nil {
			t.Error(err)
		}
	})
	return d
}

// With the RDMA channels (exec's default on both sides), smbclient's
// READ and WRITE data moves by RDMA: the dialing daemon's client-side
// channel (smb2rdma) sends them with an RDMA channel, the listening
// daemon's server-side channel RDMA-reads the WRITE data and RDMA-writes
// the READ data, and smbd sees inline requests. smbclient does not sign
// them (docs/samba.md), so every one of 64 MiB each way goes by RDMA.
func TestExecSmbclientRDMA(t *testing.T) {
	preloadLib(t)
	port := freeTCPPort(t)
	sb := newSamba(t, port, smbDirectSizes...)
	cfg := func() *smbd.Config { return &smbd.Config{Provider: iwarp.New(iwarp.Config{FirstSendDelay: -1})} }
	sd, cd := startTestDaemon(t, cfg()), startTestDaemon(t, cfg())
	e := startExec(t, nil, "--socket", sd.Addr(), "--listen", "127.0.0.1:0", "--port", fmt.Sprint(port),
		"--", smbdPath(t), "-F", "--no-process-group", "--debug-stdout", "-s", sb.conf)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("smbd's smbdirect exec stderr:\n%s", e.stderr.String())
		}
	})
	_, addr := e.smbDirectAddr(t, port)
	execArgs := []string{"--socket", cd.Addr(), "--dial", fmt.Sprintf("127.0.0.1:%d=%s", port, addr)}
	args := []string{"//127.0.0.1/share", "-p", fmt.Sprint(port), "-U", "root%secret", "-s", smbclientConf(t)}
	local := t.TempDir()
	const size = 64 << 20
	src, sum := randomFile(t, local, "big.bin", size)
	back := filepath.Join(local, "big.back")
	start := time.Now()
	out := smbclientRun(t, 5*time.Minute, execArgs, args, fmt.Sprintf("put %s big.bin; get big.bin %s", src, back))
	t.Logf("64 MiB put and get with the RDMA channels in %v:\n%s", time.Since(start).Round(time.Millisecond), out)
	if got, onDisk := fileSum(t, back), fileSum(t, filepath.Join(sb.share, "big.bin")); got != sum || onDisk != sum {
		t.Fatalf("sha256: sent %x, got back %x, on the share %x", sum, got, onDisk)
	}
	cs, ss := cd.Stats(), sd.Stats()
	t.Logf("dialing daemon: %+v", cs)
	t.Logf("listening daemon: %+v", ss)
	if cs.ClientRDMAWriteBytes != size || cs.ClientRDMAReadBytes != size || cs.ClientRDMAWrites == 0 || cs.ClientRDMAReads == 0 {
		t.Errorf("client-side channel moved %d bytes of WRITE and %d of READ data by RDMA, want %d each", cs.ClientRDMAWriteBytes, cs.ClientRDMAReadBytes, size)
	}
	if ss.ServerRDMAReadBytes != size || ss.ServerRDMAWriteBytes != size || ss.ServerChannelPassthrough != 0 {
		t.Errorf("server-side channel: %d bytes RDMA-read, %d RDMA-written, %d passed through; want %d, %d, 0",
			ss.ServerRDMAReadBytes, ss.ServerRDMAWriteBytes, ss.ServerChannelPassthrough, size, size)
	}
	// The SMB Direct messages between the daemons carried headers only.
	if ss.BytesSent > size/64 || ss.BytesReceived > size/64 {
		t.Errorf("the listening daemon's messages carried %d bytes out and %d in for 64 MiB each way", ss.BytesSent, ss.BytesReceived)
	}
}
