package smb2

import (
	"encoding/binary"
	"fmt"
)

// More command codes.
const (
	CommandRead  = 0x0008
	CommandWrite = 0x0009
)

// Header flags (MS-SMB2 2.2.1).
const (
	FlagResponse = 0x00000001 // SMB2_FLAGS_SERVER_TO_REDIR
	FlagAsync    = 0x00000002
	FlagRelated  = 0x00000004
	FlagSigned   = 0x00000008
)

// Status codes the RDMA channel code looks at.
const (
	StatusPending = 0x00000103
)

// Channels of READ and WRITE requests (MS-SMB2 2.2.19).
const (
	ChannelNone             = 0
	ChannelRDMAV1           = 1
	ChannelRDMAV1Invalidate = 2
)

// Header is the part of an SMB2 header (sync or async, MS-SMB2 2.2.1)
// that routing needs.
type Header struct {
	Command     uint16
	Status      uint32
	Flags       uint32
	NextCommand uint32
	MessageID   uint64
}

// ParseHeader parses the SMB2 header at the start of b.
func ParseHeader(b []byte) (Header, error) {
	var h Header
	if len(b) < HeaderLen {
		return h, ErrShort
	}
	if string(b[:4]) != "\xfeSMB" || binary.LittleEndian.Uint16(b[4:]) != HeaderLen {
		return h, fmt.Errorf("%w: no SMB2 header", ErrMalformed)
	}
	h.Status = binary.LittleEndian.Uint32(b[8:])
	h.Command = binary.LittleEndian.Uint16(b[12:])
	h.Flags = binary.LittleEndian.Uint32(b[16:])
	h.NextCommand = binary.LittleEndian.Uint32(b[20:])
	h.MessageID = binary.LittleEndian.Uint64(b[24:])
	return h, nil
}

// AppendHeader appends a sync SMB2 request header.
func AppendHeader(b []byte, command uint16, messageID, sessionID uint64, treeID uint32, creditCharge, creditRequest uint16) []byte {
	start := len(b)
	b = append(b, make([]byte, HeaderLen)...)
	h := b[start:]
	copy(h, "\xfeSMB")
	binary.LittleEndian.PutUint16(h[4:], HeaderLen)
	binary.LittleEndian.PutUint16(h[6:], creditCharge)
	binary.LittleEndian.PutUint16(h[12:], command)
	binary.LittleEndian.PutUint16(h[14:], creditRequest)
	binary.LittleEndian.PutUint64(h[24:], messageID)
	binary.LittleEndian.PutUint32(h[36:], treeID)
	binary.LittleEndian.PutUint64(h[40:], sessionID)
	return b
}
