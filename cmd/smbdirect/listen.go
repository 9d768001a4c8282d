package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"sync"

	"github.com/smbdirect/smbdirect/internal/smb2"
	"github.com/smbdirect/smbdirect/smbd"
)

func init() {
	register(&command{
		name:  "listen",
		usage: "[--dump] [--crc] [--provider iwarp|verbs] [--device NAME] [ADDR]",
		short: "accept SMB Direct connections and show what arrives",
		long: `Listens for SMB Direct connections over the embedded soft-iWARP provider on ADDR
(default :5445, the iWARP port), negotiates, and reads SMB2 PDUs. With --dump it
prints one line per received PDU: its length and SMB2 command (and the dialects
of a NEGOTIATE). It answers nothing: it is a probe for clients such as Linux
cifs.ko (mount -t cifs ... -o rdma), whose mount then fails for want of a server.`,
		setup: func(fs *flag.FlagSet) func(context.Context, []string) error {
			dump := fs.Bool("dump", false, "print a line per received PDU")
			crc := fs.Bool("crc", false, "ask for MPA CRC32c")
			choose := addProviderFlags(fs, crc, false)
			return func(ctx context.Context, args []string) error {
				pc, err := choose()
				if err != nil {
					return err
				}
				addr := fmt.Sprintf(":%d", smbd.PortIWARP)
				if len(args) > 1 {
					return usageError("takes at most one ADDR")
				}
				if len(args) == 1 {
					addr = args[0]
				}
				out := stdoutOf(ctx)
				l, err := smbd.Listen(ctx, addr, &smbd.Config{Provider: pc.open(nil, nil)})
				if err != nil {
					return err
				}
				fmt.Fprintf(stderrOf(ctx), "smbdirect: listening for SMB Direct on %s\n", l.Addr())
				var mu sync.Mutex // one writer to out at a time
				var wg sync.WaitGroup
				defer wg.Wait()
				defer l.Close()
				for {
					c, err := l.AcceptSMBD(ctx)
					if err != nil {
						if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
							return nil
						}
						return err
					}
					wg.Add(1)
					go func() {
						defer wg.Done()
						defer c.Close()
						stop := context.AfterFunc(ctx, func() { c.Close() })
						defer stop()
						serveDump(c, out, &mu, *dump)
					}()
				}
			}
		},
	})
}

// serveDump reads PDUs until the connection ends.
func serveDump(c *smbd.Conn, out io.Writer, mu *sync.Mutex, dump bool) {
	info := c.Info()
	mu.Lock()
	fmt.Fprintf(out, "%s: SMB Direct negotiated: credits %d, max send %d, max fragmented %d, max read/write %d\n",
		c.RemoteAddr(), info.SendCredits, info.MaxSendSize, info.MaxFragmentedSend, info.MaxReadWriteSize)
	mu.Unlock()
	buf := make([]byte, info.MaxFragmentedRecv)
	for {
		n, err := c.ReadMessage(buf)
		if err != nil {
			mu.Lock()
			if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
				fmt.Fprintf(out, "%s: disconnected\n", c.RemoteAddr())
			} else {
				fmt.Fprintf(out, "%s: %v\n", c.RemoteAddr(), err)
			}
			mu.Unlock()
			return
		}
		if !dump {
			continue
		}
		line := fmt.Sprintf("%s: PDU %d bytes %s", c.RemoteAddr(), n, smb2.Describe(buf[:n]))
		if ds := smb2.Dialects(buf[:n]); ds != nil {
			line += " dialects"
			for _, d := range ds {
				line += " " + smb2.DialectName(d)
			}
		}
		mu.Lock()
		fmt.Fprintln(out, line)
		mu.Unlock()
	}
}
