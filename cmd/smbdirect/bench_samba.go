//go:build linux

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/smbdirect/smbdirect/internal/sambaconf"
	"github.com/smbdirect/smbdirect/internal/syncbuf"
	"github.com/smbdirect/smbdirect/smbdirectd/server"
)

func init() {
	registerSub("bench", "benchmarks, each side by side with plain TCP over loopback in the same run", &command{
		name:  "samba",
		usage: "[--size 1GiB] [--files 256] [--rounds 3] [--json] [--cpuprofile FILE]",
		short: "unmodified smbclient get/put against Samba's smbd over SMB Direct vs TCP",
		long: `Runs Samba's smbd twice with the same configuration (each in a temporary
directory of its own, with its own share): once under smbdirect exec's logic (its TCP port becomes SMB Direct, through a daemon
of its own on a private socket) and once on plain TCP, both on 127.0.0.1. The
unmodified smbclient then gets and puts a file of --size over SMB Direct
(through a second daemon, the client's end) and over TCP loopback:

  samba_get_rdma, samba_put_rdma      with the RDMA channels (daemons do the RDMA)
  samba_get_inline, samba_put_inline  without (data inline in SMB Direct messages)
  samba_small_put, samba_small_get    --files 64 KiB files in one session, ops/s
  samba_session                       smbclient's start, session setup and exit, ms

Each row runs --rounds times, SMB Direct and TCP taking turns, and the best
of each is reported: on a shared machine other work only ever slows a run
down, and taking turns exposes both to the same load.
Each figure is timed by the wall clock around the smbclient process. That
includes its start, session setup and exit: samba_session measures those
(smbclient -c pwd) per transport, and the other rows subtract them. get
writes to /dev/null; put reads a file in the temporary directory. ours/tcp
above 1 means SMB Direct is faster. rdma_bytes is what the client's daemon
moved by RDMA for the row (the bench fails if an RDMA row moved less than its
data, or an inline row any). Both daemons run in this process (--cpuprofile
profiles them; smbd and smbclient are other processes). Needs the samba and
smbclient packages.`,
		setup: func(fs *flag.FlagSet) func(context.Context, []string) error {
			size := fs.String("size", "1GiB", "size of the file got and put")
			files := fs.Int("files", 256, "number of 64 KiB files for the small-file rows")
			rounds := fs.Int("rounds", 3, "runs of each row over each transport (the best is reported)")
			asJSON := fs.Bool("json", false, "JSON lines output")
			cpuprof := fs.String("cpuprofile", "", "write a CPU profile of this process (both daemons) for the whole run to FILE")
			return func(ctx context.Context, args []string) error {
				if err := noArgs(args); err != nil {
					return err
				}
				n, err := sizeFlag("--size", *size, 64<<10)
				if err != nil {
					return err
				}
				if *files < 1 {
					return usageError(fmt.Sprintf("--files %d: want at least 1", *files))
				}
				if *rounds < 1 {
					return usageError(fmt.Sprintf("--rounds %d: want at least 1", *rounds))
				}
				out := newBenchOut(stdoutOf(ctx), stderrOf(ctx), *asJSON)
				defer out.flush()
				stop, err := startCPUProfile(*cpuprof)
				if err != nil {
					return err
				}
				defer stop()
				return benchSamba(ctx, out, int64(n), *files, *rounds)
			}
		},
	})
}

// sambaTools are the programs the bench runs and the Debian packages
// that have them.
var sambaTools = []struct{ name, pkg string }{
	{"smbd", "samba"}, {"pdbedit", "samba"}, {"smbclient", "smbclient"},
}

// lookTool finds a program in PATH or, for the daemons, in /usr/sbin
// (often not in a user's PATH).
func lookTool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	p := filepath.Join("/usr/sbin", name)
	if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
		return p, nil
	}
	return "", exec.ErrNotFound
}

// errMissingTool: smbd, pdbedit or smbclient is not installed.
var errMissingTool = errors.New("not installed")

type sambaBench struct {
	dir   string
	tools map[string]string
	lib   string

	mu    sync.Mutex
	procs []*exec.Cmd // process group leaders to stop at the end
}

// start runs cmd in a process group of its own, so that stop ends it
// and everything it forked (smbd's per-connection children).
func (b *sambaBench) start(cmd *exec.Cmd) error {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := cmd.Start(); err != nil {
		return err
	}
	b.procs = append(b.procs, cmd)
	return nil
}

// stopGroup ends cmd's process group: TERM, then KILL after 5 s; KILL
// again for children that outlived the leader.
func stopGroup(cmd *exec.Cmd, waited <-chan error) {
	pg := cmd.Process.Pid
	syscall.Kill(-pg, syscall.SIGTERM)
	select {
	case <-waited:
	case <-time.After(5 * time.Second):
		syscall.Kill(-pg, syscall.SIGKILL)
		<-waited
	}
	syscall.Kill(-pg, syscall.SIGKILL)
}

