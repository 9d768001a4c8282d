package smb2

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
)

func TestDescriptors(t *testing.T) {
	ci := AppendDescriptor(nil, Descriptor{Offset: 0x0102030405060708, Token: 0xaabbccdd, Length: 4096})
	ci = AppendDescriptor(ci, Descriptor{Offset: 9, Token: 10, Length: 11})
	want := []byte{8, 7, 6, 5, 4, 3, 2, 1, 0xdd, 0xcc, 0xbb, 0xaa, 0, 0x10, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 10, 0, 0, 0, 11, 0, 0, 0}
	if !bytes.Equal(ci, want) {
		t.Fatalf("% x", ci)
	}
	l, err := ParseDescriptors(ci, 2)
	if err != nil || l.Len() != 2 || l.At(1) != (Descriptor{9, 10, 11}) || l.Total() != 4107 {
		t.Fatalf("%v %v", l, err)
	}
	zero := AppendDescriptor(nil, Descriptor{Offset: 1, Token: 2})
	for name, b := range map[string][]byte{"empty": nil, "15 bytes": ci[:15], "17 bytes": ci[:17], "too many": ci, "length 0": zero} {
		if _, err := ParseDescriptors(b, 1); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
}

func chain(elems ...[]byte) []byte {
	var b []byte
	for i, e := range elems {
		start := len(b)
		b = append(b, e...)
		if i < len(elems)-1 {
			for len(b)%8 != 0 {
				b = append(b, 0)
			}
			SetNextCommand(b[start:], uint32(len(b)-start))
		}
	}
	return b
}

func TestElement(t *testing.T) {
	a := readRequest(nil) // 113 bytes: padded to 120
	b := writeRequest([]byte("xyz"), nil)
	msg := chain(a, b)
	e, next, err := Element(msg, 0)
	if err != nil || len(e) != 120 || next != 120 {
		t.Fatalf("first: %d %d %v", len(e), next, err)
	}
	e, next, err = Element(msg, next)
	if err != nil || !bytes.Equal(e, b) || next != len(msg) {
		t.Fatalf("second: %d %d %v", len(e), next, err)
	}
	for _, nc := range []uint32{8, 60, 121, 0xfffffff8, uint32(len(msg) - HeaderLen + 8)} {
		bad := append([]byte{}, msg...)
		SetNextCommand(bad, nc)
		if _, _, err := Element(bad, 0); !errors.Is(err, ErrMalformed) {
			t.Errorf("NextCommand %d: %v", nc, err)
		}
	}
	if _, _, err := Element(msg[:120+10], 120); !errors.Is(err, ErrShort) {
		t.Errorf("short element: %v", err)
	}
	if Pad8(113) != 120 || Pad8(80) != 80 || !IsSMB2(a) || IsSMB2([]byte("\xfdSMB")) {
		t.Fatal("Pad8/IsSMB2")
	}
}

// TestInlineForms: the exact bodies the daemon's channel hands a program
// and a peer.
func TestInlineForms(t *testing.T) {
	w := WriteRequest{Offset: 0x1122, FileID: [16]byte{1, 2, 3}, Flags: 0x5}
	b := AppendInlineWriteRequest(nil, &w, 300)
	want := make([]byte, 48)
	binary.LittleEndian.PutUint16(want, 49)
	binary.LittleEndian.PutUint16(want[2:], 0x70)
	binary.LittleEndian.PutUint32(want[4:], 300)
	binary.LittleEndian.PutUint64(want[8:], 0x1122)
	copy(want[16:], []byte{1, 2, 3})
	binary.LittleEndian.PutUint32(want[44:], 5)
	if !bytes.Equal(b, want) {
		t.Fatalf("inline WRITE body\n% x\nwant\n% x", b, want)
	}
	msg := append(AppendHeader(nil, CommandWrite, 1, 2, 3, 1, 1), b...)
	msg = append(msg, bytes.Repeat([]byte{7}, 300)...)
	if r, err := ParseWriteRequest(msg); err != nil || len(r.Data) != 300 || r.Offset != 0x1122 || r.Flags != 5 {
		t.Fatalf("%+v %v", r, err)
	}
	rb := AppendReadResponseRDMA(nil, 0x10000)
	if want := []byte{17, 0, 0x50, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0}; !bytes.Equal(rb, want) {
		t.Fatalf("READ response body % x", rb)
	}
	r := ReadRequest{Padding: 0x50, Flags: 1, Length: 9, MinimumCount: 3, RemainingBytes: 4}
	m := AppendReadRequest(AppendHeader(nil, CommandRead, 1, 2, 3, 1, 1), &r)
	if p, err := ParseReadRequest(m); err != nil || p.Padding != 0x50 || p.Flags != 1 || p.MinimumCount != 3 || p.RemainingBytes != 4 {
		t.Fatalf("%+v %v", p, err)
	}
}

// FuzzChannelCodecs runs the descriptor and chain parsers on arbitrary
// bytes: no panic, results within bounds.
func FuzzChannelCodecs(f *testing.F) {
	f.Add(AppendDescriptor(nil, Descriptor{1, 2, 3}), 0)
	f.Add(chain(readRequest(nil), writeRequest([]byte("abc"), nil)), 120)
	f.Fuzz(func(t *testing.T, b []byte, off int) {
		if l, err := ParseDescriptors(b, 4); err == nil {
			if l.Len() < 1 || l.Len() > 4 || l.Total() == 0 {
				t.Fatalf("%d descriptors, total %d", l.Len(), l.Total())
			}
		}
		for o := 0; ; {
			e, next, err := Element(b, o)
			if err != nil {
				break
			}
			if len(e) < HeaderLen || next <= o || next > len(b) {
				t.Fatalf("element [%d,%d) of %d", o, next, len(b))
			}
			if next == len(b) {
				break
			}
			o = next
		}
		_, _, _ = Element(b, off)
	})
}
