package iwarp

import (
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/smbdirect/smbdirect/iwarp/internal/wire"
	"github.com/smbdirect/smbdirect/rdma"
)

// FuzzReceiveStream feeds arbitrary bytes, after a valid MPA exchange, to
// a connected endpoint with registered regions and posted receives. It
// must never panic, never write outside a region, and always end.
func FuzzReceiveStream(f *testing.F) {
	// Seeds: what Linux siw really sends after the handshake, and frames
	// touching every opcode.
	files, _ := filepath.Glob("internal/wire/testdata/captures/siw-*-stream-nocrc.bin")
	for _, name := range files {
		if b, err := os.ReadFile(name); err == nil {
			f.Add(b)
		}
	}
	e := &hostileEnv{}
	f.Add(e.fpdu(send(1, 0, true, []byte("hello"))))
	f.Add(append(e.fpdu(send(1, 0, false, []byte("part"))), e.fpdu(send(1, 4, true, []byte("two")))...))
	f.Add(e.fpdu(write(0x01020304, 0x1000, []byte("data"))))
	f.Add(e.fpdu(readReq(1, 0x01020304, 0x1000, 16)))
	f.Add(e.fpdu(append(wire.AppendTagged(nil, wire.OpReadResponse, true, 1, 0), 'x')))
	f.Add(e.fpdu(wire.AppendTerminate(nil, &wire.Terminate{MSN: 1, Layer: wire.LayerLLP, Code: wire.LLPCodeCRC})))

	ctx := context.Background()
	pd, _ := New(Config{HandshakeTimeout: time.Second}).NewPD()
	ln, err := pd.Listen(ctx, "127.0.0.1:0", rdma.ListenConfig{})
	if err != nil {
		f.Fatal(err)
	}
	defer ln.Close()
	all := bytes.Repeat([]byte{0xAA}, 3*4096+4*guard)
	// Regions at fixed STags are unknown to the fuzzer, so also register
	// them at every run's start and hand their STags to the seeds' frames
	// by rewriting 0x01020304 (the placeholder) in the input.
	f.Fuzz(func(t *testing.T, in []byte) {
		rw, _ := pd.RegisterMemory(all[guard:guard+4096], rdma.AccessLocalWrite|rdma.AccessRemoteRead|rdma.AccessRemoteWrite)
		ro, _ := pd.RegisterMemory(all[2*guard+4096:2*guard+8192], rdma.AccessRemoteRead)
		rcv, _ := pd.RegisterMemory(all[3*guard+8192:3*guard+8192+4096], rdma.AccessLocalWrite)
		defer rw.Close()
		defer ro.Close()
		defer rcv.Close()
		var stag [4]byte
		stag[0], stag[1], stag[2], stag[3] = byte(rw.STag()>>24), byte(rw.STag()>>16), byte(rw.STag()>>8), byte(rw.STag())
		in = bytes.ReplaceAll(in, []byte{1, 2, 3, 4}, stag[:])
		ep, _ := pd.NewEndpoint(rdma.EndpointConfig{})
		for i := 0; i < 4; i++ {
			ep.PostRecv(&rdma.RecvWR{ID: uint64(i), Local: rdma.SGE{MR: rcv, Offset: i * 1024, Length: 1024}})
		}
		raw := rawPeer(t, ctx, ln, ep, 0, false, 4)
		go func() {
			raw.Write(in)
			raw.(*net.TCPConn).CloseWrite()
			io.Copy(io.Discard, raw) // take our responses and Terminate
		}()
		select {
		case <-ep.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("endpoint did not end after the peer's EOF")
		}
		ep.Close()
		raw.Close()
		for i, b := range all {
			inGuard := i < guard || (i >= guard+4096 && i < 2*guard+4096) || (i >= 2*guard+8192 && i < 3*guard+8192) || i >= 3*guard+3*4096
			if inGuard && b != 0xAA {
				t.Fatalf("byte %d outside the registered regions was written", i)
			}
		}
	})
}
