package smb2

import (
	"encoding/binary"
	"fmt"
)

// ReadRequest is an SMB2 READ request body (MS-SMB2 2.2.19).
type ReadRequest struct {
	// Padding is where the client asks the data to start in the response.
	Padding      uint8
	Flags        uint8
	Length       uint32
	Offset       uint64
	FileID       [16]byte
	MinimumCount uint32
	Channel      uint32
	// RemainingBytes is 0 unless Channel is RDMA: then the length of the
	// data RDMA-written.
	RemainingBytes uint32
	// ChannelInfo is the ReadChannelInfo (Buffer Descriptor V1 list for an
	// RDMA channel), nil without one.
	ChannelInfo []byte
}

const readRequestFixed = 48 // body without its variable Buffer

// AppendReadRequest appends the body of r. The channel information follows
// the fixed part, at offset HeaderLen+48 of the message; without it one
// padding byte is sent (the Buffer field is at least one byte).
func AppendReadRequest(b []byte, r *ReadRequest) []byte {
	b = binary.LittleEndian.AppendUint16(b, 49)
	b = append(b, r.Padding, r.Flags)
	b = binary.LittleEndian.AppendUint32(b, r.Length)
	b = binary.LittleEndian.AppendUint64(b, r.Offset)
	b = append(b, r.FileID[:]...)
	b = binary.LittleEndian.AppendUint32(b, r.MinimumCount)
	b = binary.LittleEndian.AppendUint32(b, r.Channel)
	b = binary.LittleEndian.AppendUint32(b, r.RemainingBytes)
	if len(r.ChannelInfo) > 0 {
		b = binary.LittleEndian.AppendUint16(b, HeaderLen+readRequestFixed)
		b = binary.LittleEndian.AppendUint16(b, uint16(len(r.ChannelInfo)))
		return append(b, r.ChannelInfo...)
	}
	b = binary.LittleEndian.AppendUint32(b, 0)
	return append(b, 0)
}

// ParseReadRequest parses the READ request in msg (header included);
// ChannelInfo refers into msg.
func ParseReadRequest(msg []byte) (ReadRequest, error) {
	var r ReadRequest
	if len(msg) < HeaderLen+readRequestFixed {
		return r, ErrShort
	}
	body := msg[HeaderLen:]
	if s := binary.LittleEndian.Uint16(body); s != 49 {
		return r, fmt.Errorf("%w: READ request StructureSize %d", ErrMalformed, s)
	}
	r.Padding, r.Flags = body[2], body[3]
	r.Length = binary.LittleEndian.Uint32(body[4:])
	r.Offset = binary.LittleEndian.Uint64(body[8:])
	copy(r.FileID[:], body[16:32])
	r.MinimumCount = binary.LittleEndian.Uint32(body[32:])
	r.Channel = binary.LittleEndian.Uint32(body[36:])
	r.RemainingBytes = binary.LittleEndian.Uint32(body[40:])
	off, n := int(binary.LittleEndian.Uint16(body[44:])), int(binary.LittleEndian.Uint16(body[46:]))
	if n > 0 {
		if off < HeaderLen+readRequestFixed || off+n > len(msg) {
			return r, fmt.Errorf("%w: READ channel info [%d, %d) outside the %d-byte message", ErrMalformed, off, off+n, len(msg))
		}
		r.ChannelInfo = msg[off : off+n]
	}
	return r, nil
}

// ReadResponse is an SMB2 READ response (MS-SMB2 2.2.20).
type ReadResponse struct {
	// DataLength is the data in the message (0 when it went by RDMA).
	DataLength uint32
	// DataRemaining is, for an RDMA channel, the length RDMA-written.
	DataRemaining uint32
	// Data refers into the message.
	Data []byte
}

// ReadResponseDataOffset is where a READ response's data starts when
// it directly follows the body, as every server sends it.
const ReadResponseDataOffset = HeaderLen + 16

// ParseReadResponse parses the successful READ response in msg.
func ParseReadResponse(msg []byte) (ReadResponse, error) {
	var r ReadResponse
	if len(msg) < HeaderLen+16 {
		return r, ErrShort
	}
	body := msg[HeaderLen:]
	if s := binary.LittleEndian.Uint16(body); s != 17 {
		return r, fmt.Errorf("%w: READ response StructureSize %d", ErrMalformed, s)
	}
	off := int(body[2])
	r.DataLength = binary.LittleEndian.Uint32(body[4:])
	r.DataRemaining = binary.LittleEndian.Uint32(body[8:])
	if r.DataLength > 0 {
		if off < HeaderLen+16 || uint64(off)+uint64(r.DataLength) > uint64(len(msg)) {
			return r, fmt.Errorf("%w: READ data [%d, +%d) outside the %d-byte message", ErrMalformed, off, r.DataLength, len(msg))
		}
		r.Data = msg[off : off+int(r.DataLength)]
	}
	return r, nil
}

// PutReadResponseData rewrites the body of the READ response at the start
// of body so that it announces n bytes of data at ReadResponseDataOffset
// and none remaining: an RDMA-channel response turned into the inline
// form. The caller places the data.
func PutReadResponseData(body []byte, n uint32) {
	body[2] = ReadResponseDataOffset
	binary.LittleEndian.PutUint32(body[4:], n)
	binary.LittleEndian.PutUint32(body[8:], 0)
}

// ReadResponseRDMALen is the length of a READ response whose data went by
// RDMA: the header and the 16 bytes of the body, no Buffer byte (as
// ksmbd sends it and Linux cifs.ko takes it).
const ReadResponseRDMALen = HeaderLen + 16

// AppendReadResponseRDMA appends the body of a READ response for data
// that went by RDMA ([MS-SMB2] 3.3.5.12): DataOffset 0x50, DataLength 0,
// DataRemaining n.
func AppendReadResponseRDMA(b []byte, n uint32) []byte {
	b = binary.LittleEndian.AppendUint16(b, 17)
	b = append(b, ReadResponseDataOffset, 0)
	b = binary.LittleEndian.AppendUint32(b, 0)
	b = binary.LittleEndian.AppendUint32(b, n)
	return binary.LittleEndian.AppendUint32(b, 0)
}
