//go:build linux

package sambatest

// The SMB Direct rows of TestLinuxSambaCifs: Samba under `smbdirect exec`, the daemon doing RDMA READ and
// WRITE for it, cifs.ko mounting with -o rdma over siw.

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/smbdirect/smbdirect/internal/testbed"
)

// Bytes cifs.ko moves through the RDMA channel when CifsGuest writes FileSizes with dd bs=1M: every WRITE
// of at least rdma_readwrite_threshold (4096) bytes, so all but f0, f1, f4095 and the last byte of
// f1048577.
const offloadedWriteBytes = 4096 + 1<<20 + 64<<20

func directCases() []cifsCase {
	return []cifsCase{
		{name: "rdma311", server: sambaDirect, opts: "vers=3.1.1,rdma", check: offloaded, done: readOffloaded},
		{name: "rdma30", server: sambaDirect, opts: "vers=3.0,rdma", check: offloaded, done: readOffloaded},
		// Signing: cifs.ko never asks for the RDMA channel, everything goes inline over SMB Direct.
		{name: "rdmasign", server: sambaDirect, opts: "vers=3.1.1,rdma,sign", check: notOffloaded, done: notOffloaded},
		// closetimeo=0 as in tcptwo.
		{name: "rdmatwo", server: sambaDirect, opts: "vers=3.1.1,rdma,nosharesock,closetimeo=0", mounts: 2, check: directConns(2)},
		{name: "rdmabadpw", server: sambaDirect, opts: "vers=3.1.1,rdma", password: "wrong", mountFails: true, mountErr: "mount error(13): Permission denied"},
	}
}

// offloaded: the row's WRITE data came by RDMA read, exactly the bytes of the offloaded writes, none passed
// through unchanged.
func offloaded(env *cifsEnv, before map[string]int64) error {
	d := env.direct.delta(before)
	if d["server_rdma_read_bytes_total"] != offloadedWriteBytes || d["server_channel_passthrough_total"] != 0 || d["server_rdma_reads_total"] == 0 {
		return fmt.Errorf("daemon counters moved by %v; want server_rdma_read_bytes_total %d, some server_rdma_reads_total, no passthrough",
			d, offloadedWriteBytes)
	}
	return nil
}

// readOffloaded: reading every file back with dd bs=1M (1 MiB READs, each above the threshold) had all
// their bytes RDMA-written by the daemon.
func readOffloaded(env *cifsEnv, before map[string]int64) error {
	total := int64(0)
	for _, n := range FileSizes {
		total += int64(n)
	}
	d := env.direct.delta(before)
	if d["server_rdma_write_bytes_total"] != total || d["server_rdma_writes_total"] == 0 || d["server_channel_passthrough_total"] != 0 {
		return fmt.Errorf("daemon counters moved by %v; want server_rdma_write_bytes_total %d, some server_rdma_writes_total, no passthrough", d, total)
	}
	return nil
}

// notOffloaded: over SMB Direct, but nothing through the RDMA channel.
func notOffloaded(env *cifsEnv, before map[string]int64) error {
	d := env.direct.delta(before)
	if d["server_rdma_read_bytes_total"] != 0 || d["server_rdma_reads_total"] != 0 || d["server_channel_passthrough_total"] != 0 || d["connections_total"] != 1 {
		return fmt.Errorf("daemon counters moved by %v; want one connection and no RDMA channel use", d)
	}
	return nil
}

// directConns: n SMB Direct connections held by the daemon, each served by its own smbd.
func directConns(n int) func(*cifsEnv, map[string]int64) error {
	return func(env *cifsEnv, before map[string]int64) error {
		now := env.direct.read()
		pids, err := env.direct.samba.ConnPIDs()
		if err != nil {
			return err
		}
		if now["connections"] != int64(n) || len(pids) != n {
			return fmt.Errorf("daemon holds %d connections, smbd has connection processes %v; want %d of each", now["connections"], pids, n)
		}
		return offloaded(env, before)
	}
}

// directServer is smbdirectd (with metrics) and a Samba started under `smbdirect exec` against it.
type directServer struct {
	samba   *Server
	metrics string
	pid     int   // smbdirectd's
	err     error // of the last read
}

