package framing

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"testing"
)

func TestHeaderPieces(t *testing.T) {
	var h Header
	stream := []byte{0, 0, 1, 0, 'x', 0, 0x12, 0x34}
	// One byte at a time: the first header completes on its fourth byte.
	for i := 0; i < 3; i++ {
		if k, _, done := h.Take(stream[i : i+1]); k != 1 || done {
			t.Fatalf("byte %d: took %d, done %v", i, k, done)
		}
	}
	if !h.Pending() {
		t.Fatal("three bytes taken, nothing pending")
	}
	if k, size, done := h.Take(stream[3:]); k != 1 || !done || size != 256 {
		t.Fatalf("fourth byte: took %d, size %d, done %v", k, size, done)
	}
	// A header that is not framing.
	if _, size, done := h.Take([]byte{1, 0, 0, 5}); !done || size != -1 || h.Last() != [4]byte{1, 0, 0, 5} {
		t.Fatalf("bad first byte: size %d, done %v, last % x", size, done, h.Last())
	}
	if _, size, done := h.Take([]byte{0, 0, 0, 0}); !done || size != -1 {
		t.Fatalf("zero length: size %d, done %v", size, done)
	}
	if k, size, done := h.Take(stream[5:]); k != 3 || done || size != 0 {
		t.Fatalf("partial: took %d, size %d, done %v", k, size, done)
	}
}

// FuzzHeader splits a stream of framed PDUs into arbitrary pieces: the
// sizes found must be those written, whatever the split.
func FuzzHeader(f *testing.F) {
	f.Add([]byte{1, 200, 7}, uint8(3))
	f.Add([]byte{0xff, 0xff}, uint8(1))
	f.Fuzz(func(t *testing.T, sizes []byte, piece uint8) {
		var stream []byte
		var want []int
		for _, s := range sizes {
			n := int(s) + 1
			stream = binary.BigEndian.AppendUint32(stream, uint32(n))
			stream = append(stream, bytes.Repeat([]byte{s}, n)...)
			want = append(want, n)
		}
		step := int(piece%16) + 1
		var h Header
		var got []int
		for p, left := stream, 0; len(p) > 0; {
			chunk := p[:min(step, len(p))]
			if left > 0 {
				k := min(left, len(chunk))
				left -= k
				p = p[k:]
				continue
			}
			k, size, done := h.Take(chunk)
			p = p[k:]
			if done {
				if size < 0 {
					t.Fatalf("valid framing refused: % x", h.Last())
				}
				got = append(got, size)
				left = size
			}
		}
		if len(got) != len(want) {
			t.Fatalf("%d PDUs found, %d written", len(got), len(want))
		}
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("PDU %d: size %d, written %d", i, got[i], want[i])
			}
		}
	})
}

func TestPutAppend(t *testing.T) {
	for _, c := range []struct {
		n    int
		want []byte
	}{
		{1, []byte{0, 0, 0, 1}},
		{0x40, []byte{0, 0, 0, 0x40}},
		{0x123456, []byte{0, 0x12, 0x34, 0x56}},
		{MaxSize, []byte{0, 0xff, 0xff, 0xff}},
	} {
		b := []byte{9, 9, 9, 9, 9}
		if err := Put(b, c.n); err != nil || !bytes.Equal(b[:4], c.want) || b[4] != 9 {
			t.Errorf("Put(%#x): % x, %v; want % x", c.n, b, err, c.want)
		}
		got, err := Append([]byte{7}, c.n)
		if err != nil || !bytes.Equal(got, append([]byte{7}, c.want...)) {
			t.Errorf("Append(%#x): % x, %v", c.n, got, err)
		}
		if size, ok := Parse(c.want); !ok || size != c.n {
			t.Errorf("Parse(% x): %d, %v; want %d", c.want, size, ok, c.n)
		}
	}
	for _, n := range []int{0, -1, -MaxSize, MaxSize + 1, math.MaxInt} {
		b := []byte{9, 9, 9, 9}
		if err := Put(b, n); !errors.Is(err, ErrLength) || !bytes.Equal(b, []byte{9, 9, 9, 9}) {
			t.Errorf("Put(%d): %v, % x; want ErrLength, b untouched", n, err, b)
		}
		if got, err := Append([]byte{7}, n); !errors.Is(err, ErrLength) || !bytes.Equal(got, []byte{7}) {
			t.Errorf("Append(%d): % x, %v; want ErrLength, b unchanged", n, got, err)
		}
	}
}

