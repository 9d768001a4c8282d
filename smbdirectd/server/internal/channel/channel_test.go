package channel

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/smbdirect/smbdirect/internal/framing"
	"github.com/smbdirect/smbdirect/internal/smb2"
	"github.com/smbdirect/smbdirect/smbd"
)

// fakeRDMA is the peer's registered memory: regions by token, each at
// base 1<<32. Transfers outside a region fail, as the peer would refuse
// them.
type fakeRDMA struct {
	regions map[uint32][]byte
	reads   int
	writes  int
}

var errAccess = errors.New("fake: remote access error")

const base = 1 << 32

func (f *fakeRDMA) region(d smbd.BufferDescriptor) ([]byte, error) {
	r := f.regions[d.Token]
	if r == nil || d.Offset < base || d.Offset-base+uint64(d.Length) > uint64(len(r)) {
		return nil, errAccess
	}
	return r[d.Offset-base : d.Offset-base+uint64(d.Length)], nil
}

func (f *fakeRDMA) RDMARead(_ context.Context, dst []byte, remote []smbd.BufferDescriptor) error {
	f.reads++
	n := 0
	for _, d := range remote {
		r, err := f.region(d)
		if err != nil {
			return err
		}
		n += copy(dst[n:], r)
	}
	if n != len(dst) {
		return fmt.Errorf("fake: %d bytes for %d of descriptors", len(dst), n)
	}
	return nil
}

func (f *fakeRDMA) RDMAWrite(_ context.Context, src []byte, remote []smbd.BufferDescriptor) error {
	f.writes++
	n := 0
	for _, d := range remote {
		r, err := f.region(d)
		if err != nil {
			return err
		}
		n += copy(r, src[n:])
	}
	if n != len(src) {
		return fmt.Errorf("fake: %d bytes for %d of descriptors", len(src), n)
	}
	return nil
}

func newFake() *fakeRDMA { return &fakeRDMA{regions: map[uint32][]byte{}} }

func desc(token uint32, n uint32) smb2.Descriptor {
	return smb2.Descriptor{Offset: base, Token: token, Length: n}
}

func descs(ds ...smb2.Descriptor) []byte {
	var b []byte
	for _, d := range ds {
		b = smb2.AppendDescriptor(b, d)
	}
	return b
}

func header(cmd uint16, id uint64, flags uint32) []byte {
	b := smb2.AppendHeader(nil, cmd, id, 0x55, 7, 3, 9)
	binary.LittleEndian.PutUint32(b[16:], flags)
	return b
}

func rdmaWrite(id uint64, ch uint32, n uint32, ds ...smb2.Descriptor) []byte {
	return smb2.AppendWriteRequest(header(smb2.CommandWrite, id, 0),
		&smb2.WriteRequest{Offset: 4096, FileID: [16]byte{1}, Channel: ch, RemainingBytes: n, ChannelInfo: descs(ds...), Flags: 0})
}

func rdmaRead(id uint64, ch uint32, n uint32, ds ...smb2.Descriptor) []byte {
	return smb2.AppendReadRequest(header(smb2.CommandRead, id, 0),
		&smb2.ReadRequest{Padding: 0x50, Length: n, Offset: 8192, FileID: [16]byte{2}, MinimumCount: 1, Channel: ch, ChannelInfo: descs(ds...)})
}

func readResponse(id uint64, status uint32, flags uint32, data []byte) []byte {
	b := header(smb2.CommandRead, id, smb2.FlagResponse|flags)
	binary.LittleEndian.PutUint32(b[8:], status)
	b = binary.LittleEndian.AppendUint16(b, 17)
	b = append(b, smb2.ReadResponseDataOffset, 0)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(data)))
	b = binary.LittleEndian.AppendUint32(b, 0)
	b = binary.LittleEndian.AppendUint32(b, 0)
	return append(b, data...)
}

