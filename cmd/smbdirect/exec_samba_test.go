//go:build linux

package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	gosmb2 "github.com/cloudsoda/go-smb2"

	"github.com/smbdirect/smbdirect/internal/sambaconf"
	"github.com/smbdirect/smbdirect/iwarp"
	"github.com/smbdirect/smbdirect/smbd"
)

// samba is a throwaway Samba configuration: everything in one temporary
// directory, a [share] read-write, root with password "secret" in its own
// passdb, smbd on TCP port port of 127.0.0.1 only, and the lines global
// in [global] (sambaconf, shared with bench samba).
type samba struct {
	dir, conf, share string
	port             int
}

func newSamba(t *testing.T, port int, global ...string) *samba {
	t.Helper()
	dir := t.TempDir()
	conf, err := sambaconf.Write(t.Context(), sambaconf.Server{Dir: dir, Port: port, Global: global})
	if err != nil {
		t.Fatal(err)
	}
	return &samba{dir: dir, conf: conf, share: filepath.Join(dir, "share"), port: port}
}

func smbdPath(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("smbd"); err == nil {
		return p
	}
	if _, err := os.Stat("/usr/sbin/smbd"); err == nil {
		return "/usr/sbin/smbd"
	}
	t.Fatal("no smbd: scripts/test.sh installs samba")
	return ""
}

// smbDirectAddr waits for the preload's line and returns smbd's pid and
// the SMB Direct address.
func (e *smbdirectExec) smbDirectAddr(t *testing.T, port int) (int, string) {
	t.Helper()
	suffix := fmt.Sprintf(": TCP port %d is SMB Direct on ", port)
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		for _, l := range strings.Split(e.stderr.String(), "\n") {
			var pid int
			if rest, ok := strings.CutPrefix(l, "smbdirect-preload: pid "); ok {
				if i := strings.Index(rest, suffix); i > 0 {
					if _, err := fmt.Sscan(rest[:i], &pid); err == nil {
						return pid, rest[i+len(suffix):]
					}
				}
			}
		}
		select {
		case <-e.done:
			t.Fatalf("smbdirect exec ended: %v\nstderr:\n%s", e.err, e.stderr.String())
		default:
		}
	}
	t.Fatalf("no SMB Direct address on stderr:\n%s", e.stderr.String())
	return 0, ""
}

// children lists the processes whose parent is pid.
func children(pid int) []int {
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, d := range ents {
		if st, err := readStat(d.Name()); err == nil && st.ppid == pid && st.state != "Z" {
			out = append(out, st.pid)
		}
	}
	slices.Sort(out)
	return out
}

// waitChild waits for a child of pid that is not in old and returns it.
func waitChild(t *testing.T, pid int, old []int) int {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		for _, c := range children(pid) {
			if !slices.Contains(old, c) {
				return c
			}
		}
	}
	t.Fatalf("no new child of smbd %d", pid)
	return 0
}

// alive: pid exists and is not a zombie.
func alive(pid int) bool {
	st, err := readStat(fmt.Sprint(pid))
	return err == nil && st.state != "Z"
}

// session is one go-smb2 client over SMB Direct.
type session struct {
	conn  *smbd.Conn
	share *gosmb2.Share
}