// freePort picks a free TCP port on 127.0.0.1 outside the ephemeral range
// (where smbclient's own connections could take it meanwhile).
func freePort() (int, error) {
	for range 100 {
		p := 20000 + mrand.IntN(10000)
		if l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p)); err == nil {
			l.Close()
			return p, nil
		}
	}
	return 0, errors.New("no free TCP port")
}

// sambaConf writes the bench's smbd configuration in dir (sambaconf)
// with READ/WRITE sizes within one SMB Direct message (smbclient, not
// knowing it rides SMB Direct, sends WRITEs as large as smbd offers,
// inline; docs/samba.md).
func (b *sambaBench) sambaConf(ctx context.Context, dir string, port int) (string, error) {
	return sambaconf.Write(ctx, sambaconf.Server{Dir: dir, Port: port, Pdbedit: b.tools["pdbedit"],
		Global: []string{"smb2 max read = 1048064", "smb2 max write = 1048064", "smb2 max trans = 1048064"}})
}

// startSmbd runs smbd with conf and env and waits until it serves: over
// SMB Direct (direct) the preload's line gives the address.
func (b *sambaBench) startSmbd(ctx context.Context, conf string, port int, env []string, direct bool) (string, error) {
	cmd := exec.Command(b.tools["smbd"], "-F", "--no-process-group", "--debug-stdout", "-s", conf)
	cmd.Env = env
	out := syncbuf.Buffer{Limit: 1 << 20} // smbd's log could grow for long
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := b.start(cmd); err != nil {
		return "", err
	}
	suffix := fmt.Sprintf(": TCP port %d is SMB Direct on ", port)
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		if !direct {
			c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
			if err == nil {
				c.Close()
				return "", nil
			}
			continue
		}
		for _, l := range strings.Split(out.String(), "\n") {
			if rest, ok := strings.CutPrefix(l, "smbdirect-preload: pid "); ok {
				if i := strings.Index(rest, suffix); i > 0 {
					return rest[i+len(suffix):], nil
				}
			}
		}
	}
	return "", fmt.Errorf("smbd did not start serving in 30 s:\n%s", out.String())
}

// sambaClient is one way of reaching smbd: smbclient's environment and
// port.
type sambaClient struct {
	env  []string
	port int
}

// run runs smbclient with cmds and returns the wall-clock time around
// the process. Any NT_STATUS in its output is an error: smbclient's exit
// status reflects only the last command.
func (b *sambaBench) run(ctx context.Context, c sambaClient, conf, cmds string) (time.Duration, error) {
	cmd := exec.Command(b.tools["smbclient"], "//127.0.0.1/share", "-p", strconv.Itoa(c.port),
		"-U", "root%secret", "-s", conf, "-c", cmds)
	cmd.Env = c.env
	cmd.Dir = b.dir
	out := syncbuf.Buffer{Limit: 1 << 20} // smbd's log could grow for long
	cmd.Stdout, cmd.Stderr = &out, &out
	t0 := time.Now()
	if err := b.start(cmd); err != nil {
		return 0, err
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	// Reaped here, so stop must not signal its group (the pid may be
	// reused).
	defer b.forget(cmd)
	var err error
	select {
	case err = <-waited:
	case <-ctx.Done():
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-waited
		return 0, ctx.Err()
	}
	el := time.Since(t0)
	if s := out.String(); err != nil || strings.Contains(s, "NT_STATUS_") {
		if len(s) > 2000 {
			s = s[:2000] + "..."
		}
		return 0, fmt.Errorf("smbclient -c %.80q: %v\n%s", cmds, err, s)
	}
	return el, nil
}

// forget drops an ended process from the ones stop ends.
func (b *sambaBench) forget(cmd *exec.Cmd) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i, p := range b.procs {
		if p == cmd {
			b.procs = append(b.procs[:i], b.procs[i+1:]...)
			return
		}
	}
}

func (b *sambaBench) stop() {
	b.mu.Lock()
	procs := b.procs
	b.procs = nil
	b.mu.Unlock()
	for _, cmd := range procs {
		waited := make(chan error, 1)
		go func() { waited <- cmd.Wait() }()
		stopGroup(cmd, waited)
	}
}

