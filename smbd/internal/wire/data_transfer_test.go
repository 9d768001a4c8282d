package wire

import (
	"bytes"
	"math"
	"testing"
)

func TestDataTransferBytes(t *testing.T) {
	payload := []byte{0xfe, 'S', 'M', 'B', 0x40, 0}
	for _, tc := range []struct {
		name    string
		h       DataTransfer
		payload []byte
		hex     string
	}{
		// What cifs.ko and ksmbd send for a keepalive: no payload, 20
		// bytes, DataOffset 0 (smbd_post_send_iter, smb_direct_create_header).
		{"keepalive", DataTransfer{CreditsRequested: 255, Flags: FlagResponseRequested}, nil, `
			ff00 0000 // credits requested 255, granted 0
			0100 0000 // flags RESPONSE_REQUESTED, reserved
			00000000  // remaining
			00000000  // data offset 0
			00000000  // data length 0`},
		// A credit grant only.
		{"credits", DataTransfer{CreditsRequested: 255, CreditsGranted: 30}, nil, `
			ff00 1e00 0000 0000 00000000 00000000 00000000`},
		// The first fragment of a 100-byte upper-layer message: Padding
		// is sent and the payload starts at 24.
		{"fragment", DataTransfer{CreditsRequested: 10, CreditsGranted: 10, RemainingDataLength: 94, DataLength: 6}, payload, `
			0a00 0a00 // credits requested, granted
			0000 0000 // flags, reserved
			5e000000  // remaining 94
			18000000  // data offset 24
			06000000  // data length 6
			00000000  // padding
			fe534d42 4000 // payload`},
	} {
		want := hx(t, tc.hex)
		got := AppendDataTransfer([]byte{0xaa}, &tc.h)
		got = append(got, tc.payload...)
		if !bytes.Equal(got[1:], want) || got[0] != 0xaa {
			t.Errorf("%s: Append = % x, want aa % x", tc.name, got, want)
		}
		h, p, err := ParseDataTransfer(want)
		wantH := tc.h
		if tc.h.DataLength > 0 {
			wantH.DataOffset = DataTransferHeaderLen
		}
		if err != nil || h != wantH || !bytes.Equal(p, tc.payload) {
			t.Errorf("%s: Parse = %+v % x %v", tc.name, h, p, err)
		}
		if h.ResponseRequested() != (tc.h.Flags&1 != 0) {
			t.Errorf("%s: ResponseRequested = %v", tc.name, h.ResponseRequested())
		}
	}
}

func TestDataTransferAppendIgnoresDataOffset(t *testing.T) {
	for _, h := range []DataTransfer{
		{CreditsRequested: 1, DataOffset: 64},
		{CreditsRequested: 1, DataOffset: 64, DataLength: 1},
	} {
		b := AppendDataTransfer(nil, &h)
		got, _, _ := ParseDataTransfer(append(b, 0))
		want := uint32(0)
		if h.DataLength > 0 {
			want = DataTransferHeaderLen
		}
		if got.DataOffset != want {
			t.Errorf("DataLength %d: DataOffset %d, want %d", h.DataLength, got.DataOffset, want)
		}
		if n := len(b); n != DataTransferMinLen && h.DataLength == 0 || n != DataTransferHeaderLen && h.DataLength > 0 {
			t.Errorf("DataLength %d: header of %d bytes", h.DataLength, n)
		}
	}
}

// msg builds a Data Transfer message field by field, n bytes long.
func msg(credits uint16, off, length uint32, n int) []byte {
	b := AppendDataTransfer(nil, &DataTransfer{CreditsRequested: credits})
	b = append(b, make([]byte, max(n-len(b), 0))...)[:n]
	if n >= 20 {
		b[12], b[13], b[14], b[15] = byte(off), byte(off>>8), byte(off>>16), byte(off>>24)
		b[16], b[17], b[18], b[19] = byte(length), byte(length>>8), byte(length>>16), byte(length>>24)
	}
	return b
}

func TestDataTransferRules(t *testing.T) {
	for n := range DataTransferMinLen {
		if _, _, err := ParseDataTransfer(msg(1, 0, 0, n)); err != ErrShort {
			t.Errorf("%d bytes: %v, want ErrShort", n, err)
		}
	}
	for _, tc := range []struct {
		name string
		m    []byte
		rule Rule
	}{
		{"no credits requested", msg(0, 0, 0, 20), RuleCreditsRequested},
		{"offset 20", msg(1, 20, 4, 24), RuleDataOffsetAlignment},
		{"offset 25", msg(1, 25, 1, 26), RuleDataOffsetAlignment},
		{"offset 4 without data", msg(1, 4, 0, 24), RuleDataOffsetAlignment},
		{"offset 0 with data", msg(1, 0, 4, 24), RuleDataOffsetOverlap},
		{"offset 16 with data", msg(1, 16, 4, 24), RuleDataOffsetOverlap},
		{"one byte past the end", msg(1, 24, 5, 28), RuleDataBounds},
		{"offset past the end", msg(1, 32, 0, 24), RuleDataBounds},
		{"empty message with 24-byte header", msg(1, 24, 0, 20), RuleDataBounds},
		{"sum overflows 32 bits", msg(1, 0xfffffff8, 0x10, 64), RuleDataBounds},
		{"huge length", msg(1, 24, math.MaxUint32, 64), RuleDataBounds},
	} {
		h, p, err := ParseDataTransfer(tc.m)
		wantRule(t, err, tc.rule)
		if p != nil {
			t.Errorf("%s: payload % x with an error", tc.name, p)
		}
		if h.CreditsRequested != uint16(tc.m[0]) {
			t.Errorf("%s: header not decoded: %+v", tc.name, h)
		}
	}
	for _, tc := range []struct {
		name    string
		m       []byte
		payload int
	}{
		{"20-byte empty", msg(1, 0, 0, 20), 0},
		{"24-byte empty (padding sent)", msg(1, 0, 0, 24), 0},
		{"empty with offset 24", msg(1, 24, 0, 24), 0},
		{"data at 24", msg(1, 24, 8, 32), 8},
		{"data at 32, trailing bytes", msg(1, 32, 8, 48), 8},
		{"data to the end", msg(1, 24, 1340, 1364), 1340},
	} {
		h, p, err := ParseDataTransfer(tc.m)
		if err != nil || len(p) != tc.payload {
			t.Errorf("%s: %+v, %d bytes, %v", tc.name, h, len(p), err)
			continue
		}
		if tc.payload > 0 && (&p[0] != &tc.m[h.DataOffset] || cap(p) != len(p)) {
			t.Errorf("%s: payload does not alias the message at DataOffset with cap = len", tc.name)
		}
	}
}

