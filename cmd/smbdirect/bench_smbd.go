package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/smbdirect/smbdirect/internal/framing"
	"github.com/smbdirect/smbdirect/iwarp"
	"github.com/smbdirect/smbdirect/smbd"
)

func init() {
	registerSub("bench", "benchmarks, each side by side with plain TCP over loopback in the same run", &command{
		name:  "smbd",
		usage: "[--fpdu N] [--duration 2s] [--json] [--cpuprofile FILE]",
		short: "SMB Direct PDU stream and round trip vs plain TCP",
		long: `Streams Direct-TCP-framed PDUs through an SMB Direct connection over soft-iWARP on
127.0.0.1, read with io.ReadFull as SMB2 code does, and measures a 64-byte PDU
round trip; each next to the same traffic on a plain TCP connection, the two
taking turns in five slices of --duration/5, the median slice of each
reported. PDU streams run twice: with the
MS-SMBD default sizes (1364-byte messages, so a 1 MiB PDU is ~780 fragments) and
with large sizes negotiated between our own endpoints. The large stream runs
again with 1448-byte FPDUs (smbd_stream_large_fpdu1448), as Linux siw and iWARP
adapters send them on Ethernet; --fpdu N makes every row use FPDUs of at most N
bytes instead.`,
		setup: func(fs *flag.FlagSet) func(context.Context, []string) error {
			fpdu := fs.String("fpdu", "", "largest FPDU the senders send, in bytes (default: the MSS, plus a 1448-byte row)")
			dur := fs.Duration("duration", 2*time.Second, "time per measurement")
			asJSON := fs.Bool("json", false, "JSON lines output")
			cpuprof := fs.String("cpuprofile", "", "write a CPU profile of the whole run to FILE")
			return func(ctx context.Context, args []string) error {
				if err := noArgs(args); err != nil {
					return err
				}
				fixed := 0
				if *fpdu != "" {
					var err error
					if fixed, err = sizeFlag("--fpdu", *fpdu, 64); err != nil {
						return err
					}
					if fixed > 65536 {
						return usageError(fmt.Sprintf("--fpdu %d: an FPDU is at most 65536 bytes", fixed))
					}
				}
				if err := positive("--duration", *dur); err != nil {
					return err
				}
				out := newBenchOut(stdoutOf(ctx), stderrOf(ctx), *asJSON)
				defer out.flush()
				stop, err := startCPUProfile(*cpuprof)
				if err != nil {
					return err
				}
				defer stop()
				large := &smbd.Config{MaxSendSize: 65536, MaxReceiveSize: 65536, MaxFragmentedSize: 8 << 20, ReceiveCreditMax: 64}
				type row struct {
					name string
					cfg  *smbd.Config
					fpdu int
				}
				rows := []row{{"smbd_stream_default", &smbd.Config{}, fixed}, {"smbd_stream_large", large, fixed}}
				if fixed == 0 {
					// The default messages fit in one 1448-byte FPDU anyway.
					rows = append(rows, row{"smbd_stream_large_fpdu1448", large, realFPDU})
				}
				for _, c := range rows {
					const size = 1 << 20
					out.progress("%s", c.name)
					v, tv, err := interleave(*dur, func(d time.Duration) (float64, error) {
						return smbdStreamFPDU(ctx, c.cfg, c.fpdu, size, d)
					}, func(d time.Duration) (float64, error) {
						return tcpStream(size+4, d)
					})
					if err != nil {
						return fmt.Errorf("%s: %w", c.name, err)
					}
					out.add(benchResult{Test: c.name, MsgSize: size, Ours: v, TCP: tv, Unit: "MiB/s"})
				}
				out.progress("smbd_roundtrip")
				v, tv, err := interleave(*dur, func(d time.Duration) (float64, error) {
					return smbdRoundTripFPDU(ctx, fixed, 64, d)
				}, func(d time.Duration) (float64, error) {
					return tcpPingPong(68, d)
				})
				if err != nil {
					return err
				}
				out.add(benchResult{Test: "smbd_roundtrip", MsgSize: 64, Ours: v, TCP: tv, Unit: "us"})
				return nil
			}
		},
	})
}

