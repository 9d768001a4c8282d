package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/smbdirect/smbdirect/internal/framing"
	"github.com/smbdirect/smbdirect/iwarp"
	"github.com/smbdirect/smbdirect/rdma"
	"github.com/smbdirect/smbdirect/smbd"
)

func init() {
	register(&command{
		name:  "demo",
		usage: "[--crc] [--provider iwarp|verbs --device NAME --local ADDR] [--size BYTES] [--json]",
		short: "a real RDMA session over the embedded soft-iWARP, step by step",
		long: `Runs two soft-iWARP endpoints in this process over 127.0.0.1 and walks through
an RDMA session: memory registration, connection setup with private data, Send
with Solicited Event, RDMA Write, RDMA Read, Send with Invalidate, and an access
to the invalidated region that the peer refuses with an iWARP Terminate. Then an
SMB Direct (MS-SMBD) session on top: negotiation, a Direct-TCP-framed SMB2-sized
PDU through the net.Conn (fragmented and reassembled), and the RDMA channel of
an SMB2 READ (a registered buffer described by a Buffer Descriptor V1, written
by the peer, invalidated by its Send with Invalidate). Every transfer is
checked with SHA-256. Then it measures RDMA Write and Read
throughput. Exits non-zero if anything differs.`,
		setup: func(fs *flag.FlagSet) func(context.Context, []string) error {
			crc := fs.Bool("crc", false, "use MPA CRC32c")
			choose := addProviderFlags(fs, crc, true)
			size := fs.String("size", "256M", "bytes moved by each throughput measurement")
			asJSON := fs.Bool("json", false, "print a JSON summary instead of the walk-through")
			return func(ctx context.Context, args []string) error {
				if err := noArgs(args); err != nil {
					return err
				}
				n, err := sizeFlag("--size", *size, 1<<20)
				if err != nil {
					return err
				}
				out := stdoutOf(ctx)
				if *asJSON {
					out = io.Discard
				}
				pc, err := choose()
				if err != nil {
					return err
				}
				sum, err := demo(ctx, out, pc, n)
				if *asJSON {
					sum.OK = err == nil
					if err != nil {
						sum.Error = err.Error()
					}
					json.NewEncoder(stdoutOf(ctx)).Encode(sum)
				}
				return err
			}
		},
	})
}

type demoSummary struct {
	OK        bool    `json:"ok"`
	Error     string  `json:"error,omitempty"`
	CRC       bool    `json:"crc"`
	Steps     int     `json:"steps_verified"`
	WriteMiBs float64 `json:"rdma_write_mib_s"`
	ReadMiBs  float64 `json:"rdma_read_mib_s"`
	Bytes     int     `json:"throughput_bytes"`
}

func short(b []byte) string {
	h := sha256.Sum256(b)
	return fmt.Sprintf("%x", h[:6])
}

