package smb2

import (
	"encoding/binary"
	"fmt"
)

// WriteRequest is an SMB2 WRITE request body (MS-SMB2 2.2.21).
type WriteRequest struct {
	// Length is the inline data length; 0 with an RDMA channel.
	Length uint32
	Offset uint64
	FileID [16]byte
	// Channel and ChannelInfo (Buffer Descriptor V1 list) name an RDMA
	// channel; RemainingBytes is then the length to RDMA-read.
	Channel        uint32
	RemainingBytes uint32
	ChannelInfo    []byte
	Flags          uint32
	// Data is the inline data; it refers into the parsed message.
	Data []byte
}

const writeRequestFixed = 48

// AppendWriteRequest appends the body of r: the fixed part, then the
// channel information, then the inline data.
func AppendWriteRequest(b []byte, r *WriteRequest) []byte {
	dataOff := HeaderLen + writeRequestFixed + len(r.ChannelInfo)
	b = binary.LittleEndian.AppendUint16(b, 49)
	switch {
	case len(r.Data) > 0:
		b = binary.LittleEndian.AppendUint16(b, uint16(dataOff))
	case len(r.ChannelInfo) > 0:
		b = binary.LittleEndian.AppendUint16(b, 0) // no inline data: ksmbd insists on 0
	default:
		b = binary.LittleEndian.AppendUint16(b, HeaderLen+writeRequestFixed)
	}
	b = binary.LittleEndian.AppendUint32(b, uint32(len(r.Data)))
	b = binary.LittleEndian.AppendUint64(b, r.Offset)
	b = append(b, r.FileID[:]...)
	b = binary.LittleEndian.AppendUint32(b, r.Channel)
	b = binary.LittleEndian.AppendUint32(b, r.RemainingBytes)
	if len(r.ChannelInfo) > 0 {
		b = binary.LittleEndian.AppendUint16(b, HeaderLen+writeRequestFixed)
		b = binary.LittleEndian.AppendUint16(b, uint16(len(r.ChannelInfo)))
	} else {
		b = binary.LittleEndian.AppendUint32(b, 0)
	}
	b = binary.LittleEndian.AppendUint32(b, r.Flags)
	b = append(b, r.ChannelInfo...)
	b = append(b, r.Data...)
	if len(r.ChannelInfo) == 0 && len(r.Data) == 0 {
		b = append(b, 0) // Buffer is at least one byte
	}
	return b
}

// ParseWriteRequest parses the WRITE request in msg (header included).
func ParseWriteRequest(msg []byte) (WriteRequest, error) {
	var r WriteRequest
	if len(msg) < HeaderLen+writeRequestFixed {
		return r, ErrShort
	}
	body := msg[HeaderLen:]
	if s := binary.LittleEndian.Uint16(body); s != 49 {
		return r, fmt.Errorf("%w: WRITE request StructureSize %d", ErrMalformed, s)
	}
	dataOff := int(binary.LittleEndian.Uint16(body[2:]))
	r.Length = binary.LittleEndian.Uint32(body[4:])
	r.Offset = binary.LittleEndian.Uint64(body[8:])
	copy(r.FileID[:], body[16:32])
	r.Channel = binary.LittleEndian.Uint32(body[32:])
	r.RemainingBytes = binary.LittleEndian.Uint32(body[36:])
	ciOff, ciLen := int(binary.LittleEndian.Uint16(body[40:])), int(binary.LittleEndian.Uint16(body[42:]))
	r.Flags = binary.LittleEndian.Uint32(body[44:])
	if ciLen > 0 {
		if ciOff < HeaderLen+writeRequestFixed || ciOff+ciLen > len(msg) {
			return r, fmt.Errorf("%w: WRITE channel info [%d, %d) outside the %d-byte message", ErrMalformed, ciOff, ciOff+ciLen, len(msg))
		}
		r.ChannelInfo = msg[ciOff : ciOff+ciLen]
	}
	if r.Length > 0 {
		if dataOff < HeaderLen+writeRequestFixed || uint64(dataOff)+uint64(r.Length) > uint64(len(msg)) {
			return r, fmt.Errorf("%w: WRITE data [%d, +%d) outside the %d-byte message", ErrMalformed, dataOff, r.Length, len(msg))
		}
		r.Data = msg[dataOff : dataOff+int(r.Length)]
	}
	return r, nil
}

// WriteRequestDataOffset is where an inline WRITE's data starts when it
// directly follows the fixed part of the body (0x70).
const WriteRequestDataOffset = HeaderLen + writeRequestFixed

// AppendInlineWriteRequest appends the fixed part of the body of r turned
// into an inline WRITE of n bytes: DataOffset 0x70, Length n, no channel,
// RemainingBytes 0, no channel information, r's Offset, FileID and
// Flags. The caller appends the n bytes (one 0 byte if n is 0, the
// Buffer field's minimum).
func AppendInlineWriteRequest(b []byte, r *WriteRequest, n uint32) []byte {
	b = binary.LittleEndian.AppendUint16(b, 49)
	b = binary.LittleEndian.AppendUint16(b, WriteRequestDataOffset)
	b = binary.LittleEndian.AppendUint32(b, n)
	b = binary.LittleEndian.AppendUint64(b, r.Offset)
	b = append(b, r.FileID[:]...)
	b = binary.LittleEndian.AppendUint32(b, ChannelNone)
	b = binary.LittleEndian.AppendUint32(b, 0)
	b = binary.LittleEndian.AppendUint32(b, 0)
	return binary.LittleEndian.AppendUint32(b, r.Flags)
}