func benchSamba(ctx context.Context, out *benchOut, size int64, files, rounds int) (err error) {
	b := &sambaBench{tools: map[string]string{}}
	// Interrupted (Ctrl-C): that is the error, not what it broke.
	defer func() {
		if err != nil && ctx.Err() != nil {
			err = ctx.Err()
		}
	}()
	for _, t := range sambaTools {
		p, err := lookTool(t.name)
		if err != nil {
			return fmt.Errorf("bench samba: no %s: install the %s package (apt-get install %s): %w", t.name, t.pkg, t.pkg, errMissingTool)
		}
		b.tools[t.name] = p
	}
	exe, _ := os.Executable()
	if b.lib, err = findPreload(exe, stderrOf(ctx)); err != nil {
		return err
	}
	if b.dir, err = os.MkdirTemp("", "smbdirect-bench-samba-"); err != nil {
		return err
	}
	defer os.RemoveAll(b.dir)

	// The two ends' daemons, each on a private socket.
	var daemons [2]*server.Server
	for i, name := range []string{"server.sock", "client.sock"} {
		d, err := server.Listen(server.Config{Socket: filepath.Join(b.dir, name), SMBD: benchProvider()})
		if err != nil {
			return err
		}
		served := make(chan struct{})
		go func() {
			defer close(served)
			d.Serve(context.Background())
		}()
		defer func() {
			d.Close()
			<-served
		}()
		daemons[i] = d
	}
	sd, cd := daemons[0], daemons[1]
	// Before the daemons close: smbd and smbclient end with their
	// connections, not because the daemons went away.
	defer b.stop()

	out.progress("samba: starting smbd over SMB Direct and over TCP")
	rdmaPort, err := freePort()
	if err != nil {
		return err
	}
	conf, err := b.sambaConf(ctx, filepath.Join(b.dir, "smbdirect"), rdmaPort)
	if err != nil {
		return err
	}
	addr, err := b.startSmbd(ctx, conf, rdmaPort, programEnv(os.Environ(), b.lib, map[string]string{
		"SMBDIRECT_SOCKET": sd.Addr(), "SMBDIRECT_LISTEN": "127.0.0.1:0", "SMBDIRECT_PORT": strconv.Itoa(rdmaPort),
		"SMBDIRECT_CHANNEL": "1", "SMBDIRECT_DIAL": ""}), true)
	if err != nil {
		return err
	}
	tcpPort, err := freePort()
	if err != nil {
		return err
	}
	tconf, err := b.sambaConf(ctx, filepath.Join(b.dir, "tcp"), tcpPort)
	if err != nil {
		return err
	}
	if _, err := b.startSmbd(ctx, tconf, tcpPort, os.Environ(), false); err != nil {
		return err
	}

	cconf, err := sambaconf.WriteClient(filepath.Join(b.dir, "client"))
	if err != nil {
		return err
	}
	ours := func(channel string) sambaClient {
		return sambaClient{port: rdmaPort, env: programEnv(os.Environ(), b.lib, map[string]string{
			"SMBDIRECT_SOCKET": cd.Addr(), "SMBDIRECT_CHANNEL": channel, "SMBDIRECT_LISTEN": "", "SMBDIRECT_PORT": "",
			"SMBDIRECT_DIAL": fmt.Sprintf("127.0.0.1:%d=%s", rdmaPort, addr)})}
	}
	rdma, inline := ours("1"), ours("0")
	tcp := sambaClient{port: tcpPort, env: os.Environ()}

	// The local files: big.bin of size, small.bin of 64 KiB, both
	// pseudo-random (nothing on the way compresses, but no need for
	// crypto/rand's cost for a GiB).
	out.progress("samba: writing a %s file", humanBytes(float64(size)))
	if err := writeRandomFile(ctx, filepath.Join(b.dir, "big.bin"), size); err != nil {
		return err
	}
	const small = 64 << 10
	if err := writeRandomFile(ctx, filepath.Join(b.dir, "small.bin"), small); err != nil {
		return err
	}

	session := map[*sambaClient]time.Duration{}
	out.progress("samba: session setup")
	for _, c := range []*sambaClient{&rdma, &inline, &tcp} {
		// The faster of two: the first run may pay for cold caches.
		for range 2 {
			d, err := b.run(ctx, *c, cconf, "pwd")
			if err != nil {
				return err
			}
			if s, ok := session[c]; !ok || d < s {
				session[c] = d
			}
		}
	}
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	out.add(benchResult{Test: "samba_session", Ours: ms(session[&rdma]), TCP: ms(session[&tcp]), Unit: "ms"})

	// rate runs cmds with c and returns count units per second of the
	// time less c's session; the RDMA bytes of the client's daemon too.
	rate := func(c *sambaClient, cmds string, count float64) (float64, rdmaMoved, error) {
		before := cd.Stats()
		d, err := b.run(ctx, *c, cconf, cmds)
		if err != nil {
			return 0, rdmaMoved{}, err
		}
		after := cd.Stats()
		m := rdmaMoved{after.ClientRDMAReadBytes + after.ClientRDMAWriteBytes - before.ClientRDMAReadBytes - before.ClientRDMAWriteBytes,
			after.ClientChannelInline - before.ClientChannelInline}
		// Not below a tenth of the whole: a tiny --size is within the
		// session's noise.
		d = max(d-session[c], d/10)
		return count / d.Seconds(), m, nil
	}
	mib := float64(size) / (1 << 20)
	for _, row := range []struct {
		name string
		c    *sambaClient
		cmds string
	}{
		// put first: get reads the file put made.
		{"samba_put_rdma", &rdma, "put big.bin big.bin"},
		{"samba_get_rdma", &rdma, "get big.bin /dev/null"},
		{"samba_put_inline", &inline, "put big.bin big.bin"},
		{"samba_get_inline", &inline, "get big.bin /dev/null"},
	} {
		var v, tv float64
		var moved int64
		for r := range rounds {
			out.progress("%s: over SMB Direct (round %d of %d)", row.name, r+1, rounds)
			x, m, err := rate(row.c, row.cmds, mib)
			if err != nil {
				return fmt.Errorf("%s: %w", row.name, err)
			}
			if err := checkRDMA(row.name, row.c == &rdma, m, size); err != nil {
				return err
			}
			v, moved = max(v, x), m.bytes
			out.progress("%s: over TCP", row.name)
			if x, _, err = rate(&tcp, row.cmds, mib); err != nil {
				return fmt.Errorf("%s: tcp: %w", row.name, err)
			}
			tv = max(tv, x)
		}
		out.add(benchResult{Test: row.name, MsgSize: int(size), Ours: v, TCP: tv, Unit: "MiB/s", RDMABytes: moved})
	}

	var puts, gets strings.Builder
	for i := range files {
		fmt.Fprintf(&puts, "put small.bin s%d;", i)
		fmt.Fprintf(&gets, "get s%d /dev/null;", i)
	}
	for _, row := range []struct{ name, cmds string }{{"samba_small_put", puts.String()}, {"samba_small_get", gets.String()}} {
		var v, tv float64
		var moved int64
		for r := range rounds {
			out.progress("%s: over SMB Direct (round %d of %d)", row.name, r+1, rounds)
			x, m, err := rate(&rdma, row.cmds, float64(files))
			if err != nil {
				return fmt.Errorf("%s: %w", row.name, err)
			}
			if err := checkRDMA(row.name, true, m, int64(files)*small); err != nil {
				return err
			}
			v, moved = max(v, x), m.bytes
			out.progress("%s: over TCP", row.name)
			if x, _, err = rate(&tcp, row.cmds, float64(files)); err != nil {
				return fmt.Errorf("%s: tcp: %w", row.name, err)
			}
			tv = max(tv, x)
		}
		out.add(benchResult{Test: row.name, MsgSize: small, Ours: v, TCP: tv, Unit: "ops/s", RDMABytes: moved})
	}
	return nil
}