func demo(ctx context.Context, w io.Writer, pc *providerChoice, size int) (sum demoSummary, err error) {
	sum.CRC, sum.Bytes = pc.crc, size
	step := 0
	say := func(format string, a ...any) {
		step++
		fmt.Fprintf(w, "\n%d. "+format+"\n", append([]any{step}, a...)...)
	}
	detail := func(format string, a ...any) { fmt.Fprintf(w, "   "+format+"\n", a...) }
	if pc.name == "iwarp" {
		fmt.Fprintf(w, "smbdirect demo: two soft-iWARP endpoints (RFC 5040/5041/5044/6581 over TCP) in one process, CRC %v\n", pc.crc)
	} else {
		fmt.Fprintf(w, "smbdirect demo: two endpoints of the %s provider on %s in one process\n", pc.name, pc.local)
	}

	const msgLen, regionLen = 4096, 1 << 20
	var cliRecv, srvRecv rdma.MR
	say("Register memory and post receive buffers (RDMA needs them before the peer can send).")
	p, err := newRDMAPair(ctx, pc, []byte("hello from the client"), []byte("welcome, client"), nil)
	if err != nil {
		return sum, err
	}
	defer p.close()
	// Both endpoints share one PD here; receives are posted before anything
	// is sent.
	reg := func(buf []byte, a rdma.Access) rdma.MR {
		m, e := p.pd.RegisterMemory(buf, a)
		if e != nil && err == nil {
			err = e
		}
		return m
	}
	srvRecv = reg(make([]byte, msgLen), rdma.AccessLocalWrite)
	cliRecv = reg(make([]byte, msgLen), rdma.AccessLocalWrite)
	region := reg(make([]byte, regionLen), rdma.AccessLocalWrite|rdma.AccessRemoteWrite|rdma.AccessRemoteRead)
	src := reg(make([]byte, regionLen), 0)
	back := reg(make([]byte, regionLen), rdma.AccessLocalWrite)
	msg := reg(make([]byte, msgLen), 0)
	if err != nil {
		return sum, err
	}
	rand.Read(src.Bytes())
	rand.Read(msg.Bytes())
	for _, r := range []struct {
		name string
		m    rdma.MR
	}{{"server receive buffer", srvRecv}, {"client receive buffer", cliRecv}, {"server region (remote read/write)", region}, {"client source", src}, {"client read-back buffer", back}} {
		detail("%-34s STag %v  address 0x%x  %7s  %v", r.name, r.m.STag(), r.m.Addr(), humanBytes(float64(len(r.m.Bytes()))), r.m.Access())
	}
	if err := p.srv.PostRecv(&rdma.RecvWR{ID: 1, Local: rdma.SGE{MR: srvRecv}}); err != nil {
		return sum, err
	}
	if err := p.cli.PostRecv(&rdma.RecvWR{ID: 1, Local: rdma.SGE{MR: cliRecv}}); err != nil {
		return sum, err
	}
	ci, si := p.cli.Info(), p.srv.Info()
	say("Connect: MPA request and reply with private data and IRD/ORD (RFC 6581).")
	detail("client %v -> server %v", ci.LocalAddr, ci.RemoteAddr)
	detail("negotiated: CRC %v, IRD %d, ORD %d; %s", ci.CRC, ci.IRD, ci.ORD, ci.Detail)
	detail("server got private data %q, client got %q", si.PrivateData, ci.PrivateData)

	say("Send with Solicited Event: %d bytes into the server's posted receive.", msgLen)
	if err := p.cli.PostSend(&rdma.SendWR{ID: 10, Op: rdma.OpSend, Local: rdma.SGE{MR: msg}, Solicited: true}); err != nil {
		return sum, err
	}
	c, err := waitOp(ctx, p.srv, rdma.OpRecv)
	if err != nil {
		return sum, err
	}
	if c.Bytes != msgLen || !c.Solicited || !bytes.Equal(srvRecv.Bytes(), msg.Bytes()) {
		return sum, fmt.Errorf("send: received %d bytes (solicited %v), data sha256 %s, sent %s", c.Bytes, c.Solicited, short(srvRecv.Bytes()), short(msg.Bytes()))
	}
	detail("server completion: %d bytes, solicited %v, sha256 %s = sent %s", c.Bytes, c.Solicited, short(srvRecv.Bytes()), short(msg.Bytes()))
	sum.Steps++

	say("RDMA Write: %s from the client into the server's region (STag %v); the server application is not involved.", humanBytes(regionLen), region.STag())
	if err := p.cli.PostSend(&rdma.SendWR{ID: 11, Op: rdma.OpWrite, Local: rdma.SGE{MR: src}, RemoteSTag: region.STag(), RemoteAddr: region.Addr()}); err != nil {
		return sum, err
	}
	if _, err := waitOp(ctx, p.cli, rdma.OpWrite); err != nil {
		return sum, err
	}
	// The Write's completion only says the data left the client. A Send
	// after it arrives after the data is placed (RDMAP ordering): that is
	// how the server learns it may look.
	if err := p.srv.PostRecv(&rdma.RecvWR{ID: 3, Local: rdma.SGE{MR: srvRecv}}); err != nil {
		return sum, err
	}
	if err := p.cli.PostSend(&rdma.SendWR{ID: 15, Op: rdma.OpSend, Local: rdma.SGE{MR: msg, Length: 8}}); err != nil {
		return sum, err
	}
	if _, err := waitOp(ctx, p.srv, rdma.OpRecv); err != nil {
		return sum, err
	}
	if !bytes.Equal(region.Bytes(), src.Bytes()) {
		return sum, fmt.Errorf("write: source %s, server region %s", short(src.Bytes()), short(region.Bytes()))
	}
	detail("a Send after the Write tells the server; its region now has sha256 %s = source %s", short(region.Bytes()), short(src.Bytes()))
	say("RDMA Read: the client reads the region back.")
	if err := p.cli.PostSend(&rdma.SendWR{ID: 12, Op: rdma.OpRead, Local: rdma.SGE{MR: back}, RemoteSTag: region.STag(), RemoteAddr: region.Addr()}); err != nil {
		return sum, err
	}
	if c, err = waitOp(ctx, p.cli, rdma.OpRead); err != nil {
		return sum, err
	}
	if !bytes.Equal(back.Bytes(), src.Bytes()) {
		return sum, fmt.Errorf("read: source %s, read back %s", short(src.Bytes()), short(back.Bytes()))
	}
	detail("read back %d bytes, sha256 %s = source %s", c.Bytes, short(back.Bytes()), short(src.Bytes()))
	sum.Steps += 2

	say("Send with Invalidate: the client tells the server it is done with STag %v.", region.STag())
	if err := p.srv.PostRecv(&rdma.RecvWR{ID: 2, Local: rdma.SGE{MR: srvRecv}}); err != nil {
		return sum, err
	}
	if err := p.cli.PostSend(&rdma.SendWR{ID: 13, Op: rdma.OpSendInvalidate, Local: rdma.SGE{MR: msg, Length: 16}, InvalidateSTag: region.STag()}); err != nil {
		return sum, err
	}
	if c, err = waitOp(ctx, p.srv, rdma.OpRecv); err != nil {
		return sum, err
	}
	if !c.Invalidated || c.InvalidatedSTag != region.STag() || region.Valid() {
		return sum, fmt.Errorf("send with invalidate: completion %+v, region valid %v", c, region.Valid())
	}
	detail("server completion reports STag %v invalidated; region valid: %v", c.InvalidatedSTag, region.Valid())
	sum.Steps++

	say("RDMA Read of the invalidated region: the server must refuse it.")
	if err := p.cli.PostSend(&rdma.SendWR{ID: 14, Op: rdma.OpRead, Local: rdma.SGE{MR: back, Length: 64}, RemoteSTag: region.STag(), RemoteAddr: region.Addr()}); err != nil {
		return sum, err
	}
	_, rerr := waitOp(ctx, p.cli, rdma.OpRead)
	var te *iwarp.TerminateError
	if !errors.Is(rerr, rdma.ErrRemoteAccess) || !errors.As(p.cli.Err(), &te) {
		return sum, fmt.Errorf("read of an invalidated region was not refused: %v / %v", rerr, p.cli.Err())
	}
	detail("completion error: %v", rerr)
	detail("connection ended by the peer's %v", te)
	sum.Steps++

	if err := demoSMBD(ctx, pc, say, detail, &sum); err != nil {
		return sum, err
	}

	say("Throughput: %s by RDMA Write, then by RDMA Read, in 1 MiB operations, 8 outstanding.", humanBytes(float64(size)))
	wr, rd, err := demoThroughput(ctx, pc, size)
	if err != nil {
		return sum, err
	}
	sum.WriteMiBs, sum.ReadMiBs = wr/(1<<20), rd/(1<<20)
	detail("RDMA Write %s, RDMA Read %s (data checked after each run)", humanRate(wr), humanRate(rd))
	fmt.Fprintf(w, "\nAll %d transfers verified. See 'smbdirect bench rdma' for a comparison with plain TCP.\n", sum.Steps)
	return sum, nil
}

