package wire

import (
	"encoding/binary"
	"fmt"
)

// MPA request/reply keys (RFC 5044 section 7.1).
const (
	KeyRequest = "MPA ID Req Frame"
	KeyReply   = "MPA ID Rep Frame"
)

// MPAHeaderLen is the fixed part of an MPA request or reply.
const MPAHeaderLen = 20

// MaxPrivateData is the largest private data MPA allows (RFC 5044: 512).
const MaxPrivateData = 512

// MPA frame flag bits, in the 16-bit field after the key. The low byte is
// the revision.
const (
	MPAFlagMarkers  = 0x8000
	MPAFlagCRC      = 0x4000
	MPAFlagReject   = 0x2000
	MPAFlagEnhanced = 0x1000 // RFC 6581: IRD/ORD in the private data
	// mpaFlagsKnown are the bits we interpret; Linux siw may set 0x0800
	// (its own GSO experiment) which peers must ignore.
	mpaFlagsKnown = MPAFlagMarkers | MPAFlagCRC | MPAFlagReject | MPAFlagEnhanced
)

// MPAFrame is an MPA request or reply header (without private data).
type MPAFrame struct {
	Reply    bool
	Markers  bool
	CRC      bool
	Reject   bool
	Enhanced bool
	Revision uint8
	// Other holds flag bits we do not interpret (reserved field).
	Other uint16
	// PrivateDataLen is the length of the private data that follows.
	PrivateDataLen int
}

// AppendMPAFrame appends the 20-byte header of f.
func AppendMPAFrame(b []byte, f *MPAFrame) []byte {
	if f.Reply {
		b = append(b, KeyReply...)
	} else {
		b = append(b, KeyRequest...)
	}
	bits := uint16(f.Revision) | f.Other&^(mpaFlagsKnown|0xff)
	if f.Markers {
		bits |= MPAFlagMarkers
	}
	if f.CRC {
		bits |= MPAFlagCRC
	}
	if f.Reject {
		bits |= MPAFlagReject
	}
	if f.Enhanced {
		bits |= MPAFlagEnhanced
	}
	b = binary.BigEndian.AppendUint16(b, bits)
	return binary.BigEndian.AppendUint16(b, uint16(f.PrivateDataLen))
}

// ParseMPAFrame parses the 20-byte header of an MPA request (reply=false)
// or reply (reply=true).
func ParseMPAFrame(b []byte, reply bool) (MPAFrame, error) {
	var f MPAFrame
	if len(b) < MPAHeaderLen {
		return f, ErrShort
	}
	key := KeyRequest
	if reply {
		key = KeyReply
	}
	if string(b[:16]) != key {
		return f, fmt.Errorf("%w: MPA key %q, want %q", ErrMalformed, b[:16], key)
	}
	bits := binary.BigEndian.Uint16(b[16:])
	f.Reply = reply
	f.Markers = bits&MPAFlagMarkers != 0
	f.CRC = bits&MPAFlagCRC != 0
	f.Reject = bits&MPAFlagReject != 0
	f.Enhanced = bits&MPAFlagEnhanced != 0
	f.Revision = uint8(bits)
	f.Other = bits &^ (mpaFlagsKnown | 0xff)
	f.PrivateDataLen = int(binary.BigEndian.Uint16(b[18:]))
	if f.PrivateDataLen > MaxPrivateData {
		return f, fmt.Errorf("%w: MPA private data length %d > %d", ErrMalformed, f.PrivateDataLen, MaxPrivateData)
	}
	return f, nil
}

// Enhanced connection setup (RFC 6581 section 9): the first four bytes of
// the private data carry IRD and ORD with peer-to-peer control bits.
const (
	MPAv2Len      = 4
	MPAv2P2P      = 0x8000 // in IRD: peer-to-peer mode, an RTR message follows
	MPAv2ZeroRTR  = 0x4000 // in IRD: zero-length RTR
	MPAv2WriteRTR = 0x8000 // in ORD: RTR may be a zero-length RDMA Write
	MPAv2ReadRTR  = 0x4000 // in ORD: RTR may be a zero-length RDMA Read
	MPAv2IRDMask  = 0x3fff
)

// MPAv2 is the IRD/ORD block of the enhanced connection setup.
type MPAv2 struct {
	IRD, ORD uint16 // 14-bit values
	P2P      bool
	ZeroRTR  bool
	WriteRTR bool
	ReadRTR  bool
}

// AppendMPAv2 appends the 4-byte IRD/ORD block.
func AppendMPAv2(b []byte, v MPAv2) []byte {
	ird := v.IRD & MPAv2IRDMask
	ord := v.ORD & MPAv2IRDMask
	if v.P2P {
		ird |= MPAv2P2P
	}
	if v.ZeroRTR {
		ird |= MPAv2ZeroRTR
	}
	if v.WriteRTR {
		ord |= MPAv2WriteRTR
	}
	if v.ReadRTR {
		ord |= MPAv2ReadRTR
	}
	b = binary.BigEndian.AppendUint16(b, ird)
	return binary.BigEndian.AppendUint16(b, ord)
}

// ParseMPAv2 parses the IRD/ORD block at the start of private data.
func ParseMPAv2(b []byte) (MPAv2, error) {
	if len(b) < MPAv2Len {
		return MPAv2{}, ErrShort
	}
	ird := binary.BigEndian.Uint16(b)
	ord := binary.BigEndian.Uint16(b[2:])
	return MPAv2{
		IRD:      ird & MPAv2IRDMask,
		ORD:      ord & MPAv2IRDMask,
		P2P:      ird&MPAv2P2P != 0,
		ZeroRTR:  ird&MPAv2ZeroRTR != 0,
		WriteRTR: ord&MPAv2WriteRTR != 0,
		ReadRTR:  ord&MPAv2ReadRTR != 0,
	}, nil
}
