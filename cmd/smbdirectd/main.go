//go:build linux

// Command smbdirectd is the SMB Direct daemon: it owns SMB Direct
// connections and hands client processes ordinary stream fds carrying
// SMB2 PDUs, keeping the connections alive while the clients block. See
// docs/smbdirectd.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/smbdirect/smbdirect/internal/cli"
	"github.com/smbdirect/smbdirect/internal/ctl"
	"github.com/smbdirect/smbdirect/iwarp"
	"github.com/smbdirect/smbdirect/rdma"
	"github.com/smbdirect/smbdirect/smbd"
	"github.com/smbdirect/smbdirect/smbdirectd/server"
	"github.com/smbdirect/smbdirect/verbs"
)

const usage = `smbdirectd: the SMB Direct daemon

usage: smbdirectd [flags]
       smbdirectd --version

smbdirectd listens on a Unix socket. A client (the Go package
github.com/smbdirect/smbdirect/smbdirectd, or the C library in clib/) asks
it to connect to an SMB Direct server or to accept SMB Direct connections;
for each connection it receives an ordinary stream socket fd on which it
reads and writes SMB2 PDUs with their 4-byte Direct TCP header, exactly as
on TCP. The fd works with poll/epoll and survives fork and exec. While the
client blocks, the daemon keeps the connection alive (keepalives, credits,
receive buffers). RDMA transfers of file ranges are requested over the
control socket with the file's fd, so the data never passes through the
client. SIGTERM or SIGINT disconnects every peer cleanly and exits.

flags:
`

// maxSocketPath is the longest Unix socket path: sun_path holds 108 bytes
// with the terminating NUL.
const maxSocketPath = 107

type options struct {
	socket        string
	mode          string
	allowUIDs     string
	allowGIDs     string
	maxConns      int
	maxRegistered string
	dialTimeout   time.Duration
	keepalive     time.Duration
	crc           bool
	provider      string
	device        string
	metrics       string
	logLevel      string
	logJSON       bool
}

// usageError is a bad command line: exit status 2.
type usageError string

func (e usageError) Error() string { return string(e) }

// stdout receives --help and --version (a variable for the tests).
var stdout io.Writer = os.Stdout

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stderr, nil)
	stop()
	os.Exit(exitCode(err, os.Stderr))
}

// exitCode prints err once, on one line, with one "smbdirectd:" prefix
// (the daemon package's errors carry their own), and maps it to the exit
// status: 2 for usage errors, 1 for others.
func exitCode(err error, stderr io.Writer) int {
	if err == nil {
		return 0
	}
	msg := err.Error()
	if !strings.HasPrefix(msg, "smbdirectd: ") {
		msg = "smbdirectd: " + msg
	}
	fmt.Fprintln(stderr, msg)
	var ue usageError
	if errors.As(err, &ue) {
		return 2
	}
	return 1
}