func writeResponse(id uint64, status uint32, flags uint32, n uint32) []byte {
	b := header(smb2.CommandWrite, id, smb2.FlagResponse|flags)
	binary.LittleEndian.PutUint32(b[8:], status)
	b = binary.LittleEndian.AppendUint16(b, 17)
	b = append(b, 0, 0)
	b = binary.LittleEndian.AppendUint32(b, n)
	return append(b, make([]byte, 8)...)
}

// chain joins elements into a compound chain, 8-byte aligned.
func chain(elems ...[]byte) []byte {
	var b []byte
	for i, e := range elems {
		start := len(b)
		b = append(b, e...)
		if i < len(elems)-1 {
			for len(b)%8 != 0 {
				b = append(b, 0)
			}
			smb2.SetNextCommand(b[start:], uint32(len(b)-start))
		}
	}
	return b
}

func framed(msg []byte) []byte { return append(make([]byte, framing.HeaderLen), msg...) }

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7) ^ seed
	}
	return b
}

// fromPeer runs FromPeer and returns a copy of its output without the
// framing header, checking the header.
func fromPeer(t *testing.T, c *Channel, msg []byte) []byte {
	t.Helper()
	out, buf, err := c.FromPeer(context.Background(), framed(msg))
	if err != nil {
		t.Fatalf("FromPeer: %v", err)
	}
	defer c.pool.Put(buf)
	if size, ok := framing.Parse(out); !ok || size != len(out)-framing.HeaderLen {
		t.Fatalf("framing header % x for %d bytes", out[:4], len(out)-4)
	}
	return append([]byte(nil), out[framing.HeaderLen:]...)
}

func fromProgram(t *testing.T, c *Channel, pdu []byte) ([]byte, uint32) {
	t.Helper()
	out, inv, err := c.FromProgram(context.Background(), append([]byte(nil), pdu...))
	if err != nil {
		t.Fatalf("FromProgram: %v", err)
	}
	return out, inv
}

func counters(c *Channel) [5]int64 {
	return [5]int64{c.cnt.Reads.Load(), c.cnt.ReadBytes.Load(), c.cnt.Writes.Load(), c.cnt.WriteBytes.Load(), c.cnt.Passthrough.Load()}
}

// inlineWrite is the exact WRITE the program must get for rdmaWrite.
func inlineWrite(id uint64, data []byte) []byte {
	b := header(smb2.CommandWrite, id, 0)
	b = smb2.AppendInlineWriteRequest(b, &smb2.WriteRequest{Offset: 4096, FileID: [16]byte{1}}, uint32(len(data)))
	if len(data) == 0 {
		return append(b, 0)
	}
	return append(b, data...)
}

func inlineRead(id uint64, n uint32) []byte {
	return smb2.AppendReadRequest(header(smb2.CommandRead, id, 0),
		&smb2.ReadRequest{Padding: 0x50, Length: n, Offset: 8192, FileID: [16]byte{2}, MinimumCount: 1})
}

func rdmaReadResponse(id uint64, n uint32) []byte {
	return smb2.AppendReadResponseRDMA(header(smb2.CommandRead, id, smb2.FlagResponse), n)
}

func TestWrite(t *testing.T) {
	for _, ch := range []uint32{smb2.ChannelRDMAV1, smb2.ChannelRDMAV1Invalidate} {
		f := newFake()
		data := pattern(10000, 1)
		// Two descriptors, the second longer than what remains.
		f.regions[0x11] = append([]byte(nil), data[:6000]...)
		f.regions[0x22] = append(append([]byte(nil), data[6000:]...), make([]byte, 500)...)
		c := New(f, 1<<20, 0, nil)
		got := fromPeer(t, c, rdmaWrite(5, ch, 10000, desc(0x11, 6000), desc(0x22, 4500)))
		if want := inlineWrite(5, data); !bytes.Equal(got, want) {
			t.Fatalf("channel %d: program got\n% x\nwant\n% x", ch, got[:120], want[:120])
		}
		if cnt := counters(c); cnt != [5]int64{1, 10000, 0, 0, 0} {
			t.Fatalf("counters %v", cnt)
		}
		resp := writeResponse(5, 0, 0, 10000)
		out, inv := fromProgram(t, c, resp)
		wantInv := uint32(0)
		if ch == smb2.ChannelRDMAV1Invalidate {
			wantInv = 0x11 // the first descriptor's token
		}
		if !bytes.Equal(out, resp) || inv != wantInv || c.Pending() != 0 {
			t.Fatalf("channel %d: response changed or invalidate %#x, want %#x; %d pending", ch, inv, wantInv, c.Pending())
		}
	}
}

