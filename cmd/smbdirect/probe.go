package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/smbdirect/smbdirect/internal/smb2"
	"github.com/smbdirect/smbdirect/smbd"
)

func init() {
	register(&command{
		name:  "probe",
		usage: "[--json] [--crc] [--provider iwarp|verbs] [--device NAME] [--timeout 30s] HOST[:PORT]",
		short: "negotiate SMB Direct with a server and show what it offers",
		long: `Connects to an SMB Direct server over the embedded soft-iWARP provider (port 5445,
the iWARP port, unless given), negotiates SMB Direct and prints the negotiated
values: credits, max send/receive/fragmented/read-write sizes, keepalive. Then it
sends an SMB2 NEGOTIATE over the connection, offering 2.0.2 to 3.1.1 with the
3.1.1 negotiate contexts (preauth integrity SHA-512, encryption and signing
capabilities) as Linux cifs.ko and Windows do, and prints the dialect and
algorithms the server picked.

--timeout bounds the whole probe. The result is "ok", "partial" (SMB Direct
negotiated, SMB2 NEGOTIATE failed) or "failed"; with --json the one JSON object
on stdout says which, with an "error" field when it is not ok. The exit status is
0 only for ok.`,
		setup: func(fs *flag.FlagSet) func(context.Context, []string) error {
			asJSON := fs.Bool("json", false, "print one JSON object on stdout, also when the probe fails")
			crc := fs.Bool("crc", false, "ask for MPA CRC32c")
			choose := addProviderFlags(fs, crc, false)
			timeout := fs.Duration("timeout", 30*time.Second, "overall time limit")
			return func(ctx context.Context, args []string) error {
				if len(args) != 1 {
					return usageError("give exactly one HOST[:PORT]")
				}
				if *timeout <= 0 {
					return usageError(fmt.Sprintf("--timeout %v: want a positive duration", *timeout))
				}
				addr, err := probeAddr(args[0])
				if err != nil {
					return err
				}
				pc, err := choose()
				if err != nil {
					return err
				}
				ctx, cancel := context.WithTimeout(ctx, *timeout)
				defer cancel()
				r := probe(ctx, addr, &smbd.Config{Provider: pc.open(nil, nil), NegotiateTimeout: *timeout})
				out := stdoutOf(ctx)
				if *asJSON {
					if err := json.NewEncoder(out).Encode(r.report()); err != nil {
						return err
					}
					if r.err != nil {
						return reportedError{r.err}
					}
					return nil
				}
				r.print(out)
				if r.smbd != nil && r.err != nil {
					return fmt.Errorf("partial: SMB Direct negotiated, SMB2 failed: %w", r.err)
				}
				return r.err
			}
		},
	})
}

// probeAddr adds the iWARP port to a bare host; an empty host would dial
// this machine.
func probeAddr(a string) (string, error) {
	host, _, err := net.SplitHostPort(a)
	if err != nil {
		host, a = a, net.JoinHostPort(a, fmt.Sprint(smbd.PortIWARP))
	}
	if host == "" {
		return "", usageError(fmt.Sprintf("%q: no host", a))
	}
	return a, nil
}

// probeResult is what a probe found: the SMB Direct parameters once
// negotiated, the SMB2 NEGOTIATE response once answered, and the error
// that stopped it.
type probeResult struct {
	addr string
	smbd *smbd.Info
	smb2 *smb2.NegotiateResponse
	err  error
}

func probe(ctx context.Context, addr string, cfg *smbd.Config) probeResult {
	r := probeResult{addr: addr}
	c, err := smbd.Dial(ctx, addr, cfg)
	if err != nil {
		r.err = err
		return r
	}
	defer c.Close()
	info := c.Info()
	r.smbd = &info
	// The context bounds the SMB2 exchange too.
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	var guid [16]byte
	copy(guid[:], "smbdirect probe")
	var salt [32]byte
	rand.Read(salt[:])
	req := smb2.AppendNegotiateRequest311(nil, 0, guid,
		[]uint16{smb2.Dialect202, smb2.Dialect210, smb2.Dialect300, smb2.Dialect302, smb2.Dialect311}, salt)
	if err := c.WriteMessage(req); err != nil {
		r.err = fmt.Errorf("sending the SMB2 NEGOTIATE: %w", ctxErr(ctx, err))
		return r
	}
	buf := make([]byte, info.MaxFragmentedRecv)
	n, err := c.ReadMessage(buf)
	if err != nil {
		r.err = fmt.Errorf("reading the SMB2 NEGOTIATE response: %w", ctxErr(ctx, err))
		return r
	}
	neg, err := smb2.ParseNegotiateResponse(buf[:n])
	if err != nil {
		r.err = fmt.Errorf("the SMB2 NEGOTIATE response: %w", err)
		return r
	}
	r.smb2 = &neg
	if neg.Status != 0 {
		r.err = fmt.Errorf("SMB2 NEGOTIATE status 0x%08x", neg.Status)
	}
	return r
}