// run runs the daemon until ctx ends. ready, if not nil, receives the
// server and the metrics address once listening (for tests).
func run(ctx context.Context, args []string, stderr io.Writer, ready func(*server.Server, string)) error {
	var o options
	fs := flag.NewFlagSet("smbdirectd", flag.ContinueOnError)
	// The flag package would print a parse error above the usage; it is
	// printed once, as the one line of a usage error.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	fs.StringVar(&o.socket, "socket", ctl.DefaultSocket, "control socket `path`; its directory is created")
	fs.StringVar(&o.mode, "socket-mode", "0660", "permission bits of the control socket (octal)")
	fs.StringVar(&o.allowUIDs, "allow-uid", "", "comma-separated user IDs allowed besides root and the daemon's own user (checked by SO_PEERCRED)")
	fs.StringVar(&o.allowGIDs, "allow-gid", "", "comma-separated group IDs whose members are allowed (primary or supplementary group)")
	fs.IntVar(&o.maxConns, "max-conns", 64, "SMB Direct connections one client may hold")
	fs.StringVar(&o.maxRegistered, "max-registered", "1GiB", "bytes one client may have registered for RDMA at once (units: KiB, MiB, GiB)")
	fs.DurationVar(&o.dialTimeout, "dial-timeout", 30*time.Second, "bound on connecting and negotiating when the client gives none")
	fs.DurationVar(&o.keepalive, "keepalive", 120*time.Second, "SMB Direct keepalive interval (MS-SMBD default 120s); a silent peer is dropped after twice this")
	fs.BoolVar(&o.crc, "crc", false, "ask peers for MPA CRC32c on iWARP connections (costs throughput; TCP has its own checksum)")
	fs.StringVar(&o.provider, "provider", "iwarp", "RDMA `provider`: iwarp (embedded soft-iWARP over TCP) or verbs (the kernel's RDMA devices through rdma-core; needs a build with -tags verbs)")
	fs.StringVar(&o.device, "device", "", "RDMA device `name` for --provider verbs (e.g. rxe0, siw0; default: the only one)")
	fs.StringVar(&o.metrics, "metrics", "", "serve Prometheus metrics on `addr` (host:port, e.g. 127.0.0.1:9645); off by default")
	fs.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.BoolVar(&o.logJSON, "log-json", false, "log JSON lines instead of text")
	showVersion := fs.Bool("version", false, "print the version and exit")
	for _, a := range args {
		if a == "--" {
			break
		}
		if a == "-h" || a == "--help" || a == "-help" {
			fmt.Fprint(stdout, usage)
			cli.PrintFlags(stdout, fs)
			return nil
		}
	}
	if err := fs.Parse(args); err != nil {
		return usageError(fmt.Sprintf("%v (see smbdirectd --help)", err))
	}
	if *showVersion {
		fmt.Fprintln(stdout, cli.Version("smbdirectd"))
		return nil
	}
	if fs.NArg() != 0 {
		return usageError(fmt.Sprintf("unexpected argument %q (smbdirectd takes only flags)", fs.Arg(0)))
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		return usageError(fmt.Sprintf("--log-level %q: want debug, info, warn or error", o.logLevel))
	}
	mode, err := strconv.ParseUint(o.mode, 8, 32)
	if err != nil || mode > 0o777 {
		return usageError(fmt.Sprintf("--socket-mode %q: want octal permission bits like 0660", o.mode))
	}
	switch {
	case o.socket == "":
		return usageError("--socket: want a path")
	case len(o.socket) > maxSocketPath:
		return usageError(fmt.Sprintf("--socket: the path is %d bytes, too long for a Unix socket (at most %d)", len(o.socket), maxSocketPath))
	case o.maxConns < 1:
		return usageError(fmt.Sprintf("--max-conns %d: want at least 1", o.maxConns))
	case o.keepalive <= 0:
		return usageError(fmt.Sprintf("--keepalive %v: want a positive interval", o.keepalive))
	case o.dialTimeout <= 0:
		return usageError(fmt.Sprintf("--dial-timeout %v: want a positive duration", o.dialTimeout))
	}
	uids, err := ints(o.allowUIDs)
	if err != nil {
		return usageError(fmt.Sprintf("--allow-uid: %v", err))
	}
	gids, err := ints(o.allowGIDs)
	if err != nil {
		return usageError(fmt.Sprintf("--allow-gid: %v", err))
	}
	maxReg, err := parseBytes(o.maxRegistered)
	if err != nil {
		return usageError(fmt.Sprintf("--max-registered: %v", err))
	}
	switch o.provider {
	case "iwarp":
		if o.device != "" {
			return usageError("--device is for --provider verbs")
		}
	case verbs.Name:
		if o.crc {
			return usageError("--crc is for --provider iwarp (a kernel iWARP device's MPA CRC is its own setting)")
		}
		if !verbs.Built {
			return verbs.ErrNotBuilt
		}
	default:
		return usageError(fmt.Sprintf("--provider %q: want iwarp or verbs", o.provider))
	}
	hopts := &slog.HandlerOptions{Level: level}
	var log *slog.Logger
	if o.logJSON {
		log = slog.New(slog.NewJSONHandler(stderr, hopts))
	} else {
		log = slog.New(slog.NewTextHandler(stderr, hopts))
	}
	var prov rdma.Provider = iwarp.New(iwarp.Config{CRC: o.crc, Logger: log})
	if o.provider == verbs.Name {
		prov = verbs.New(verbs.Config{Device: o.device, Logger: log})
	}
	cfg := server.Config{Socket: o.socket, SocketMode: os.FileMode(mode), AllowUIDs: uids, AllowGIDs: gids,
		MaxConnsPerClient: o.maxConns, MaxRegisteredPerClient: maxReg, DialTimeout: o.dialTimeout, Logger: log,
		SMBD: &smbd.Config{Provider: prov, Logger: log, KeepaliveInterval: o.keepalive}}
	s, err := server.Listen(cfg)
	if err != nil {
		return err
	}
	metricsAddr := ""
	if o.metrics != "" {
		ln, err := net.Listen("tcp", o.metrics)
		if err != nil {
			s.Close()
			return fmt.Errorf("--metrics: %w", err)
		}
		metricsAddr = ln.Addr().String()
		srv := &http.Server{Handler: metricsHandler(s), ReadHeaderTimeout: 5 * time.Second}
		go srv.Serve(ln)
		defer srv.Close()
		log.Info("smbdirectd: metrics", "addr", metricsAddr)
	}
	if ready != nil {
		ready(s, metricsAddr)
	}
	return s.Serve(ctx)
}

