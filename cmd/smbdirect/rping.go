package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"

	"github.com/smbdirect/smbdirect/internal/cli"
	"github.com/smbdirect/smbdirect/internal/rping"
	"github.com/smbdirect/smbdirect/rdma"
)

func init() {
	register(&command{
		name:  "rping",
		usage: "-s|-c [-a ADDR] [-p PORT] [-C COUNT] [-S SIZE] [-v] [-V] [-d] [--crc] [--provider iwarp|verbs] [--device NAME] [--json]",
		short: "an rdma-core rping-compatible peer over soft-iWARP",
		long: `Speaks rdma-core's rping protocol (two Sends, an RDMA Read and an RDMA Write per
ping) over the embedded soft-iWARP provider, so it works against Linux rping on a
siw or iWARP device in either role:

  smbdirect rping -s -a 127.0.0.1 -v          # server; Linux: rping -c -a HOST -V
  smbdirect rping -c -a HOST -C 10 -v -V      # client; Linux: rping -s -a HOST

The one-letter flags are rping's; each has a long name too. The server serves one
client and checks every ping against the pattern rping's client writes; -V on the
client compares the data that came back. The exit status is non-zero on any error
or mismatch; an interrupt (SIGINT) ends either side cleanly with its statistics.
--crc asks for MPA CRC32c (Linux siw honours the request).`,
		setup: func(fs *flag.FlagSet) func(context.Context, []string) error {
			server := fs.Bool("server", false, "server side")
			client := fs.Bool("client", false, "client side")
			addr := fs.String("addr", "", "`address` to connect to (client) or bind (server, default all)")
			port := fs.Int("port", rping.DefaultPort, "`port`")
			count := fs.Int("count", 0, "ping `count` (client; 0 = until interrupted)")
			size := fs.Int("size", rping.DefaultSize, fmt.Sprintf("ping data `size` (%d to %d)", rping.MinSize, rping.MaxSize))
			verbose := fs.Bool("verbose", false, "display ping data")
			validate := fs.Bool("validate", false, "validate ping data (client)")
			debug := fs.Bool("debug", false, "debug output on stderr")
			for _, a := range [][2]string{{"s", "server"}, {"c", "client"}, {"a", "addr"}, {"p", "port"}, {"C", "count"},
				{"S", "size"}, {"v", "verbose"}, {"V", "validate"}, {"d", "debug"}} {
				cli.Alias(fs, a[0], a[1])
			}
			crc := fs.Bool("crc", false, "ask for MPA CRC32c")
			choose := addProviderFlags(fs, crc, false)
			asJSON := fs.Bool("json", false, "print the run's statistics as JSON on stdout")
			return func(ctx context.Context, args []string) error {
				// Every check before any traffic, so a bad flag prints one
				// line and no statistics.
				if err := noArgs(args); err != nil {
					return err
				}
				if *server == *client {
					return usageError("give exactly one of -s (--server) and -c (--client)")
				}
				if *client && *addr == "" {
					return usageError("the client needs -a (--addr)")
				}
				if *server && *validate {
					return usageError("-V (--validate) is for the client: the server always checks the pattern")
				}
				if *server && *count != 0 {
					return usageError("-C (--count) is for the client: the server serves one client")
				}
				if *count < 0 {
					return usageError(fmt.Sprintf("-C (--count) %d: want 0 (until interrupted) or more", *count))
				}
				if *size < rping.MinSize || *size > rping.MaxSize {
					return usageError(fmt.Sprintf("-S (--size) %d: want %d to %d", *size, rping.MinSize, rping.MaxSize))
				}
				if *port < 0 || *port > 65535 || *client && *port == 0 {
					return usageError(fmt.Sprintf("-p (--port) %d: want 1 to 65535", *port))
				}
				pc, err := choose()
				if err != nil {
					return err
				}
				out, errw := stdoutOf(ctx), stderrOf(ctx)
				logger := slog.New(slog.DiscardHandler)
				if *debug {
					logger = slog.New(slog.NewTextHandler(errw, &slog.HandlerOptions{Level: slog.LevelDebug}))
				}
				opt := rping.Options{Count: *count, Size: *size, Validate: *validate, Logger: logger}
				if *verbose {
					opt.Verbose = out
				}
				pd, err := pc.open(logger, nil).NewPD()
				if err != nil {
					return err
				}
				hostport := net.JoinHostPort(*addr, strconv.Itoa(*port))
				var st rping.Stats
				if *client {
					opt.Addr = hostport
					st, err = rping.Client(ctx, pd, opt)
				} else {
					var ln rdma.Listener
					ln, err = pd.Listen(ctx, hostport, rdma.ListenConfig{})
					if err != nil {
						return err
					}
					defer ln.Close()
					fmt.Fprintf(errw, "rping: listening on %s\n", ln.Addr())
					st, err = rping.Serve(ctx, pd, ln, opt)
				}
				if ctx.Err() != nil && errors.Is(err, context.Canceled) && (*server || *count == 0) {
					err = nil // interrupted: the way every server (and an endless client) ends
				}
				if *asJSON {
					enc := json.NewEncoder(out)
					if e := enc.Encode(st); e != nil && err == nil {
						err = e
					}
				} else {
					fmt.Fprintf(errw, "rping: %d pings of %d bytes, %d validated, %d bytes RDMA read, %d written, CRC %v, %v\n",
						st.Pings, st.Size, st.Validated, st.BytesRead, st.BytesWritten, st.CRC, st.Duration.Round(1e6))
				}
				return err
			}
		},
	})
}

// The command's output streams travel in the context so tests can run
// commands in-process.
type streamsKey struct{}

type streams struct{ out, err io.Writer }

func withStreams(ctx context.Context, out, err io.Writer) context.Context {
	return context.WithValue(ctx, streamsKey{}, streams{out, err})
}

func stdoutOf(ctx context.Context) io.Writer {
	if s, ok := ctx.Value(streamsKey{}).(streams); ok {
		return s.out
	}
	return os.Stdout
}

func stderrOf(ctx context.Context) io.Writer {
	if s, ok := ctx.Value(streamsKey{}).(streams); ok {
		return s.err
	}
	return os.Stderr
}
