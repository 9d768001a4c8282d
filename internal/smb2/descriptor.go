package smb2

import (
	"encoding/binary"
	"fmt"
)

// Descriptor is one SMB_DIRECT_BUFFER_DESCRIPTOR_V1 ([MS-SMBD] 2.2.3.1) of
// a READ or WRITE request's channel information: a range the peer
// registered, by its provider offset and token (STag).
type Descriptor struct {
	Offset uint64
	Token  uint32
	Length uint32
}

// DescriptorLen is the wire size of one Descriptor.
const DescriptorLen = 16

// AppendDescriptor appends d in wire format.
func AppendDescriptor(b []byte, d Descriptor) []byte {
	b = binary.LittleEndian.AppendUint64(b, d.Offset)
	b = binary.LittleEndian.AppendUint32(b, d.Token)
	return binary.LittleEndian.AppendUint32(b, d.Length)
}

// Descriptors is a checked Buffer Descriptor V1 list as received; it reads
// the entries from the message, so walking it does not allocate.
type Descriptors struct{ b []byte }

// ParseDescriptors checks channel information as a list of 1 to max
// descriptors, none of length 0 (nothing can be transferred to or from
// it; ksmbd refuses it too).
func ParseDescriptors(ci []byte, max int) (Descriptors, error) {
	n := len(ci) / DescriptorLen
	switch {
	case len(ci)%DescriptorLen != 0:
		return Descriptors{}, fmt.Errorf("%w: %d bytes of channel information, not a multiple of %d", ErrMalformed, len(ci), DescriptorLen)
	case n == 0 || n > max:
		return Descriptors{}, fmt.Errorf("%w: %d buffer descriptors, want 1 to %d", ErrMalformed, n, max)
	}
	l := Descriptors{ci}
	for i := range n {
		if l.At(i).Length == 0 {
			return Descriptors{}, fmt.Errorf("%w: buffer descriptor %d has length 0", ErrMalformed, i)
		}
	}
	return l, nil
}

// Len is the number of descriptors.
func (l Descriptors) Len() int { return len(l.b) / DescriptorLen }

// At returns descriptor i (0 <= i < Len).
func (l Descriptors) At(i int) Descriptor {
	e := l.b[i*DescriptorLen : (i+1)*DescriptorLen]
	return Descriptor{Offset: binary.LittleEndian.Uint64(e), Token: binary.LittleEndian.Uint32(e[8:]),
		Length: binary.LittleEndian.Uint32(e[12:])}
}

// Total is the sum of the descriptors' lengths.
func (l Descriptors) Total() uint64 {
	var t uint64
	for i := range l.Len() {
		t += uint64(l.At(i).Length)
	}
	return t
}
