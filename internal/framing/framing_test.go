package framing

import (
	"bytes"
	"encoding/binary"
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