// demoThroughput moves size bytes each way in 1 MiB operations and checks
// the last buffer's content.
func demoThroughput(ctx context.Context, pc *providerChoice, size int) (float64, float64, error) {
	p, err := newRDMAPair(ctx, pc, nil, nil, nil)
	if err != nil {
		return 0, 0, err
	}
	defer p.close()
	const op = 1 << 20
	src, _ := p.pd.RegisterMemory(make([]byte, op), rdma.AccessRemoteRead)
	dst, _ := p.pd.RegisterMemory(make([]byte, op), rdma.AccessLocalWrite|rdma.AccessRemoteWrite)
	note, _ := p.pd.RegisterMemory(make([]byte, 8), rdma.AccessLocalWrite)
	defer src.Close()
	defer dst.Close()
	defer note.Close()
	rand.Read(src.Bytes())
	run := func(read bool) (float64, error) {
		clear(dst.Bytes())
		t0 := time.Now()
		ops, out := size/op, 0
		var wc [16]rdma.Completion
		for posted, done := 0, 0; done < ops; {
			for out < 8 && posted < ops {
				wr := &rdma.SendWR{Op: rdma.OpWrite, Local: rdma.SGE{MR: src}, RemoteSTag: dst.STag(), RemoteAddr: dst.Addr()}
				if read {
					wr = &rdma.SendWR{Op: rdma.OpRead, Local: rdma.SGE{MR: dst}, RemoteSTag: src.STag(), RemoteAddr: src.Addr()}
				}
				if err := p.cli.PostSend(wr); err != nil {
					return 0, err
				}
				posted++
				out++
			}
			n, err := p.cli.Poll(ctx, wc[:])
			if err != nil {
				return 0, err
			}
			for _, c := range wc[:n] {
				if c.Err != nil {
					return 0, c.Err
				}
			}
			out -= n
			done += n
		}
		el := time.Since(t0)
		if !read {
			// dst is the server's: look only after a Send that follows
			// the Writes has arrived there.
			if err := p.srv.PostRecv(&rdma.RecvWR{Local: rdma.SGE{MR: note}}); err != nil {
				return 0, err
			}
			if err := p.cli.PostSend(&rdma.SendWR{Op: rdma.OpSend, Unsignaled: true}); err != nil {
				return 0, err
			}
			if _, err := waitOp(ctx, p.srv, rdma.OpRecv); err != nil {
				return 0, err
			}
		}
		if !bytes.Equal(dst.Bytes(), src.Bytes()) {
			return 0, errors.New("throughput run: data differs")
		}
		return float64(ops*op) / el.Seconds(), nil
	}
	wr, err := run(false)
	if err != nil {
		return 0, 0, err
	}
	rd, err := run(true)
	return wr, rd, err
}

