package wire

import "encoding/binary"

// BufferDescriptorV1 advertises a registered buffer for the peer's RDMA
// Read or Write (SMB_DIRECT_BUFFER_DESCRIPTOR_V1, [MS-SMBD] 2.2.3.1). An
// SMB2 READ or WRITE request with Channel ChannelRDMAV1 or
// ChannelRDMAV1Invalidate carries a list of them as its channel
// information ([MS-SMB2] 2.2.19, 2.2.21).
type BufferDescriptorV1 struct {
	Offset uint64 // the provider's offset (iWARP: tagged offset) of the first byte
	Token  uint32 // the Steering Tag of the registration
	Length uint32 // bytes to transfer
}

// AppendBufferDescriptors appends ds, 16 bytes each.
func AppendBufferDescriptors(b []byte, ds []BufferDescriptorV1) []byte {
	for i := range ds {
		b = binary.LittleEndian.AppendUint64(b, ds[i].Offset)
		b = binary.LittleEndian.AppendUint32(b, ds[i].Token)
		b = binary.LittleEndian.AppendUint32(b, ds[i].Length)
	}
	return b
}

// BufferDescriptors is a checked list of Buffer Descriptor V1 as received:
// it reads the entries from the message bytes it refers to, so walking it
// does not allocate.
type BufferDescriptors struct{ b []byte }

// ParseBufferDescriptors checks b, the channel information of an SMB2 READ
// or WRITE request (ReadChannelInfo/WriteChannelInfo offset and length),
// as a list of 1 to maxEntries descriptors. It returns a *RuleError with
// RuleDescriptorLength if len(b) is not a multiple of 16 (ksmbd silently
// ignores the excess; nothing sends it) or RuleDescriptorCount if the list
// is empty or longer than maxEntries (so maxEntries < 1 refuses
// every list).
//
// It does not look inside the entries: a Length of 0 (which ksmbd refuses
// when it transfers) or a total that does not match the request's length
// are for the caller to judge, see TotalLength.
func ParseBufferDescriptors(b []byte, maxEntries int) (BufferDescriptors, error) {
	if len(b)%BufferDescriptorV1Len != 0 {
		return BufferDescriptors{}, ruleErr(RuleDescriptorLength, uint64(len(b)), BufferDescriptorV1Len)
	}
	n := len(b) / BufferDescriptorV1Len
	if n == 0 || n > maxEntries {
		return BufferDescriptors{}, ruleErr(RuleDescriptorCount, uint64(n), uint64(max(maxEntries, 0)))
	}
	return BufferDescriptors{b}, nil
}

// Len returns the number of descriptors.
func (l BufferDescriptors) Len() int { return len(l.b) / BufferDescriptorV1Len }

// At returns descriptor i; it panics if i is out of range.
func (l BufferDescriptors) At(i int) BufferDescriptorV1 {
	e := l.b[i*BufferDescriptorV1Len : (i+1)*BufferDescriptorV1Len]
	return BufferDescriptorV1{
		Offset: binary.LittleEndian.Uint64(e[0:]),
		Token:  binary.LittleEndian.Uint32(e[8:]),
		Length: binary.LittleEndian.Uint32(e[12:]),
	}
}

// TotalLength returns the sum of the descriptors' Length fields.
func (l BufferDescriptors) TotalLength() uint64 {
	var t uint64
	for i := 0; i+BufferDescriptorV1Len <= len(l.b); i += BufferDescriptorV1Len {
		t += uint64(binary.LittleEndian.Uint32(l.b[i+12:]))
	}
	return t
}