func TestRead(t *testing.T) {
	for _, ch := range []uint32{smb2.ChannelRDMAV1, smb2.ChannelRDMAV1Invalidate} {
		f := newFake()
		f.regions[0x33] = make([]byte, 4096)
		f.regions[0x44] = make([]byte, 4096)
		c := New(f, 1<<20, 0, nil)
		got := fromPeer(t, c, rdmaRead(9, ch, 8000, desc(0x33, 4096), desc(0x44, 4096)))
		if want := inlineRead(9, 8000); !bytes.Equal(got, want) {
			t.Fatalf("program got\n% x\nwant\n% x", got, want)
		}
		if c.Pending() != 1 {
			t.Fatalf("%d pending", c.Pending())
		}
		// A short read: 5000 bytes of the 8000.
		data := pattern(5000, 2)
		out, inv := fromProgram(t, c, readResponse(9, 0, 0, data))
		if want := rdmaReadResponse(9, 5000); !bytes.Equal(out, want) {
			t.Fatalf("peer got\n% x\nwant\n% x", out, want)
		}
		if !bytes.Equal(f.regions[0x33], data[:4096]) || !bytes.Equal(f.regions[0x44][:904], data[4096:]) {
			t.Fatal("data not placed in the peer's buffers")
		}
		if (ch == smb2.ChannelRDMAV1Invalidate) != (inv == 0x33) || (ch == smb2.ChannelRDMAV1) != (inv == 0) {
			t.Fatalf("channel %d: invalidate %#x", ch, inv)
		}
		if cnt := counters(c); cnt != [5]int64{0, 0, 1, 5000, 0} || c.Pending() != 0 {
			t.Fatalf("counters %v, %d pending", cnt, c.Pending())
		}
	}
}

// TestInterimAndError: an interim response keeps the request, the final
// one ends it; an error response goes unchanged, ends it and still
// invalidates.
func TestInterimAndError(t *testing.T) {
	f := newFake()
	f.regions[1] = make([]byte, 100)
	c := New(f, 1<<20, 0, nil)
	fromPeer(t, c, rdmaRead(1, smb2.ChannelRDMAV1Invalidate, 100, desc(1, 100)))
	interim := readResponse(1, smb2.StatusPending, smb2.FlagAsync, nil)
	if out, inv := fromProgram(t, c, interim); !bytes.Equal(out, interim) || inv != 0 || c.Pending() != 1 {
		t.Fatalf("interim: changed %v, invalidate %#x, %d pending", !bytes.Equal(out, interim), inv, c.Pending())
	}
	final := readResponse(1, 0, smb2.FlagAsync, pattern(100, 3))
	if out, inv := fromProgram(t, c, final); len(out) != smb2.ReadResponseRDMALen || inv != 1 || c.Pending() != 0 {
		t.Fatalf("final: %d bytes, invalidate %#x, %d pending", len(out), inv, c.Pending())
	}
	const endOfFile = 0xc0000011
	fromPeer(t, c, rdmaRead(2, smb2.ChannelRDMAV1Invalidate, 100, desc(1, 100)))
	errResp := readResponse(2, endOfFile, 0, nil)
	if out, inv := fromProgram(t, c, errResp); !bytes.Equal(out, errResp) || inv != 1 || c.Pending() != 0 {
		t.Fatalf("error: changed %v, invalidate %#x, %d pending", !bytes.Equal(out, errResp), inv, c.Pending())
	}
	// A response nobody asked for with an RDMA channel goes unchanged.
	stray := readResponse(3, 0, 0, []byte("abc"))
	if out, inv := fromProgram(t, c, stray); !bytes.Equal(out, stray) || inv != 0 {
		t.Fatal("stray response changed")
	}
	if f.writes != 1 || counters(c)[4] != 0 {
		t.Fatalf("%d RDMA writes, counters %v", f.writes, counters(c))
	}
}