func ints(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("%q is not an ID", f)
		}
		out = append(out, n)
	}
	return out, nil
}

func parseBytes(s string) (int64, error) {
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		m      int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40}} {
		if v, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = v, u.m
			break
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("%q: want a positive size like 512MiB", s)
	}
	return n * mult, nil
}

// metricsHandler serves the daemon's counters in the Prometheus text
// format.
func metricsHandler(s *server.Server) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/metrics" {
			http.NotFound(w, r)
			return
		}
		st := s.Stats()
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		for _, m := range []struct {
			name, kind, help string
			v                int64
		}{
			{"smbdirectd_clients", "gauge", "Client processes connected to the control socket.", st.Clients},
			{"smbdirectd_connections", "gauge", "SMB Direct connections held.", st.Conns},
			{"smbdirectd_connections_total", "counter", "SMB Direct connections made or accepted.", st.ConnsTotal},
			{"smbdirectd_sent_bytes_total", "counter", "SMB2 PDU bytes sent to peers in SMB Direct messages (data moved by an RDMA channel is counted apart).", st.BytesSent},
			{"smbdirectd_received_bytes_total", "counter", "SMB2 PDU bytes received from peers in SMB Direct messages (data moved by an RDMA channel is counted apart).", st.BytesReceived},
			{"smbdirectd_rdma_written_bytes_total", "counter", "Bytes RDMA-written to peers.", st.RDMAWritten},
			{"smbdirectd_rdma_read_bytes_total", "counter", "Bytes RDMA-read from peers.", st.RDMARead},
			{"smbdirectd_registered_bytes", "gauge", "Bytes registered for peers' RDMA access.", st.Registered},
			{"smbdirectd_errors_total", "counter", "Failed requests and connections.", st.Errors},
			{"smbdirectd_clients_refused_total", "counter", "Clients refused by the credential check.", st.Refused},
			{"smbdirectd_server_rdma_read_bytes_total", "counter", "WRITE data the server-side RDMA channel RDMA-read from peers.", st.ServerRDMAReadBytes},
			{"smbdirectd_server_rdma_write_bytes_total", "counter", "READ data the server-side RDMA channel RDMA-wrote to peers.", st.ServerRDMAWriteBytes},
			{"smbdirectd_server_rdma_reads_total", "counter", "WRITE requests whose data the server-side RDMA channel RDMA-read.", st.ServerRDMAReads},
			{"smbdirectd_server_rdma_writes_total", "counter", "READ responses whose data the server-side RDMA channel RDMA-wrote.", st.ServerRDMAWrites},
			{"smbdirectd_server_channel_passthrough_total", "counter", "READ/WRITE with an RDMA channel the server-side channel could not rewrite and passed on.", st.ServerChannelPassthrough},
			{"smbdirectd_client_rdma_reads_total", "counter", "READ requests the client-side RDMA channel sent with an RDMA channel.", st.ClientRDMAReads},
			{"smbdirectd_client_rdma_read_bytes_total", "counter", "READ data peers RDMA-wrote for the client-side RDMA channel.", st.ClientRDMAReadBytes},
			{"smbdirectd_client_rdma_writes_total", "counter", "WRITE requests the client-side RDMA channel sent with an RDMA channel.", st.ClientRDMAWrites},
			{"smbdirectd_client_rdma_write_bytes_total", "counter", "WRITE data peers RDMA-read from the client-side RDMA channel.", st.ClientRDMAWriteBytes},
			{"smbdirectd_client_channel_inline_total", "counter", "READ/WRITE requests the client-side RDMA channel left inline (signed, compound, small, too large).", st.ClientChannelInline},
			// Process-wide, so a leak per connection shows (each connection runs goroutines of its own).
			{"smbdirectd_goroutines", "gauge", "Goroutines of the daemon process.", int64(runtime.NumGoroutine())},
		} {
			fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n%s %d\n", m.name, m.help, m.name, m.kind, m.name, m.v)
		}
	})
}
