//go:build linux

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/smbdirect/smbdirect/clib"
	"github.com/smbdirect/smbdirect/iwarp"
	"github.com/smbdirect/smbdirect/smbd"
	"github.com/smbdirect/smbdirect/smbdirectd/client"
	"github.com/smbdirect/smbdirect/smbdirectd/server"
)

func init() {
	register(&command{
		name:  "exec",
		usage: "[--socket PATH] [--listen ADDR] [--port N] [--no-rdma-channel] [--dial HOST[:PORT][=RDMAHOST:RDMAPORT]]... -- PROGRAM [ARGS...]",
		short: "run an unmodified TCP SMB server (smbd) or client (smbclient) over SMB Direct",
		long: `Runs PROGRAM with libsmbdirect-preload.so in LD_PRELOAD (appended to one already
set). When PROGRAM listens on TCP port --port, the library asks smbdirectd to
listen for SMB Direct on --listen instead, and PROGRAM's accept() returns the
daemon's stream fds: SMB2 PDUs framed as on TCP. Its forked children serve
them as they would TCP connections. Other sockets are left alone. The TCP port
itself is not listened on. With the RDMA channel (the default) the daemon does
the RDMA READ/WRITE of SMB2 READ and WRITE requests for PROGRAM.

Example, Samba's smbd (SMB Direct on port 5445 for Linux cifs.ko, mount -o rdma):

    smbdirect exec -- smbd -F --no-process-group -s /etc/samba/smb.conf

With --dial (repeatable), PROGRAM's outgoing TCP connections become SMB Direct
ones: a connect() to an address HOST resolves to, on PORT (default 445), is
dialed by the daemon to RDMAHOST:RDMAPORT (default HOST:5445) and PROGRAM's
socket becomes the stream fd. PROGRAM resolves HOST itself, as over TCP; this
command resolves HOST (numbers as they are, names with the system resolver:
/etc/hosts, DNS) when it starts and hands the library every address found,
so give PROGRAM the same name or one of those addresses. RDMAHOST is
resolved by the daemon. Other connections are TCP as before. With the RDMA
channel (the default; --no-rdma-channel turns it off) the daemon sends PROGRAM's
unsigned READ/WRITE requests with an RDMA channel and does the RDMA; the server
must understand it (ksmbd, smbd under smbdirect exec). Example, Samba's
smbclient against a server with SMB Direct on 5445:

    smbdirect exec --dial fileserver -- smbclient //fileserver/share -U user

If no smbdirectd answers on --socket, one runs inside this process while
PROGRAM runs (one line on stderr says so) and stops when it exits, or, if
another smbdirect exec started meanwhile uses it, when that one's clients
have ended too. Of several started at once, one runs the daemon.
Signals (INT, TERM, HUP, QUIT, USR1, USR2) are passed on to PROGRAM; the exit
status is PROGRAM's, 128+N if signal N killed it, 127 if it cannot be started.

The library is, in this order: $SMBDIRECT_PRELOAD; libsmbdirect-preload.so next
to this binary or in ../lib/smbdirect/ from it; else it is built with cc from
the C sources in this binary into the user cache directory
($XDG_CACHE_HOME/smbdirect, keyed by a hash of the sources; one line on stderr
says so when it builds).

PROGRAM's environment gets SMBDIRECT_SOCKET, SMBDIRECT_LISTEN, SMBDIRECT_PORT,
SMBDIRECT_CHANNEL (1 or 0) and SMBDIRECT_DIAL (IP:PORT=RDMAADDR,...), which the
library reads (docs/samba.md). The library
prints one line on stderr per listener it takes over:
    smbdirect-preload: pid N: TCP port P is SMB Direct on ADDR`,
		setup: func(fs *flag.FlagSet) func(context.Context, []string) error {
			var o execOptions
			fs.StringVar(&o.socket, "socket", client.DefaultSocket, "smbdirectd's control socket `path`")
			fs.StringVar(&o.listen, "listen", fmt.Sprintf(":%d", smbd.PortIWARP), "SMB Direct address to listen on (host:port; port 0 picks one)")
			fs.IntVar(&o.port, "port", 445, "the TCP port of PROGRAM that becomes SMB Direct")
			fs.BoolVar(&o.noChannel, "no-rdma-channel", false, "no RDMA channels: PROGRAM's listener sees READ/WRITE as the client sent them, and its --dial connections send them inline")
			fs.Func("dial", "`HOST[:PORT][=RDMAHOST:RDMAPORT]`: PROGRAM's TCP connections to HOST:PORT (445) go over SMB Direct to RDMAHOST:RDMAPORT (HOST:5445); repeatable", func(v string) error {
				o.dial = append(o.dial, v)
				return nil
			})
			return func(ctx context.Context, args []string) error { return runExec(ctx, o, args) }
		},
	})
}

