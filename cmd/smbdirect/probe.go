package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"time"

	"github.com/smbdirect/smbdirect/internal/smb2"
	"github.com/smbdirect/smbdirect/iwarp"
	"github.com/smbdirect/smbdirect/smbd"
)

func init() {
	register(&command{
		name:  "probe",
		usage: "[--json] [--crc] [--timeout 30s] HOST[:PORT]",
		short: "negotiate SMB Direct with a server and show what it offers",
		long: `Connects to an SMB Direct server over the embedded soft-iWARP provider (port 5445,
the iWARP port, unless given), negotiates SMB Direct and prints the negotiated
values: credits, max send/receive/fragmented/read-write sizes, keepalive. Then it
sends an SMB2 NEGOTIATE over the connection and prints the dialect the server
picked.`,
		setup: func(fs *flag.FlagSet) func(context.Context, []string) error {
			asJSON := fs.Bool("json", false, "print one JSON object")
			crc := fs.Bool("crc", false, "ask for MPA CRC32c")
			timeout := fs.Duration("timeout", 30*time.Second, "overall time limit")
			return func(ctx context.Context, args []string) error {
				if len(args) != 1 {
					return usageError("probe needs exactly one HOST[:PORT]")
				}
				addr := args[0]
				if _, _, err := net.SplitHostPort(addr); err != nil {
					addr = net.JoinHostPort(addr, fmt.Sprint(smbd.PortIWARP))
				}
				ctx, cancel := context.WithTimeout(ctx, *timeout)
				defer cancel()
				c, err := smbd.Dial(ctx, addr, &smbd.Config{Provider: iwarp.New(iwarp.Config{CRC: *crc})})
				if err != nil {
					return err
				}
				defer c.Close()
				info := c.Info()
				if dl, ok := ctx.Deadline(); ok {
					c.SetDeadline(dl)
				}
				var guid [16]byte
				copy(guid[:], "smbdirect probe")
				if err := c.WriteMessage(smb2.AppendNegotiateRequest(nil, 0, guid,
					[]uint16{smb2.Dialect202, smb2.Dialect210, smb2.Dialect300, smb2.Dialect302})); err != nil {
					return fmt.Errorf("sending SMB2 NEGOTIATE: %w", err)
				}
				buf := make([]byte, info.MaxFragmentedRecv)
				n, err := c.ReadMessage(buf)
				if err != nil {
					return fmt.Errorf("reading the SMB2 NEGOTIATE response: %w", err)
				}
				neg, err := smb2.ParseNegotiateResponse(buf[:n])
				if err != nil {
					return err
				}
				out := stdoutOf(ctx)
				if *asJSON {
					return json.NewEncoder(out).Encode(struct {
						Server string                 `json:"server"`
						SMBD   smbd.Info              `json:"smbd"`
						SMB2   smb2.NegotiateResponse `json:"smb2"`
						Name   string                 `json:"dialect"`
					}{addr, info, neg, smb2.DialectName(neg.Dialect)})
				}
				fmt.Fprintf(out, "SMB Direct with %s (%s, CRC %v, IRD %d, ORD %d)\n", addr, info.RDMA.Provider, info.RDMA.CRC, info.RDMA.IRD, info.RDMA.ORD)
				fmt.Fprintf(out, "  protocol version      0x%04x\n", info.Version)
				fmt.Fprintf(out, "  send credits granted  %d (server asks for %d)\n", info.SendCredits, info.PeerCreditTarget)
				fmt.Fprintf(out, "  max send size         %d (ours: %d receive)\n", info.MaxSendSize, info.MaxReceiveSize)
				fmt.Fprintf(out, "  max fragmented send   %s\n", humanBytes(float64(info.MaxFragmentedSend)))
				fmt.Fprintf(out, "  max read/write size   %s\n", humanBytes(float64(info.MaxReadWriteSize)))
				fmt.Fprintf(out, "  keepalive interval    %s\n", info.KeepaliveInterval)
				if neg.Status != 0 {
					fmt.Fprintf(out, "SMB2 NEGOTIATE failed: status 0x%08x\n", neg.Status)
					return fmt.Errorf("SMB2 NEGOTIATE status 0x%08x", neg.Status)
				}
				fmt.Fprintf(out, "SMB2 dialect %s, max read %s, max write %s\n", smb2.DialectName(neg.Dialect),
					humanBytes(float64(neg.MaxReadSize)), humanBytes(float64(neg.MaxWriteSize)))
				return nil
			}
		},
	})
}
