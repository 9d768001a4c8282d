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

	"github.com/smbdirect/smbdirect/internal/rping"
	"github.com/smbdirect/smbdirect/iwarp"
	"github.com/smbdirect/smbdirect/rdma"
)

func init() {
	register(&command{
		name:  "rping",
		usage: "-s|-c [-a addr] [-p port] [-C count] [-S size] [-v] [-V] [-d] [--crc] [--json]",
		short: "an rdma-core rping-compatible peer over soft-iWARP",
		long: `Speaks rdma-core's rping protocol (two Sends, an RDMA Read and an RDMA Write per
ping) over the embedded soft-iWARP provider, so it works against Linux rping on a
siw or iWARP device in either role:

  smbdirect rping -s -a 127.0.0.1 -V          # server; Linux: rping -c -a HOST -V
  smbdirect rping -c -a HOST -C 10 -v -V      # client; Linux: rping -s -a HOST

The server checks every ping against the pattern rping's client writes; -V on the
client compares the data that came back. The exit status is non-zero on any error
or mismatch. --crc asks for MPA CRC32c (Linux siw honours the request).`,
		setup: func(fs *flag.FlagSet) func(context.Context, []string) error {
			server := fs.Bool("s", false, "server side")
			client := fs.Bool("c", false, "client side")
			addr := fs.String("a", "", "address to connect to (client) or bind (server, default all)")
			port := fs.Int("p", rping.DefaultPort, "port")
			count := fs.Int("C", 0, "ping count (client; 0 = until interrupted)")
			size := fs.Int("S", rping.DefaultSize, fmt.Sprintf("ping data size (%d to %d)", rping.MinSize, rping.MaxSize))
			verbose := fs.Bool("v", false, "display ping data")
			validate := fs.Bool("V", false, "validate ping data (client)")
			debug := fs.Bool("d", false, "debug output on stderr")
			crc := fs.Bool("crc", false, "ask for MPA CRC32c")
			asJSON := fs.Bool("json", false, "print the run's statistics as JSON on stdout")
			return func(ctx context.Context, args []string) error {
				if len(args) > 0 {
					return usageError(fmt.Sprintf("unexpected argument %q", args[0]))
				}
				if *server == *client {
					return usageError("rping: give exactly one of -s and -c")
				}
				if *client && *addr == "" {
					return usageError("rping: the client needs -a")
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
				cfg := iwarp.Config{CRC: *crc, Logger: logger}
				pd, err := iwarp.New(cfg).NewPD()
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
				if errors.Is(err, context.Canceled) && *client && *count == 0 {
					err = nil // interrupted endless ping
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