type execOptions struct {
	socket, listen string
	port           int
	noChannel      bool
	dial           []string // --dial as given
}

// maxSocketPath: sun_path holds 108 bytes with the terminating NUL.
const maxSocketPath = 107

// forwarded are the signals passed on to PROGRAM.
var forwarded = []os.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2}

func runExec(ctx context.Context, o execOptions, args []string) error {
	switch {
	case len(args) == 0:
		return usageError("give the PROGRAM to run (smbdirect exec [flags] -- PROGRAM [ARGS...])")
	case o.port < 1 || o.port > 65535:
		return usageError(fmt.Sprintf("--port %d: want a TCP port (1-65535)", o.port))
	case o.socket == "":
		return usageError("--socket: want a path")
	}
	if _, p, err := net.SplitHostPort(o.listen); err != nil {
		return usageError(fmt.Sprintf("--listen %q: want host:port", o.listen))
	} else if n, err := strconv.Atoi(p); err != nil || n < 0 || n > 65535 {
		return usageError(fmt.Sprintf("--listen %q: bad port", o.listen))
	}
	dialEnv, err := dialList(ctx, o.dial)
	if err != nil {
		return err
	}
	socket, err := filepath.Abs(o.socket)
	if err != nil {
		return err
	}
	if len(socket) > maxSocketPath {
		return usageError(fmt.Sprintf("--socket: the path is %d bytes, too long for a Unix socket (at most %d)", len(socket), maxSocketPath))
	}
	stderr := stderrOf(ctx)
	exe, _ := os.Executable()
	lib, err := findPreload(exe, stderr)
	if err != nil {
		return err
	}
	stop, err := ensureDaemon(ctx, socket, filepath.Base(args[0]), stderr)
	if err != nil {
		return err
	}
	defer stop()

	channel := "1"
	if o.noChannel {
		channel = "0"
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = programEnv(os.Environ(), lib, map[string]string{"SMBDIRECT_SOCKET": socket,
		"SMBDIRECT_LISTEN": o.listen, "SMBDIRECT_PORT": strconv.Itoa(o.port), "SMBDIRECT_CHANNEL": channel,
		"SMBDIRECT_DIAL": dialEnv})
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, stdoutOf(ctx), stderr
	// Signals arriving before PROGRAM starts wait in the channel.
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, forwarded...)
	defer signal.Stop(sigs)
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(stderr, "smbdirect: exec: %v\n", err)
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist) {
			return exitStatus(127)
		}
		return exitStatus(126)
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	for {
		select {
		case s := <-sigs:
			cmd.Process.Signal(s)
		case err := <-waited:
			return programStatus(cmd, err)
		}
	}
}

// programStatus maps how PROGRAM ended to our exit: its status, or
// 128+N for signal N, as a shell reports it.
func programStatus(cmd *exec.Cmd, err error) error {
	ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus)
	switch {
	case ok && ws.Signaled():
		return exitStatus(128 + int(ws.Signal()))
	case ok && ws.Exited() && ws.ExitStatus() != 0:
		return exitStatus(ws.ExitStatus())
	case err != nil && !ok:
		return err
	}
	return nil
}

// programEnv is env with lib appended to LD_PRELOAD and vars set.
func programEnv(env []string, lib string, vars map[string]string) []string {
	out := make([]string, 0, len(env)+len(vars)+1)
	preload := lib
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		if k == "LD_PRELOAD" {
			if v = strings.TrimSpace(v); v != "" {
				preload = v + ":" + lib
			}
			continue
		}
		if _, ok := vars[k]; ok {
			continue
		}
		out = append(out, kv)
	}
	out = append(out, "LD_PRELOAD="+preload)
	for _, k := range []string{"SMBDIRECT_SOCKET", "SMBDIRECT_LISTEN", "SMBDIRECT_PORT", "SMBDIRECT_CHANNEL", "SMBDIRECT_DIAL"} {
		if v, ok := vars[k]; ok {
			out = append(out, k+"="+v)
		}
	}
	return out
}

// findPreload returns the preload library's absolute path (see the help
// text for the order), exe being this binary.
func findPreload(exe string, stderr io.Writer) (string, error) {
	if p := os.Getenv("SMBDIRECT_PRELOAD"); p != "" {
		st, err := os.Stat(p)
		if err != nil {
			return "", fmt.Errorf("SMBDIRECT_PRELOAD: %w", err)
		}
		if !st.Mode().IsRegular() {
			return "", fmt.Errorf("SMBDIRECT_PRELOAD: %s is not a file", p)
		}
		return filepath.Abs(p)
	}
	if exe != "" {
		dir := filepath.Dir(exe)
		for _, p := range []string{filepath.Join(dir, clib.PreloadName), filepath.Join(dir, "..", "lib", "smbdirect", clib.PreloadName)} {
			if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
				return filepath.Abs(p)
			}
		}
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("no %s installed, and nowhere to build it: %w (set SMBDIRECT_PRELOAD)", clib.PreloadName, err)
	}
	p, built, err := clib.BuildPreload(filepath.Join(cache, "smbdirect"))
	if err != nil {
		return "", fmt.Errorf("no %s installed, and building it failed: %w (set SMBDIRECT_PRELOAD)", clib.PreloadName, err)
	}
	if built {
		fmt.Fprintf(stderr, "smbdirect: built %s (none installed)\n", p)
	}
	return p, nil
}