// demoSMBD shows an SMB Direct session over soft-iWARP: negotiation, a
// framed PDU through the net.Conn, and the RDMA channel of an SMB2 READ.
func demoSMBD(ctx context.Context, pc *providerChoice, say, detail func(string, ...any), sum *demoSummary) error {
	cfg := &smbd.Config{Provider: pc.open(nil, func(c *iwarp.Config) { c.FirstSendDelay = -1 })}
	say("SMB Direct (MS-SMBD 1.0) on top: listen, connect and negotiate.")
	l, err := smbd.Listen(ctx, "127.0.0.1:0", cfg)
	if err != nil {
		return err
	}
	defer l.Close()
	acc := make(chan *smbd.Conn, 1)
	go func() { c, _ := l.AcceptSMBD(ctx); acc <- c }()
	cli, err := smbd.Dial(ctx, l.Addr().String(), cfg)
	if err != nil {
		return err
	}
	defer cli.Close()
	srv := <-acc
	if srv == nil {
		return fmt.Errorf("smbd: accept failed")
	}
	defer srv.Close()
	in := cli.Info()
	detail("negotiated: %d send credits for now (more are granted as traffic needs them), max send %d, max receive %d, max fragmented %s, max read/write %s, keepalive %s",
		in.SendCredits, in.MaxSendSize, in.MaxReceiveSize, humanBytes(float64(in.MaxFragmentedSend)), humanBytes(float64(in.MaxReadWriteSize)), in.KeepaliveInterval)

	const pduLen = 100_000
	say("An SMB2-sized PDU through the net.Conn, with the 4-byte Direct TCP header, as on TCP.")
	pdu := make([]byte, 4+pduLen)
	if err := framing.Put(pdu, pduLen); err != nil {
		return err
	}
	copy(pdu[4:], "\xfeSMB")
	for i := 8; i < len(pdu); i++ {
		pdu[i] = byte(i * 11)
	}
	werr := make(chan error, 1)
	go func() { _, err := cli.Write(pdu); werr <- err }()
	got := make([]byte, len(pdu))
	if _, err := io.ReadFull(srv, got); err != nil {
		return err
	}
	if err := <-werr; err != nil {
		return err
	}
	if !bytes.Equal(got, pdu) {
		return fmt.Errorf("the PDU arrived different")
	}
	frags := (pduLen + in.MaxSendSize - 25) / (in.MaxSendSize - 24)
	detail("%d bytes sent as %d SMB Direct fragments, read back with io.ReadFull: sha256 %s equal", pduLen, frags, short(got))
	sum.Steps++

	say("The RDMA channel of an SMB2 READ: the client registers a buffer, the server RDMA-writes it and answers with Send with Invalidate.")
	dst := make([]byte, 1<<20)
	buf, err := cli.Register(dst, smbd.PeerWrite)
	if err != nil {
		return err
	}
	defer buf.Close()
	d := buf.Descriptor()
	detail("Buffer Descriptor V1: offset %#x, token %#08x, length %d", d.Offset, d.Token, d.Length)
	data := make([]byte, 1<<20)
	for i := range data {
		data[i] = byte(i*7 + i>>10)
	}
	remote, err := smbd.ParseBufferDescriptors(buf.AppendDescriptor(nil))
	if err != nil {
		return err
	}
	if err := srv.RDMAWrite(ctx, data, remote); err != nil {
		return err
	}
	if err := srv.WriteMessageInvalidate([]byte("READ response"), d.Token); err != nil {
		return err
	}
	msg := make([]byte, 64)
	n, err := cli.ReadMessage(msg)
	if err != nil {
		return err
	}
	if buf.Valid() || !bytes.Equal(dst, data) {
		return fmt.Errorf("RDMA channel: registration valid %v, data equal %v", buf.Valid(), bytes.Equal(dst, data))
	}
	detail("%q arrived after the RDMA Write; the registration is now invalid; sha256 %s equal", msg[:n], short(dst))
	sum.Steps++
	return nil
}
