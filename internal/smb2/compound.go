package smb2

import (
	"encoding/binary"
	"fmt"
)

// Element returns the element of the compound chain msg ([MS-SMB2]
// 3.2.4.1.4) that starts at off and where the next one starts (len(msg)
// after the last). NextCommand must be a multiple of 8 and leave room for
// the next element's header; the last element runs to the end of msg.
func Element(msg []byte, off int) (elem []byte, next int, err error) {
	if off < 0 || len(msg)-off < HeaderLen {
		return nil, 0, ErrShort
	}
	nc := binary.LittleEndian.Uint32(msg[off+20:])
	if nc == 0 {
		return msg[off:], len(msg), nil
	}
	if nc%8 != 0 || nc < HeaderLen || uint64(nc) > uint64(len(msg)-off-HeaderLen) {
		return nil, 0, fmt.Errorf("%w: NextCommand %d at offset %d of a %d-byte chain", ErrMalformed, nc, off, len(msg))
	}
	return msg[off : off+int(nc)], off + int(nc), nil
}

// SetNextCommand writes the NextCommand field of the header at the start
// of elem.
func SetNextCommand(elem []byte, n uint32) { binary.LittleEndian.PutUint32(elem[20:], n) }

// Pad8 is n rounded up to a multiple of 8: where the next element of a
// chain starts after an element of n bytes.
func Pad8(n int) int { return (n + 7) &^ 7 }

// IsSMB2 reports whether b starts with an SMB2 header (not a transform
// or compression header, not SMB1), without the cost of an error.
func IsSMB2(b []byte) bool {
	return len(b) >= HeaderLen && string(b[:4]) == "\xfeSMB" && binary.LittleEndian.Uint16(b[4:]) == HeaderLen
}