// ensureDaemon makes sure an smbdirectd answers on socket: one that does
// is used; otherwise one runs in this process until stop is called. A
// daemon in this process, rather than a child, cannot outlive us.
func ensureDaemon(ctx context.Context, socket, program string, stderr io.Writer) (stop func(), err error) {
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	c, err := client.Dial(dctx, socket)
	cancel()
	if err == nil {
		c.Close()
		return func() {}, nil
	}
	// Its warnings and errors only; the program's output is what matters.
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	s, err := server.Listen(server.Config{Socket: socket, Logger: log,
		SMBD: &smbd.Config{Provider: iwarp.New(iwarp.Config{Logger: log}), Logger: log}})
	if errors.Is(err, server.ErrDaemonRunning) {
		// Another smbdirect exec (or smbdirectd) started one since our
		// dial: use it. It may still be between its lock and its bind.
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		for {
			c, derr := client.Dial(dctx, socket)
			if derr == nil {
				c.Close()
				return func() {}, nil
			}
			select {
			case <-dctx.Done():
				return nil, fmt.Errorf("%w, but it does not answer: %v", err, derr)
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(stderr, "smbdirect: no smbdirectd answers on %s: running one in this process while %s runs\n", socket, program)
	// Not ctx: a SIGINT or SIGTERM is PROGRAM's to act on, and the daemon
	// serves it until it has exited.
	sctx, scancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := s.Serve(sctx); err != nil {
			log.Error("smbdirect: the daemon stopped", "err", err)
		}
	}()
	return func() {
		// Another smbdirect exec may have found this daemon and be
		// using it: serve its clients until they have gone too.
		if n := s.Stats().Clients; n > 0 {
			fmt.Fprintf(stderr, "smbdirect: %s has exited; the daemon in this process serves %d more client(s) until they end\n", program, n)
			t := time.NewTicker(100 * time.Millisecond)
		wait:
			for s.Stats().Clients > 0 {
				select {
				case <-done: // the daemon stopped on its own
					break wait
				case <-t.C:
				}
			}
			t.Stop()
		}
		scancel()
		<-done
	}, nil
}

// dialList turns the --dial values into SMBDIRECT_DIAL: one
// "IP:PORT=RDMAADDR" per address HOST resolves to, comma-separated. The
// library matches connect()'s numeric address, so names are resolved
// here, once, as PROGRAM would resolve them (the system resolver).
func dialList(ctx context.Context, dials []string) (string, error) {
	var items []string
	for _, d := range dials {
		tcp, target, hasTarget := strings.Cut(d, "=")
		host, port := tcp, "445"
		if h, p, err := net.SplitHostPort(tcp); err == nil {
			host, port = h, p
		} else if strings.HasPrefix(tcp, "[") && strings.HasSuffix(tcp, "]") {
			host = tcp[1 : len(tcp)-1]
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return "", usageError(fmt.Sprintf("--dial %q: bad port %q", d, port))
		}
		if host == "" || strings.ContainsAny(host, ",=[]") {
			return "", usageError(fmt.Sprintf("--dial %q: want HOST[:PORT][=RDMAHOST:RDMAPORT]", d))
		}
		if !hasTarget {
			target = net.JoinHostPort(host, strconv.Itoa(smbd.PortIWARP))
		} else if h, p, err := net.SplitHostPort(target); err != nil || h == "" || strings.ContainsAny(target, ",=") {
			return "", usageError(fmt.Sprintf("--dial %q: want RDMAHOST:RDMAPORT after =", d))
		} else if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return "", usageError(fmt.Sprintf("--dial %q: bad port %q", d, p))
		}
		var ips []netip.Addr
		if a, err := netip.ParseAddr(host); err == nil {
			ips = []netip.Addr{a}
		} else {
			rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			ips, err = net.DefaultResolver.LookupNetIP(rctx, "ip", host)
			cancel()
			if err != nil {
				return "", fmt.Errorf("--dial %s: %w", d, err)
			}
		}
		for _, a := range ips {
			if a.Zone() != "" {
				continue // the library matches addresses without zones
			}
			items = append(items, net.JoinHostPort(a.Unmap().String(), port)+"="+target)
		}
	}
	return strings.Join(items, ","), nil
}