// cpuSeconds is the CPU time (user + system) process pid has used so far.
func cpuSeconds(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name (which may hold spaces): state is the 3rd field, utime the 14th.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	u, err1 := strconv.ParseFloat(f[11], 64)
	s, err2 := strconv.ParseFloat(f[12], 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: utime %q stime %q", pid, f[11], f[12])
	}
	return (u + s) / 100, nil // USER_HZ is 100 on Linux
}

// startDirect builds the commands, starts smbdirectd on a private socket and Samba under smbdirect exec
// with SMB Direct on 127.0.0.1:5445 (the port cifs.ko dials; the guest's 10.0.2.2:5445). Everything stops
// when t ends, Samba first.
func startDirect(t *testing.T, user, password string) *directServer {
	t.Helper()
	testbed.LockHostPort(t, 5445)
	bin := t.TempDir()
	build := exec.CommandContext(t.Context(), "go", "build", "-o", bin+"/",
		"github.com/smbdirect/smbdirect/cmd/smbdirect", "github.com/smbdirect/smbdirect/cmd/smbdirectd")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	sock := filepath.Join(bin, "smbdirectd.sock")
	mport, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	d := &directServer{metrics: "127.0.0.1:" + strconv.Itoa(mport)}
	daemonLog := filepath.Join(bin, "smbdirectd.log")
	logf, err := os.Create(daemonLog)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	daemon := exec.Command(filepath.Join(bin, "smbdirectd"), "--socket", sock, "--metrics", d.metrics)
	daemon.Stdout, daemon.Stderr = logf, logf
	if err := daemon.Start(); err != nil {
		t.Fatal(err)
	}
	d.pid = daemon.Process.Pid
	t.Cleanup(func() {
		daemon.Process.Signal(os.Interrupt)
		done := make(chan error, 1)
		go func() { done <- daemon.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("smbdirectd: %v", err)
			}
		case <-time.After(30 * time.Second):
			daemon.Process.Kill()
			<-done
			t.Errorf("smbdirectd did not stop within 30 s of SIGINT")
		}
		if t.Failed() {
			b, _ := os.ReadFile(daemonLog)
			t.Logf("smbdirectd log:\n%s", b)
		}
	})
	for end := time.Now().Add(30 * time.Second); d.read() == nil; {
		if time.Now().After(end) {
			t.Fatalf("smbdirectd's metrics did not come up: %v", d.err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	d.samba = StartT(t, Options{
		Wrapper: []string{filepath.Join(bin, "smbdirect"), "exec", "--socket", sock,
			"--listen", "127.0.0.1:5445", "--port", "{port}", "--"},
		User: user, Password: password,
		// Ready once the daemon listens for SMB Direct for it.
		Ready: func(context.Context, *Server) error { return tcpListening("0100007F", 5445) },
	})
	return d
}

// read returns the daemon's metrics by name without the smbdirectd_ prefix (the counters in
// docs/smbdirectd.md with their _total suffix: connections is the gauge, connections_total the counter),
// nil when the metrics cannot be read.
func (d *directServer) read() map[string]int64 {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + d.metrics + "/metrics")
	if err != nil {
		d.err = err
		return nil
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		d.err = fmt.Errorf("metrics: %s", resp.Status)
		return nil
	}
	m := map[string]int64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 2 || strings.HasPrefix(f[0], "#") {
			continue
		}
		v, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			continue
		}
		m[strings.TrimPrefix(f[0], "smbdirectd_")] = v
	}
	return m
}

func (d *directServer) counters(t *testing.T) map[string]int64 {
	t.Helper()
	m := d.read()
	if m == nil {
		t.Fatalf("daemon metrics: %v", d.err)
	}
	return m
}

// delta is the counters' change since before (missing counters read as 0).
func (d *directServer) delta(before map[string]int64) map[string]int64 {
	now := d.read()
	out := map[string]int64{}
	for k, v := range now {
		if v != before[k] {
			out[k] = v - before[k]
		}
	}
	return out
}

// tcpListening reports (nil) whether a TCP socket listens on addrHex:port in /proc/net/tcp (addrHex as the
// kernel prints it there: 0100007F is 127.0.0.1).
func tcpListening(addrHex string, port int) error {
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		return err
	}
	want := fmt.Sprintf("%s:%04X", addrHex, port)
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) > 3 && f[1] == want && f[3] == "0A" {
			return nil
		}
	}
	return fmt.Errorf("nothing listens on %s in /proc/net/tcp", want)
}
