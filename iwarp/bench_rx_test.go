package iwarp

import (
	"context"
	"encoding/binary"
	"fmt"
	"testing"
	"time"

	"github.com/smbdirect/smbdirect/internal/cputime"
	"github.com/smbdirect/smbdirect/iwarp/internal/wire"
	"github.com/smbdirect/smbdirect/rdma"
)

// BenchmarkReceiveFPDU is our receive path alone, fed with 1 MiB RDMA
// Writes cut into FPDUs of a given size on the wire, each Write followed
// by a 1-byte Send whose receive completion ends the iteration. The peer
// is a raw socket writing prepared bytes, so the figure is what our side
// costs: 1448-byte FPDUs are what Linux siw and iWARP adapters send on
// Ethernet, 65536 what our own ends send each other on loopback.
func BenchmarkReceiveFPDU(b *testing.B) {
	for _, fpdu := range []int{1448, 65536} {
		for _, crc := range []bool{false, true} {
			name := fmt.Sprintf("fpdu%d", fpdu)
			if crc {
				name += "crc"
			}
			b.Run(name, func(b *testing.B) { benchReceive(b, fpdu, crc) })
		}
	}
}

func benchReceive(b *testing.B, fpdu int, crc bool) {
	const size = 1 << 20
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pd, _ := New(Config{FirstSendDelay: -1}).NewPD()
	ln, err := pd.Listen(ctx, "127.0.0.1:0", rdma.ListenConfig{})
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	sink := mustMR(b, pd, make([]byte, size), rdma.AccessLocalWrite|rdma.AccessRemoteWrite)
	rbuf := mustMR(b, pd, make([]byte, 64), rdma.AccessLocalWrite)
	ep, _ := pd.NewEndpoint(rdma.EndpointConfig{})
	defer ep.Close()
	recv := rdma.RecvWR{Local: rdma.SGE{MR: rbuf}}
	for range 8 {
		ep.PostRecv(&recv)
	}
	raw := rawPeer(b, ctx, ln, ep, 0, crc, 1)
	defer raw.Close()

	frame := func(dst, ulpdu []byte) []byte {
		start := len(dst)
		dst = wire.AppendMPALen(dst, len(ulpdu))
		dst = append(dst, ulpdu...)
		dst = wire.AppendPad(dst, len(ulpdu))
		var c uint32
		if crc {
			c = wire.UpdateCRC(0, dst[start:])
		}
		return wire.AppendCRC(dst, c)
	}
	// The Writes' FPDUs, the same every iteration.
	seg := mulpduOf(fpdu) - wire.TaggedLen
	var stream []byte
	data := pattern(size, 3)
	for off := 0; off < size; off += seg {
		n := min(seg, size-off)
		h := wire.AppendTagged(nil, wire.OpWrite, off+n == size, uint32(sink.STag()), sink.Addr()+uint64(off))
		stream = frame(stream, append(h, data[off:off+n]...))
	}
	writes := len(stream)
	// A Send needs a posted receive: the writer takes a credit per
	// iteration, given back once the receive is posted again.
	credits := make(chan struct{}, 8)
	for range 8 {
		credits <- struct{}{}
	}
	var wc [4]rdma.Completion
	b.SetBytes(size)
	b.ReportAllocs()
	b.ResetTimer()
	// The process's CPU time per iteration (the writer's, the same in
	// every version, and the receive path's): the shared machine's load
	// moves it less than wall time.
	cpu0, ok := cputime.Process()
	sendHdr := make([]byte, 0, wire.UntaggedLen+1)
	// Started with the clock: frames sent before it would be received
	// before it too, and a small b.N would time nothing.
	go func() {
		// The Send's MSN changes per iteration: it is framed afresh.
		for i := range b.N {
			select {
			case <-credits:
			case <-ctx.Done():
				return
			}
			sendHdr = append(wire.AppendUntagged(sendHdr[:0], wire.OpSend, true, 0, wire.QNSend, uint32(i+1), 0), 'x')
			stream = frame(stream[:writes], sendHdr)
			if _, err := raw.Write(stream); err != nil {
				return
			}
		}
	}()
	for i := 0; i < b.N; {
		n, err := ep.Poll(ctx, wc[:])
		if err != nil {
			b.Fatal(err, ep.Err())
		}
		for _, c := range wc[:n] {
			if c.Err != nil {
				b.Fatal(c.Err)
			}
			i++
			ep.PostRecv(&recv)
			credits <- struct{}{}
		}
	}
	b.StopTimer()
	if cpu1, _ := cputime.Process(); ok {
		b.ReportMetric(float64(cpu1-cpu0)/float64(b.N), "cpu-ns/op")
	}
	if binary.BigEndian.Uint64(sink.Bytes()[size-8:]) != binary.BigEndian.Uint64(data[size-8:]) {
		b.Fatal("data not placed")
	}
}