func TestDataTransferCheckFragment(t *testing.T) {
	const limit = 0x2a756
	for _, tc := range []struct {
		data, remaining uint32
		ok              bool
	}{
		{0, 0, true},
		{1340, limit - 1340, true},
		{1340, limit - 1339, false},
		{0, limit, true},
		{0, limit + 1, false},
		{limit + 1, 0, false},
		{math.MaxUint32, math.MaxUint32, false}, // would wrap in 32 bits
		{math.MaxUint32, 1, false},
	} {
		h := DataTransfer{CreditsRequested: 1, DataLength: tc.data, RemainingDataLength: tc.remaining}
		err := h.CheckFragment(limit)
		if tc.ok && err != nil {
			t.Errorf("%d+%d: %v", tc.data, tc.remaining, err)
		}
		if !tc.ok {
			wantRule(t, err, RuleFragmentedSize)
		}
	}
}

func FuzzDataTransfer(f *testing.F) {
	f.Add(AppendDataTransfer(nil, &DataTransfer{CreditsRequested: 255, Flags: FlagResponseRequested}), uint32(0x2a756))
	f.Add(append(AppendDataTransfer(nil, &DataTransfer{CreditsRequested: 255, CreditsGranted: 1, RemainingDataLength: 10, DataLength: 4}), 0xfe, 'S', 'M', 'B'), uint32(1<<20))
	f.Add(msg(1, 32, 8, 48), uint32(0))
	f.Add(msg(1, 0xfffffff8, 0x10, 64), uint32(1<<20))
	f.Add(msg(0, 0, 0, 20), uint32(1<<20))
	f.Add(msg(1, 12, 4, 24), uint32(1<<20))
	f.Fuzz(func(t *testing.T, m []byte, maxFragmented uint32) {
		h, p, err := ParseDataTransfer(m)
		if err != nil {
			checkErr(t, err)
			if p != nil {
				t.Fatal("payload with an error")
			}
			return
		}
		if h.CreditsRequested == 0 || h.DataOffset%8 != 0 || uint64(h.DataOffset)+uint64(h.DataLength) > uint64(len(m)) ||
			len(p) != int(h.DataLength) || h.DataLength > 0 && (h.DataOffset < DataTransferHeaderLen || &p[0] != &m[h.DataOffset]) {
			t.Fatalf("accepted %+v with %d-byte payload from %d bytes", h, len(p), len(m))
		}
		// Round trip: the header re-encodes with the canonical DataOffset
		// and decodes to the same fields and payload.
		enc := AppendDataTransfer(nil, &h)
		enc = append(enc, p...)
		h2, p2, err := ParseDataTransfer(enc)
		want := h
		want.DataOffset = 0
		if h.DataLength > 0 {
			want.DataOffset = DataTransferHeaderLen
		}
		if err != nil || h2 != want || !bytes.Equal(p2, p) {
			t.Fatalf("round trip: %+v, %v; want %+v", h2, err, want)
		}
		if !bytes.Equal(AppendDataTransfer(nil, &h2), enc[:len(enc)-len(p)]) {
			t.Fatal("second encoding differs")
		}
		sum := uint64(h.DataLength) + uint64(h.RemainingDataLength)
		if err := h.CheckFragment(maxFragmented); (err == nil) != (sum <= uint64(maxFragmented)) {
			t.Fatalf("CheckFragment(%d) of %d+%d: %v", maxFragmented, h.DataLength, h.RemainingDataLength, err)
		} else if err != nil {
			checkErr(t, err)
		}
	})
}

var benchHeader = DataTransfer{CreditsRequested: 255, CreditsGranted: 12, RemainingDataLength: 4096, DataLength: 1340}

func BenchmarkAppendDataTransfer(b *testing.B) {
	buf := make([]byte, 0, 64)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendDataTransfer(buf[:0], &benchHeader)
	}
}

func BenchmarkParseDataTransfer(b *testing.B) {
	m := append(AppendDataTransfer(nil, &benchHeader), make([]byte, 1340)...)
	b.ReportAllocs()
	var n int
	for b.Loop() {
		h, p, err := ParseDataTransfer(m)
		if err != nil || h.CheckFragment(1<<20) != nil {
			b.Fatal(err)
		}
		n += len(p)
	}
	_ = n
}