// TestPassthrough: what cannot be rewritten reaches the program unchanged
// and is counted.
func TestPassthrough(t *testing.T) {
	f := newFake()
	f.regions[1] = make([]byte, 1<<20)
	c := New(f, 65536, 0, nil)
	signed := rdmaRead(1, smb2.ChannelRDMAV1, 100, desc(1, 100))
	binary.LittleEndian.PutUint32(signed[16:], smb2.FlagSigned)
	tooBig := rdmaWrite(2, smb2.ChannelRDMAV1, 65537, desc(1, 65537))
	short := rdmaWrite(3, smb2.ChannelRDMAV1, 200, desc(1, 100)) // more than described
	noDesc := smb2.AppendWriteRequest(header(smb2.CommandWrite, 4, 0), &smb2.WriteRequest{Channel: smb2.ChannelRDMAV1, RemainingBytes: 10})
	zeroLen := rdmaRead(5, smb2.ChannelRDMAV1, 100, desc(1, 0))
	unknownCh := rdmaRead(6, 7, 100, desc(1, 100))
	tooMany := rdmaRead(7, smb2.ChannelRDMAV1, 100, make([]smb2.Descriptor, MaxDescriptors+1)...)
	for name, m := range map[string][]byte{"signed": signed, "too big": tooBig, "short": short, "no descriptors": noDesc,
		"zero length": zeroLen, "unknown channel": unknownCh, "too many descriptors": tooMany} {
		before := counters(c)[4]
		if got := fromPeer(t, c, m); !bytes.Equal(got, m) {
			t.Errorf("%s: changed", name)
		}
		if counters(c)[4] != before+1 {
			t.Errorf("%s: not counted", name)
		}
	}
	// Not counted: plain requests, and what is not SMB2 at all.
	plain := smb2.AppendReadRequest(header(smb2.CommandRead, 8, 0), &smb2.ReadRequest{Length: 10})
	transform := append([]byte("\xfdSMB"), make([]byte, 100)...)
	for _, m := range [][]byte{plain, transform, []byte("x")} {
		if got := fromPeer(t, c, m); !bytes.Equal(got, m) {
			t.Errorf("% x: changed", m[:4])
		}
	}
	if c.Pending() != 0 || f.reads != 0 || counters(c)[4] != 7 {
		t.Fatalf("%d pending, %d RDMA reads, counters %v", c.Pending(), f.reads, counters(c))
	}
	// A signed response to a remembered READ cannot be rewritten.
	fromPeer(t, c, rdmaRead(9, smb2.ChannelRDMAV1Invalidate, 100, desc(1, 100)))
	resp := readResponse(9, 0, smb2.FlagSigned, pattern(100, 4))
	if out, inv := fromProgram(t, c, resp); !bytes.Equal(out, resp) || inv != 1 || counters(c)[4] != 8 || c.Pending() != 0 {
		t.Fatalf("signed response: changed %v, invalidate %#x, counters %v", !bytes.Equal(out, resp), inv, counters(c))
	}
	// As does one with more data than the peer registered.
	fromPeer(t, c, rdmaRead(10, smb2.ChannelRDMAV1, 100, desc(1, 100)))
	resp = readResponse(10, 0, 0, pattern(101, 4))
	if out, _ := fromProgram(t, c, resp); !bytes.Equal(out, resp) || counters(c)[4] != 9 || f.writes != 0 {
		t.Fatalf("oversized response: changed %v, counters %v", !bytes.Equal(out, resp), counters(c))
	}
}

