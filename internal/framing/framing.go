// Package framing reads the Direct TCP framing of SMB2 PDUs (MS-SMB2
// 2.1) from a byte stream written in pieces: each PDU is preceded by a
// zero byte and its 24-bit big-endian length.
package framing

// Header collects the 4-byte header of the next PDU, whatever pieces it
// comes in. The zero value is ready for use.
type Header struct {
	b [4]byte
	n int
}

// Take consumes header bytes from p and returns how many it took. Once the
// header is complete, done is true and size is the PDU's length, or -1 if
// the header is not valid framing (a first byte other than zero, or a
// length of zero); the Header is then ready for the next PDU.
func (h *Header) Take(p []byte) (k, size int, done bool) {
	k = copy(h.b[h.n:], p)
	h.n += k
	if h.n < len(h.b) {
		return k, 0, false
	}
	h.n = 0
	size = int(h.b[1])<<16 | int(h.b[2])<<8 | int(h.b[3])
	if h.b[0] != 0 || size == 0 {
		return k, -1, true
	}
	return k, size, true
}

// Last is the last complete header taken, for error messages.
func (h *Header) Last() [4]byte { return h.b }

// Pending reports whether part of a header has been taken.
func (h *Header) Pending() bool { return h.n != 0 }