func mount(t *testing.T, addr string) *session {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	c, err := smbd.Dial(ctx, addr, &smbd.Config{Provider: iwarp.New(iwarp.Config{FirstSendDelay: -1})})
	if err != nil {
		t.Fatalf("SMB Direct to %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	d := &gosmb2.Dialer{Initiator: &gosmb2.NTLMInitiator{User: "root", Password: "secret"}}
	s, err := d.DialConn(ctx, c, addr)
	if err != nil {
		t.Fatalf("go-smb2 session over SMB Direct: %v", err)
	}
	share, err := s.Mount(`\\127.0.0.1\share`)
	if err != nil {
		t.Fatalf("mount: %v", err)
	}
	return &session{conn: c, share: share}
}

// chunk bounds each READ and WRITE: smbd (not knowing of SMB Direct)
// offers 8 MiB, go-smb2 then sends 1 MiB of data per WRITE, and with its
// header that PDU exceeds SMB Direct's 1 MiB MaxFragmentedSize. (cifs.ko
// sizes its I/O for the transport itself.)
const chunk = 512 << 10

// putGet writes size random bytes as name and reads them back, chunk by
// chunk; the file in the share directory has them too.
func putGet(t *testing.T, s *session, sb *samba, name string, size int) {
	t.Helper()
	if err := putGetErr(s, sb, name, size); err != nil {
		t.Fatal(err)
	}
}

func putGetErr(s *session, sb *samba, name string, size int) error {
	data := make([]byte, size)
	rand.Read(data)
	f, err := s.share.Create(name)
	if err != nil {
		return fmt.Errorf("create %s: %w", name, err)
	}
	defer f.Close()
	for off := 0; off < size; off += chunk {
		if _, err := f.WriteAt(data[off:min(off+chunk, size)], int64(off)); err != nil {
			return fmt.Errorf("put %s at %d: %w", name, off, err)
		}
	}
	got := make([]byte, size)
	for off := 0; off < size; off += chunk {
		if n, err := f.ReadAt(got[off:min(off+chunk, size)], int64(off)); err != nil || n != min(chunk, size-off) {
			return fmt.Errorf("get %s at %d: %d bytes, %v", name, off, n, err)
		}
	}
	onDisk, err := os.ReadFile(filepath.Join(sb.share, name))
	if err != nil {
		return err
	}
	want := sha256.Sum256(data)
	if sha256.Sum256(got) != want || sha256.Sum256(onDisk) != want {
		return fmt.Errorf("%s: sha256 of what came back %x, on disk %x, sent %x", name, sha256.Sum256(got), sha256.Sum256(onDisk), want)
	}
	return nil
}

// The packaged, unmodified Samba smbd under smbdirect exec (its own
// daemon, no RDMA channel) serves go-smb2 over SMB Direct: put/get of a
// few MiB with equal sha256, two clients at once served by two forked
// smbd children, and a child that reads EOF and exits when its SMB
// Direct connection drops while the other one carries on.
func TestExecSamba(t *testing.T) {
	port := freeTCPPort(t)
	sb := newSamba(t, port)
	sock := filepath.Join(t.TempDir(), "d.sock")
	e := startExec(t, nil, "--socket", sock, "--listen", "127.0.0.1:0", "--port", fmt.Sprint(port), "--no-rdma-channel",
		"--", smbdPath(t), "-F", "--no-process-group", "--debug-stdout", "-s", sb.conf)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("smbdirect exec's stderr:\n%s", e.stderr.String())
			logs, _ := filepath.Glob(filepath.Join(sb.dir, "log", "*"))
			for _, l := range logs {
				b, _ := os.ReadFile(l)
				t.Logf("%s:\n%s", l, b)
			}
		}
	})
	parent, addr := e.smbDirectAddr(t, port)
	before := children(parent)

	s1 := mount(t, addr)
	child1 := waitChild(t, parent, before)
	putGet(t, s1, sb, "one.bin", 4<<20+123)

	s2 := mount(t, addr)
	child2 := waitChild(t, parent, append(before, child1))
	if child1 == child2 || !alive(child1) || !alive(child2) {
		t.Fatalf("children %d and %d", child1, child2)
	}
	// smbd knows each client by its SMB Direct address (getpeername).
	out, err := exec.Command("smbstatus", "-s", sb.conf, "-b").CombinedOutput()
	if err != nil {
		t.Fatalf("smbstatus: %v\n%s", err, out)
	}
	for _, c := range []struct {
		pid int
		s   *session
	}{{child1, s1}, {child2, s2}} {
		want := regexp.MustCompile(fmt.Sprintf(`(?m)^%d\s+root\s+.*\(ipv4:%s\)`, c.pid, regexp.QuoteMeta(c.s.conn.LocalAddr().String())))
		if !want.Match(out) {
			t.Errorf("smbstatus has no line %q:\n%s", want, out)
		}
	}
	both := make(chan error, 1)
	go func() { both <- putGetErr(s1, sb, "both1.bin", 3<<20) }() // both at once
	putGet(t, s2, sb, "both2.bin", 3<<20+7)
	if err := <-both; err != nil {
		t.Fatal(err)
	}

	// The first client's connection drops: its child reads EOF and exits;
	// the second goes on.
	s1.conn.Close()
	for deadline := time.Now().Add(20 * time.Second); alive(child1); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("smbd child %d still runs after its SMB Direct connection dropped", child1)
		}
	}
	putGet(t, s2, sb, "after.bin", 1<<20)
	if !alive(child2) || !alive(parent) {
		t.Fatal("the other smbd processes ended")
	}

	// SIGTERM to smbdirect exec reaches smbd, which exits; so does exec.
	s2.conn.Close()
	e.cmd.Process.Signal(os.Interrupt)
	if st := e.status(t); st != 0 && st != 128+2 {
		t.Errorf("exit status %d after SIGINT", st)
	}
	if bytes.Contains([]byte(e.stderr.String()), []byte("smbdirect-preload: cannot")) {
		t.Errorf("preload error:\n%s", e.stderr.String())
	}
	// No smbd of this configuration is left, in the group or out of it.
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		left := withArg(sb.conf)
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("processes left: %v", left)
		}
	}
}

// withArg lists the live processes with arg on their command line.
func withArg(arg string) []int {
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, d := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", d.Name(), "cmdline"))
		if err == nil && slices.Contains(strings.Split(string(b), "\x00"), arg) && alive(atoiOr0(d.Name())) {
			out = append(out, atoiOr0(d.Name()))
		}
	}
	return out
}

func atoiOr0(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

// freeTCPPort is a TCP port of 127.0.0.1 below the ephemeral range, so no
// port-0 listener of a concurrent test is handed it meanwhile.
func freeTCPPort(t *testing.T) int {
	t.Helper()
	for range 100 {
		p := 20000 + mrand.IntN(10000)
		if l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p)); err == nil {
			l.Close()
			return p
		}
	}
	t.Fatal("no free port")
	return 0
}