// TestDialect: once the program has chosen SMB 3.0.0, _V1_INVALIDATE is
// the program's to refuse (only _V1 exists there); in SMB 2.x no channel
// is rewritten.
func TestDialect(t *testing.T) {
	negotiate := func(d uint16) []byte {
		b := header(smb2.CommandNegotiate, 0, smb2.FlagResponse)
		body := make([]byte, 64)
		binary.LittleEndian.PutUint16(body, 65)
		binary.LittleEndian.PutUint16(body[4:], d)
		return append(b, body...)
	}
	for _, tc := range []struct {
		dialect        uint16
		v1, invalidate bool // rewritten
	}{{smb2.Dialect300, true, false}, {smb2.Dialect302, true, true}, {smb2.Dialect210, false, false}} {
		f := newFake()
		f.regions[1] = make([]byte, 100)
		c := New(f, 1<<20, 0, nil)
		if out, _ := fromProgram(t, c, negotiate(tc.dialect)); !bytes.Equal(out, negotiate(tc.dialect)) {
			t.Fatal("NEGOTIATE response changed")
		}
		for ch, want := range map[uint32]bool{smb2.ChannelRDMAV1: tc.v1, smb2.ChannelRDMAV1Invalidate: tc.invalidate} {
			m := rdmaRead(1, ch, 100, desc(1, 100))
			if got := fromPeer(t, c, m); bytes.Equal(got, m) == want {
				t.Errorf("dialect %#x, channel %d: rewritten %v, want %v", tc.dialect, ch, !bytes.Equal(got, m), want)
			}
		}
	}
}

// TestCompound: each element of a chain is rewritten and the chain's
// offsets follow, in both directions.
func TestCompound(t *testing.T) {
	f := newFake()
	data := pattern(3001, 5)
	f.regions[1] = append([]byte(nil), data...)
	f.regions[2] = make([]byte, 700)
	c := New(f, 1<<20, 0, nil)
	other := append(header(0x0e, 20, smb2.FlagRelated), make([]byte, 33)...) // 97 bytes
	req := chain(other, rdmaWrite(21, smb2.ChannelRDMAV1Invalidate, 3001, desc(1, 3001)), rdmaRead(22, smb2.ChannelRDMAV1Invalidate, 700, desc(2, 700)))
	got := fromPeer(t, c, req)
	want := chain(other, inlineWrite(21, data), inlineRead(22, 700))
	if !bytes.Equal(got, want) {
		t.Fatalf("program got %d bytes, want %d", len(got), len(want))
	}
	for off := 0; off < len(got); {
		_, next, err := smb2.Element(got, off)
		if err != nil {
			t.Fatal(err)
		}
		off = next
	}
	otherResp := append(header(0x0e, 20, smb2.FlagResponse), make([]byte, 9)...)
	readData := pattern(700, 6)
	resp := chain(otherResp, writeResponse(21, 0, 0, 3001), readResponse(22, 0, 0, readData))
	out, inv := fromProgram(t, c, resp)
	if want := chain(otherResp, writeResponse(21, 0, 0, 3001), rdmaReadResponse(22, 700)); !bytes.Equal(out, want) {
		t.Fatalf("peer got\n% x\nwant\n% x", out, want)
	}
	if inv != 1 || !bytes.Equal(f.regions[2], readData) || c.Pending() != 0 {
		t.Fatalf("invalidate %#x, %d pending", inv, c.Pending())
	}
	// The READ response in the middle of a chain.
	fromPeer(t, c, rdmaRead(23, smb2.ChannelRDMAV1, 700, desc(2, 700)))
	resp = chain(readResponse(23, 0, 0, readData[:10]), otherResp)
	out, _ = fromProgram(t, c, resp)
	if want := chain(rdmaReadResponse(23, 10), otherResp); !bytes.Equal(out, want) {
		t.Fatalf("peer got\n% x\nwant\n% x", out, want)
	}
}

