// Package framing owns the Direct TCP framing of SMB2 PDUs (MS-SMB2 2.1),
// both ways: each PDU on a byte stream is preceded by a 4-byte header, a
// zero byte and the PDU's 24-bit big-endian length. Put and Append encode
// a header, Parse decodes a whole one, and Header reads one from a stream
// written in pieces. Nothing here allocates.
package framing

import "errors"

// HeaderLen is the size of the header.
const HeaderLen = 4

// MaxSize is the largest PDU length a header can carry (24 bits).
const MaxSize = 1<<24 - 1

// ErrLength is returned by Put and Append for a PDU length a header cannot
// carry: zero (no PDU is empty) or more than MaxSize.
var ErrLength = errors.New("framing: PDU length not in 1..16777215")

// Put writes the header of an n-byte PDU to b[:HeaderLen]; it returns
// ErrLength, leaving b as it was, if n is not in 1..MaxSize. Like
// binary.BigEndian.PutUint32, it panics if b is shorter than HeaderLen.
func Put(b []byte, n int) error {
	_ = b[HeaderLen-1] // one bounds check, and the panic before any write
	if n < 1 || n > MaxSize {
		return ErrLength
	}
	b[0], b[1], b[2], b[3] = 0, byte(n>>16), byte(n>>8), byte(n)
	return nil
}

// Append appends the header of an n-byte PDU to b; it returns b unchanged
// and ErrLength if n is not in 1..MaxSize.
func Append(b []byte, n int) ([]byte, error) {
	if n < 1 || n > MaxSize {
		return b, ErrLength
	}
	return append(b, 0, byte(n>>16), byte(n>>8), byte(n)), nil
}

// Parse decodes the header in b[:HeaderLen] and returns the PDU's length;
// ok is false if it is not valid framing (a first byte other than zero,
// or a length of zero). It panics if b is shorter than HeaderLen.
func Parse(b []byte) (size int, ok bool) {
	_ = b[HeaderLen-1]
	size = int(b[1])<<16 | int(b[2])<<8 | int(b[3])
	return size, b[0] == 0 && size != 0
}

// Header collects the header of the next PDU, whatever pieces it comes
// in. The zero value is ready for use.
type Header struct {
	b [HeaderLen]byte
	n int
}

// Take consumes header bytes from p and returns how many it took. Once the
// header is complete, done is true and size is the PDU's length, or -1 if
// the header is not valid framing (see Parse); the Header is then ready
// for the next PDU.
func (h *Header) Take(p []byte) (k, size int, done bool) {
	k = copy(h.b[h.n:], p)
	h.n += k
	if h.n < len(h.b) {
		return k, 0, false
	}
	h.n = 0
	size, ok := Parse(h.b[:])
	if !ok {
		return k, -1, true
	}
	return k, size, true
}

// Last is the last complete header taken, for error messages.
func (h *Header) Last() [HeaderLen]byte { return h.b }

// Pending reports whether part of a header has been taken.
func (h *Header) Pending() bool { return h.n != 0 }