func TestParseInvalid(t *testing.T) {
	for _, b := range [][]byte{
		{0, 0, 0, 0},       // zero length
		{1, 0, 0, 5},       // first byte not zero
		{0xfe, 0, 0, 0x40}, // the SMB Direct / NetBIOS session types are not framing
		{0x80, 0xff, 0xff, 0xff},
	} {
		if size, ok := Parse(b); ok {
			t.Errorf("Parse(% x): %d, ok", b, size)
		}
	}
	// Parse reads only the header: bytes after it are the PDU's.
	if size, ok := Parse([]byte{0, 0, 1, 0, 0xfe, 'S', 'M', 'B'}); !ok || size != 256 {
		t.Errorf("Parse with a PDU after it: %d, %v", size, ok)
	}
}

func TestShortBufferPanics(t *testing.T) {
	for name, f := range map[string]func(){
		"Put":   func() { _ = Put(make([]byte, 3), 1) },
		"Parse": func() { Parse(make([]byte, 3)) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s of 3 bytes did not panic", name)
				}
			}()
			f()
		}()
	}
}

func TestNoAllocs(t *testing.T) {
	b := make([]byte, 0, 64)
	var h Header
	stream := []byte{0, 0, 1, 0}
	allocs := testing.AllocsPerRun(100, func() {
		var hdr [HeaderLen]byte
		if Put(hdr[:], 300) != nil || Put(hdr[:], 0) == nil {
			t.Fatal("Put")
		}
		if _, err := Append(b[:0], 300); err != nil {
			t.Fatal(err)
		}
		if _, ok := Parse(hdr[:]); !ok {
			t.Fatal("Parse")
		}
		h.Take(stream[:1])
		h.Take(stream[1:])
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per run", allocs)
	}
}

// FuzzParse checks Parse against the definition for any four bytes, and
// that Put writes back exactly the header Parse accepted.
func FuzzParse(f *testing.F) {
	f.Add([]byte{0, 0, 0, 1})
	f.Add([]byte{0, 0xff, 0xff, 0xff})
	f.Add([]byte{0, 0, 0, 0})
	f.Add([]byte{0xfe, 'S', 'M', 'B'})
	f.Add([]byte{0, 1, 2, 3, 4, 5})
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) < HeaderLen {
			return
		}
		v := binary.BigEndian.Uint32(b)
		size, ok := Parse(b)
		if want := v != 0 && v <= MaxSize; ok != want || (ok && size != int(v)) {
			t.Fatalf("Parse(% x): %d, %v", b[:4], size, ok)
		}
		if !ok {
			return
		}
		var h [HeaderLen]byte
		if err := Put(h[:], size); err != nil || !bytes.Equal(h[:], b[:4]) {
			t.Fatalf("Put(%d): % x, %v; parsed from % x", size, h, err, b[:4])
		}
	})
}

// FuzzPut checks Put and Append against each other and Parse for any
// length: in range they write the same header, which parses back to n;
// out of range both refuse with ErrLength.
func FuzzPut(f *testing.F) {
	f.Add(int64(1))
	f.Add(int64(MaxSize))
	f.Add(int64(MaxSize + 1))
	f.Add(int64(0))
	f.Add(int64(-1))
	f.Add(int64(1) << 40)
	f.Fuzz(func(t *testing.T, n64 int64) {
		n := int(n64)
		if int64(n) != n64 {
			return // 32-bit int
		}
		var h [HeaderLen]byte
		err := Put(h[:], n)
		a, aerr := Append(nil, n)
		if n < 1 || n > MaxSize {
			if !errors.Is(err, ErrLength) || !errors.Is(aerr, ErrLength) || len(a) != 0 || h != [HeaderLen]byte{} {
				t.Fatalf("%d: Put %v % x, Append %v % x", n, err, h, aerr, a)
			}
			return
		}
		if err != nil || aerr != nil || !bytes.Equal(a, h[:]) || h[0] != 0 {
			t.Fatalf("%d: Put % x %v, Append % x %v", n, h, err, a, aerr)
		}
		if size, ok := Parse(h[:]); !ok || size != n {
			t.Fatalf("%d: parsed back as %d, %v", n, size, ok)
		}
	})
}