// TestHostile: bad tokens and bounds end in an error, never a panic;
// malformed chains pass unchanged.
func TestHostile(t *testing.T) {
	f := newFake()
	f.regions[1] = make([]byte, 100)
	c := New(f, 1<<20, 0, nil)
	for name, m := range map[string][]byte{
		"bad token":  rdmaWrite(1, smb2.ChannelRDMAV1, 100, desc(99, 100)),
		"past end":   rdmaWrite(2, smb2.ChannelRDMAV1, 200, desc(1, 200)),
		"bad offset": rdmaWrite(3, smb2.ChannelRDMAV1, 10, smb2.Descriptor{Offset: 5, Token: 1, Length: 10}),
	} {
		if _, _, err := c.FromPeer(context.Background(), framed(m)); !errors.Is(err, errAccess) {
			t.Errorf("%s: %v, want the transfer's error", name, err)
		}
	}
	fromPeer(t, c, rdmaRead(4, smb2.ChannelRDMAV1, 100, smb2.Descriptor{Offset: base + 50, Token: 1, Length: 100}))
	if _, _, err := c.FromProgram(context.Background(), readResponse(4, 0, 0, make([]byte, 100))); !errors.Is(err, errAccess) {
		t.Errorf("READ data past the peer's region: %v", err)
	}
	good := rdmaRead(5, smb2.ChannelRDMAV1, 100, desc(1, 100))
	for name, m := range map[string][]byte{
		"NextCommand past the end": func() []byte { b := chain(good, good); smb2.SetNextCommand(b, 4000); return b }(),
		"NextCommand unaligned":    func() []byte { b := chain(good, good); smb2.SetNextCommand(b, 129); return b }(),
		"chain too long": func() []byte {
			es := make([][]byte, maxElements+1)
			for i := range es {
				es[i] = good
			}
			return chain(es...)
		}(),
		"channel info outside": func() []byte {
			b := append([]byte(nil), good...)
			binary.LittleEndian.PutUint16(b[64+44:], 200)
			return b
		}(),
	} {
		if got := fromPeer(t, c, m); !bytes.Equal(got, m) {
			t.Errorf("%s: changed", name)
		}
	}
	// A bad chain from the program: what precedes the bad element is
	// rewritten, the rest goes as it is.
	fromPeer(t, c, rdmaRead(6, smb2.ChannelRDMAV1, 100, desc(1, 100)))
	bad := chain(readResponse(6, 0, 0, make([]byte, 100)), writeResponse(7, 0, 0, 1), writeResponse(8, 0, 0, 1))
	second := 64 + 16 + 100 + 4
	smb2.SetNextCommand(bad[second:], 12)
	out, _ := fromProgram(t, c, bad)
	want := append(rdmaReadResponse(6, 100), bad[second:]...)
	smb2.SetNextCommand(want, smb2.ReadResponseRDMALen)
	if !bytes.Equal(out, want) {
		t.Fatalf("bad chain from the program:\n% x\nwant\n% x", out, want)
	}
}

