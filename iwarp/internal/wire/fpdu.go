package wire

import (
	"encoding/binary"
	"hash/crc32"
)

// MPA framing constants.
const (
	// MPALenSize is the size of the ULPDU length field.
	MPALenSize = 2
	// CRCSize is the size of the CRC field, present in every FPDU.
	CRCSize = 4
	// MaxULPDU is the largest ULPDU the 16-bit length field can describe.
	MaxULPDU = 0xffff
)

// Castagnoli is the CRC32c table MPA uses; hash/crc32 accelerates it in
// hardware where the CPU can.
var Castagnoli = crc32.MakeTable(crc32.Castagnoli)

// PadLen returns the number of pad bytes after a ULPDU of length n.
func PadLen(n int) int { return (4 - (MPALenSize+n)&3) & 3 }

// FPDULen returns the size on the wire of an FPDU carrying a ULPDU of n
// bytes. The 4-byte CRC field is always there: without CRC it is sent as
// zero and not checked (RFC 5044 section 4.1; Linux siw does exactly this,
// see testdata/captures).
func FPDULen(n int) int { return MPALenSize + n + PadLen(n) + CRCSize }

// AppendMPALen appends the MPA ULPDU length field.
func AppendMPALen(b []byte, ulpdu int) []byte {
	return binary.BigEndian.AppendUint16(b, uint16(ulpdu))
}

// Zero pad bytes.
var pad [4]byte

// AppendPad appends the pad for a ULPDU of length n.
func AppendPad(b []byte, n int) []byte { return append(b, pad[:PadLen(n)]...) }

// AppendCRC appends the CRC trailer for a CRC value. The CRC32c digest goes
// out least significant byte first, as in iSCSI and Linux siw (whose crc32c
// hash emits little-endian).
func AppendCRC(b []byte, crc uint32) []byte { return binary.LittleEndian.AppendUint32(b, crc) }

// CRCFromTrailer reads a CRC trailer.
func CRCFromTrailer(b []byte) uint32 { return binary.LittleEndian.Uint32(b) }

// UpdateCRC extends a running MPA CRC (start with 0) over p.
func UpdateCRC(crc uint32, p []byte) uint32 { return crc32.Update(crc, Castagnoli, p) }

// PutMPALen writes the MPA ULPDU length field at the start of b, for an
// encoder that learns the length after appending the ULPDU.
func PutMPALen(b []byte, ulpdu int) { binary.BigEndian.PutUint16(b, uint16(ulpdu)) }

// FPDUPrefixLen is how much of an FPDU a receiver needs to know its
// ULPDU length and its DDP/RDMAP header length: the MPA length field and
// the control field.
const FPDUPrefixLen = MPALenSize + 2

// ParseFPDUPrefix reads the first FPDUPrefixLen bytes of an FPDU: the
// ULPDU length, and the length of the DDP/RDMAP header the control field
// announces (tagged, untagged, or a Read Request with its RDMAP fields).
// It does not validate the header (ParseHeader does, once hdrLen bytes
// are there), so it cannot fail; b must hold FPDUPrefixLen bytes.
func ParseFPDUPrefix(b []byte) (ulpdu, hdrLen int) {
	_ = b[FPDUPrefixLen-1]
	ulpdu = int(binary.BigEndian.Uint16(b))
	ctrl := binary.BigEndian.Uint16(b[MPALenSize:])
	switch {
	case ctrl&ctrlTagged != 0:
		hdrLen = TaggedLen
	case Opcode(ctrl&ctrlOpcode) == OpReadRequest:
		hdrLen = ReadRequestLen
	default:
		hdrLen = UntaggedLen
	}
	return ulpdu, hdrLen
}
