package wire

import "encoding/binary"

// AppendTagged appends the header of a tagged segment: an RDMA Write or an
// RDMA Read Response placing data at (stag, to).
func AppendTagged(b []byte, op Opcode, last bool, stag uint32, to uint64) []byte {
	b = appendCtrl(b, op, last)
	b = binary.BigEndian.AppendUint32(b, stag)
	return binary.BigEndian.AppendUint64(b, to)
}
