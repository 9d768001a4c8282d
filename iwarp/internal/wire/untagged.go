package wire

import "encoding/binary"

// AppendUntagged appends the header of an untagged segment (a Send variant
// on queue 0). inv is the STag to invalidate for the Invalidate variants.
func AppendUntagged(b []byte, op Opcode, last bool, inv, qn, msn, mo uint32) []byte {
	b = appendCtrl(b, op, last)
	b = binary.BigEndian.AppendUint32(b, inv)
	b = binary.BigEndian.AppendUint32(b, qn)
	b = binary.BigEndian.AppendUint32(b, msn)
	return binary.BigEndian.AppendUint32(b, mo)
}