// TestTableFull: a full table of remembered requests holds the next one
// back until a response frees an entry; Close releases a waiter.
func TestTableFull(t *testing.T) {
	f := newFake()
	f.regions[1] = make([]byte, 100)
	c := New(f, 1<<20, 2, nil)
	fromPeer(t, c, rdmaRead(1, smb2.ChannelRDMAV1, 100, desc(1, 100)))
	fromPeer(t, c, rdmaRead(2, smb2.ChannelRDMAV1, 100, desc(1, 100)))
	done := make(chan error, 1)
	go func() {
		_, _, err := c.FromPeer(context.Background(), framed(rdmaRead(3, smb2.ChannelRDMAV1, 100, desc(1, 100))))
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("third request went with the table full: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	if _, _, err := c.FromProgram(context.Background(), readResponse(1, 0, 0, nil)); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil || c.Pending() != 2 {
		t.Fatalf("%v, %d pending", err, c.Pending())
	}
	go func() {
		_, _, err := c.FromPeer(context.Background(), framed(rdmaRead(4, smb2.ChannelRDMAV1, 100, desc(1, 100))))
		done <- err
	}()
	time.Sleep(10 * time.Millisecond)
	c.Close()
	if err := <-done; !errors.Is(err, ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
}

// TestNoAllocs: a WRITE, a READ and its response in steady state allocate
// nothing.
func TestNoAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops buffers at random under the race detector")
	}
	f := newFake()
	f.regions[1] = pattern(1<<20, 7)
	c := New(f, 1<<20, 0, nil)
	w := framed(rdmaWrite(1, smb2.ChannelRDMAV1Invalidate, 1<<20, desc(1, 1<<20)))
	r := framed(rdmaRead(2, smb2.ChannelRDMAV1Invalidate, 1<<20, desc(1, 1<<20)))
	wresp := writeResponse(1, 0, 0, 1<<20)
	rresp := readResponse(2, 0, 0, pattern(1<<20, 8))
	in := make([]byte, len(rresp))
	ctx := context.Background()
	run := func() {
		out, buf, err := c.FromPeer(ctx, w)
		if err != nil || len(out) < 1<<20 {
			t.Fatal(err)
		}
		c.pool.Put(buf)
		if _, buf, err = c.FromPeer(ctx, r); err != nil {
			t.Fatal(err)
		}
		c.pool.Put(buf)
		if _, inv, err := c.FromProgram(ctx, wresp); err != nil || inv != 1 {
			t.Fatal(err, inv)
		}
		copy(in, rresp)
		if out, inv, err := c.FromProgram(ctx, in); err != nil || inv != 1 || len(out) != smb2.ReadResponseRDMALen {
			t.Fatal(err, inv)
		}
	}
	run()
	if n := testing.AllocsPerRun(100, run); n != 0 {
		t.Fatalf("%v allocations per WRITE+READ", n)
	}
}

// FuzzChannel feeds arbitrary bytes as a message from the peer, then as a
// PDU from the program: no panic, framing consistent, output bounded.
func FuzzChannel(f *testing.F) {
	d := desc(1, 300)
	f.Add(rdmaWrite(1, smb2.ChannelRDMAV1Invalidate, 300, d), writeResponse(1, 0, 0, 300))
	f.Add(rdmaRead(2, smb2.ChannelRDMAV1, 300, d), readResponse(2, 0, 0, pattern(300, 1)))
	f.Add(chain(rdmaRead(3, smb2.ChannelRDMAV1Invalidate, 100, d), rdmaWrite(4, smb2.ChannelRDMAV1, 50, d)),
		chain(readResponse(3, 0, 0, pattern(100, 2)), writeResponse(4, 0, 0, 50)))
	f.Add(rdmaRead(5, smb2.ChannelRDMAV1, 300, d), readResponse(5, smb2.StatusPending, smb2.FlagAsync, nil))
	f.Add([]byte("\xfdSMB"), []byte{})
	f.Fuzz(func(t *testing.T, peer, program []byte) {
		fr := newFake()
		fr.regions[1] = make([]byte, 300)
		c := New(fr, 4096, 4, nil)
		defer c.Close()
		in := framed(peer)
		done := make(chan struct{})
		var out []byte
		var err error
		go func() {
			defer close(done)
			var buf *[]byte
			out, buf, err = c.FromPeer(context.Background(), in)
			if err == nil {
				out = append([]byte(nil), out...)
			}
			c.pool.Put(buf)
		}()
		select {
		case <-done:
		case <-time.After(time.Second):
			c.Close() // more than 4 requests to remember: it waits for room
			<-done
		}
		if err == nil {
			if size, ok := framing.Parse(out); !ok || size != len(out)-4 || size > len(peer)+8*maxElements+4096*2 {
				t.Fatalf("output of %d bytes for %d", len(out), len(peer))
			}
		}
		pout, _, err := c.FromProgram(context.Background(), append([]byte(nil), program...))
		if err == nil && len(pout) > len(program) {
			t.Fatalf("program's %d bytes grew to %d", len(program), len(pout))
		}
	})
}