// ctxErr prefers the context's reason (the --timeout) to the I/O error
// it caused.
func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil && !errors.Is(err, ctx.Err()) {
		return fmt.Errorf("%w (%v)", ctx.Err(), err)
	}
	return err
}

func (r *probeResult) result() string {
	switch {
	case r.err == nil:
		return "ok"
	case r.smbd != nil:
		return "partial"
	}
	return "failed"
}

type probeSMB2 struct {
	smb2.NegotiateResponse
	PreauthHash string `json:"preauth_integrity,omitempty"`
	Cipher      string `json:"cipher,omitempty"`
	Signing     string `json:"signing,omitempty"`
}

type probeReport struct {
	Server  string     `json:"server"`
	Result  string     `json:"result"`
	SMBD    *smbd.Info `json:"smbd"`
	SMB2    *probeSMB2 `json:"smb2"`
	Dialect string     `json:"dialect,omitempty"`
	Error   string     `json:"error,omitempty"`
}

func (r *probeResult) report() probeReport {
	rep := probeReport{Server: r.addr, Result: r.result(), SMBD: r.smbd}
	if r.err != nil {
		rep.Error = r.err.Error()
	}
	if n := r.smb2; n != nil && n.Status == 0 {
		s := &probeSMB2{NegotiateResponse: *n}
		if n.Has(smb2.ContextPreauthIntegrity) {
			s.PreauthHash = smb2.HashName(n.PreauthHash)
		}
		if n.Has(smb2.ContextEncryption) {
			s.Cipher = smb2.CipherName(n.Cipher)
		}
		if n.Has(smb2.ContextSigning) {
			s.Signing = smb2.SigningName(n.Signing)
		}
		rep.SMB2, rep.Dialect = s, smb2.DialectName(n.Dialect)
	}
	return rep
}

// print writes what was found; the error itself is main's to print.
func (r *probeResult) print(out io.Writer) {
	info := r.smbd
	if info == nil {
		return
	}
	fmt.Fprintf(out, "SMB Direct with %s (%s, CRC %v, IRD %d, ORD %d)\n", r.addr, info.RDMA.Provider, info.RDMA.CRC, info.RDMA.IRD, info.RDMA.ORD)
	fmt.Fprintf(out, "  protocol version      0x%04x\n", info.Version)
	fmt.Fprintf(out, "  send credits granted  %d (server asks for %d)\n", info.SendCredits, info.PeerCreditTarget)
	fmt.Fprintf(out, "  max send size         %d (ours: %d receive)\n", info.MaxSendSize, info.MaxReceiveSize)
	fmt.Fprintf(out, "  max fragmented send   %s\n", humanBytes(float64(info.MaxFragmentedSend)))
	fmt.Fprintf(out, "  max read/write size   %s\n", humanBytes(float64(info.MaxReadWriteSize)))
	fmt.Fprintf(out, "  keepalive interval    %s\n", info.KeepaliveInterval)
	rep := r.report()
	if rep.SMB2 == nil {
		fmt.Fprintf(out, "SMB2 NEGOTIATE failed: SMB Direct works, SMB2 does not (see the error below)\n")
		return
	}
	fmt.Fprintf(out, "SMB2 dialect %s, max read %s, max write %s\n", rep.Dialect,
		humanBytes(float64(rep.SMB2.MaxReadSize)), humanBytes(float64(rep.SMB2.MaxWriteSize)))
	if rep.SMB2.PreauthHash != "" || rep.SMB2.Cipher != "" || rep.SMB2.Signing != "" {
		fmt.Fprintf(out, "  preauth integrity     %s\n  encryption            %s\n  signing               %s\n",
			orDash(rep.SMB2.PreauthHash), orDash(rep.SMB2.Cipher), orDash(rep.SMB2.Signing))
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