func smbdPair(ctx context.Context, cfg *smbd.Config) (*smbd.Conn, *smbd.Conn, error) {
	return smbdPairFPDU(ctx, cfg, 0)
}

// smbdPairFPDU is smbdPair with the senders' largest FPDU set (0: the
// default).
func smbdPairFPDU(ctx context.Context, cfg *smbd.Config, fpdu int) (*smbd.Conn, *smbd.Conn, error) {
	c := *cfg
	c.Provider = iwarp.New(iwarp.Config{FirstSendDelay: -1, MaxFPDU: fpdu})
	l, err := smbd.Listen(ctx, "127.0.0.1:0", &c)
	if err != nil {
		return nil, nil, err
	}
	defer l.Close()
	ch := make(chan *smbd.Conn, 1)
	go func() {
		s, _ := l.AcceptSMBD(ctx)
		ch <- s
	}()
	cl, err := smbd.Dial(ctx, l.Addr().String(), &c)
	if err != nil {
		return nil, nil, err
	}
	s := <-ch
	if s == nil {
		cl.Close()
		return nil, nil, fmt.Errorf("accept failed")
	}
	return cl, s, nil
}

// smbdStream writes size-byte framed PDUs for d; the peer reads them as a
// stream of header + payload.
func smbdStream(ctx context.Context, cfg *smbd.Config, size int, d time.Duration) (float64, error) {
	return smbdStreamFPDU(ctx, cfg, 0, size, d)
}

func smbdStreamFPDU(ctx context.Context, cfg *smbd.Config, fpdu, size int, d time.Duration) (float64, error) {
	a, b, err := smbdPairFPDU(ctx, cfg, fpdu)
	if err != nil {
		return 0, err
	}
	defer a.Close()
	defer b.Close()
	return pduStream(a, b, func() { a.Close() }, size, d)
}

// pduStream writes size-byte framed PDUs to w for d while r reads them,
// and returns MiB/s; closeW ends the reader.
func pduStream(w io.Writer, r io.Reader, closeW func(), size int, d time.Duration) (float64, error) {
	var got int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, size+4)
		for {
			if _, err := io.ReadFull(r, buf); err != nil {
				return
			}
			got += int64(size + 4)
		}
	}()
	pdu := make([]byte, size+4)
	if err := framing.Put(pdu, size); err != nil {
		return 0, fmt.Errorf("%d-byte PDU: %w", size, err)
	}
	t0 := time.Now()
	for time.Since(t0) < d {
		if _, err := w.Write(pdu); err != nil {
			closeW()
			return 0, err
		}
	}
	el := time.Since(t0)
	closeW()
	<-done
	return float64(got) / el.Seconds() / (1 << 20), nil
}

// smbdRoundTrip measures a size-byte PDU echoed back.
func smbdRoundTrip(ctx context.Context, size int, d time.Duration) (float64, error) {
	return smbdRoundTripFPDU(ctx, 0, size, d)
}

func smbdRoundTripFPDU(ctx context.Context, fpdu, size int, d time.Duration) (float64, error) {
	a, b, err := smbdPairFPDU(ctx, &smbd.Config{}, fpdu)
	if err != nil {
		return 0, err
	}
	defer a.Close()
	defer b.Close()
	return pduRoundTrip(a, b, size, d)
}

// pduRoundTrip sends a size-byte framed PDU on a, echoed back by b, for
// d, and returns microseconds per round trip.
func pduRoundTrip(a, b io.ReadWriter, size int, d time.Duration) (float64, error) {
	go func() {
		buf := make([]byte, size+4)
		for {
			if _, err := io.ReadFull(b, buf); err != nil {
				return
			}
			if _, err := b.Write(buf); err != nil {
				return
			}
		}
	}()
	pdu := make([]byte, size+4)
	if err := framing.Put(pdu, size); err != nil {
		return 0, fmt.Errorf("%d-byte PDU: %w", size, err)
	}
	buf := make([]byte, size+4)
	n := 0
	t0 := time.Now()
	for time.Since(t0) < d {
		if _, err := a.Write(pdu); err != nil {
			return 0, err
		}
		if _, err := io.ReadFull(a, buf); err != nil {
			return 0, err
		}
		n++
	}
	return float64(time.Since(t0).Microseconds()) / float64(n), nil
}