// errNotRDMA: a row did not move its data the way it says.
var errNotRDMA = errors.New("the RDMA counters do not match the row")

// rdmaMoved is what the client's daemon did for a row: bytes moved by
// RDMA and READ/WRITE requests it left inline.
type rdmaMoved struct{ bytes, inline int64 }

// channelThreshold is smb2rdma's default Threshold: READs and WRITEs
// below it stay inline (smbclient's put of 1 GiB ends with a 1 KiB WRITE).
const channelThreshold = 4096

// checkRDMA: an RDMA row moved its data by RDMA but for requests under
// the channel's threshold; an inline row moved none.
func checkRDMA(name string, rdma bool, m rdmaMoved, size int64) error {
	if rdma && (m.bytes > size || m.bytes+m.inline*(channelThreshold-1) < size) || !rdma && m.bytes != 0 {
		return fmt.Errorf("%s: the client's daemon moved %d bytes by RDMA and left %d requests inline for %d bytes of data: %w",
			name, m.bytes, m.inline, size, errNotRDMA)
	}
	return nil
}

// writeRandomFile writes size pseudo-random bytes to path.
func writeRandomFile(ctx context.Context, path string, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	chunk := make([]byte, 1<<20)
	r := mrand.NewChaCha8([32]byte{1})
	for off := int64(0); off < size; off += int64(len(chunk)) {
		if ctx.Err() != nil {
			f.Close()
			return ctx.Err()
		}
		r.Read(chunk)
		if _, err := f.Write(chunk[:min(int64(len(chunk)), size-off)]); err != nil {
			f.Close()
			return err
		}
	}
	return f.Close()
}
