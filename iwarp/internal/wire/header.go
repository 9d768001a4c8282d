package wire

import (
	"encoding/binary"
	"fmt"
)

// Opcode is the RDMAP opcode (RFC 5040 section 4.3).
type Opcode uint8

const (
	OpWrite        Opcode = 0x0
	OpReadRequest  Opcode = 0x1
	OpReadResponse Opcode = 0x2
	OpSend         Opcode = 0x3
	OpSendInv      Opcode = 0x4
	OpSendSE       Opcode = 0x5
	OpSendSEInv    Opcode = 0x6
	OpTerminate    Opcode = 0x7
)

var opNames = [...]string{"RDMA Write", "RDMA Read Request", "RDMA Read Response", "Send", "Send with Invalidate", "Send with SE", "Send with SE and Invalidate", "Terminate"}

func (o Opcode) String() string {
	if int(o) < len(opNames) {
		return opNames[o]
	}
	return fmt.Sprintf("opcode 0x%x", uint8(o))
}

// Tagged reports whether the opcode travels as a tagged DDP message.
func (o Opcode) Tagged() bool { return o == OpWrite || o == OpReadResponse }

// IsSend reports whether o is one of the four Send variants.
func (o Opcode) IsSend() bool { return o >= OpSend && o <= OpSendSEInv }

// Untagged queue numbers (RFC 5040 section 5.1).
const (
	QNSend        = 0
	QNReadRequest = 1
	QNTerminate   = 2
)

// Control field bits: DDP in the first byte, RDMAP in the second.
const (
	ctrlTagged   = 0x8000
	ctrlLast     = 0x4000
	ctrlDDPRsvd  = 0x3c00
	ctrlDDPVer   = 0x0300
	ctrlRDMAPVer = 0x00c0
	ctrlRDMARsvd = 0x0030
	ctrlOpcode   = 0x000f

	// DDPVersion and RDMAPVersion are the versions of RFC 5041 and 5040.
	DDPVersion   = 1
	RDMAPVersion = 1
)

// Header lengths, counted from the control field (the MPA length field is
// not included).
const (
	TaggedLen      = 2 + 4 + 8         // ctrl, STag, TO
	UntaggedLen    = 2 + 4 + 4 + 4 + 4 // ctrl, ULP/inv STag, QN, MSN, MO
	ReadRequestLen = UntaggedLen + 28  // + sink STag/TO, size, source STag/TO
	TerminateLen   = UntaggedLen + 4   // + terminate control
)

// Header is a decoded DDP/RDMAP header.
type Header struct {
	Opcode Opcode
	Tagged bool
	Last   bool
	// Tagged fields.
	STag uint32
	TO   uint64
	// Untagged fields. Inv is the STag to invalidate of a Send with
	// Invalidate (the reserved ULP field otherwise).
	Inv uint32
	QN  uint32
	MSN uint32
	MO  uint32
	// Read Request fields.
	SinkSTag   uint32
	SinkTO     uint64
	ReadSize   uint32
	SourceSTag uint32
	SourceTO   uint64
}

// HeaderError is a header the receiver must refuse with a Terminate. It
// says which DDP or RDMAP rule was broken so the Terminate can name it.
type HeaderError struct {
	Layer, Type, Code uint8
	Msg               string
}

func (e *HeaderError) Error() string { return "wire: " + e.Msg }

func (e *HeaderError) Unwrap() error { return ErrMalformed }

// ParseHeader decodes the DDP/RDMAP header at the start of a ULPDU (just
// after the MPA length). It returns the header and its length.
func ParseHeader(b []byte) (Header, int, error) {
	var h Header
	if len(b) < 2 {
		return h, 0, ErrShort
	}
	ctrl := binary.BigEndian.Uint16(b)
	h.Tagged = ctrl&ctrlTagged != 0
	h.Last = ctrl&ctrlLast != 0
	h.Opcode = Opcode(ctrl & ctrlOpcode)
	if v := (ctrl & ctrlDDPVer) >> 8; v != DDPVersion {
		et := uint8(DDPTypeUntagged)
		ec := uint8(DDPCodeUntaggedVersion)
		if h.Tagged {
			et, ec = DDPTypeTagged, DDPCodeTaggedVersion
		}
		return h, 0, &HeaderError{LayerDDP, et, ec, fmt.Sprintf("DDP version %d", v)}
	}
	if v := (ctrl & ctrlRDMAPVer) >> 6; v != RDMAPVersion {
		return h, 0, &HeaderError{LayerRDMAP, RDMAPTypeRemoteOp, RDMAPCodeVersion, fmt.Sprintf("RDMAP version %d", v)}
	}
	if h.Opcode > OpTerminate {
		return h, 0, &HeaderError{LayerRDMAP, RDMAPTypeRemoteOp, RDMAPCodeOpcode, fmt.Sprintf("unknown RDMAP opcode %d", h.Opcode)}
	}
	if h.Opcode.Tagged() != h.Tagged {
		return h, 0, &HeaderError{LayerRDMAP, RDMAPTypeRemoteOp, RDMAPCodeOpcode, fmt.Sprintf("%v with tagged flag %v", h.Opcode, h.Tagged)}
	}
	if h.Tagged {
		if len(b) < TaggedLen {
			return h, 0, ErrShort
		}
		h.STag = binary.BigEndian.Uint32(b[2:])
		h.TO = binary.BigEndian.Uint64(b[6:])
		return h, TaggedLen, nil
	}
	if len(b) < UntaggedLen {
		return h, 0, ErrShort
	}
	h.Inv = binary.BigEndian.Uint32(b[2:])
	h.QN = binary.BigEndian.Uint32(b[6:])
	h.MSN = binary.BigEndian.Uint32(b[10:])
	h.MO = binary.BigEndian.Uint32(b[14:])
	want := uint32(QNSend)
	switch h.Opcode {
	case OpReadRequest:
		want = QNReadRequest
	case OpTerminate:
		want = QNTerminate
	}
	if h.QN != want {
		return h, 0, &HeaderError{LayerDDP, DDPTypeUntagged, DDPCodeInvalidQN, fmt.Sprintf("%v on queue %d", h.Opcode, h.QN)}
	}
	if h.Opcode != OpReadRequest {
		return h, UntaggedLen, nil
	}
	if len(b) < ReadRequestLen {
		return h, 0, ErrShort
	}
	r := b[UntaggedLen:]
	h.SinkSTag = binary.BigEndian.Uint32(r)
	h.SinkTO = binary.BigEndian.Uint64(r[4:])
	h.ReadSize = binary.BigEndian.Uint32(r[12:])
	h.SourceSTag = binary.BigEndian.Uint32(r[16:])
	h.SourceTO = binary.BigEndian.Uint64(r[20:])
	return h, ReadRequestLen, nil
}

func appendCtrl(b []byte, op Opcode, last bool) []byte {
	c := uint16(DDPVersion<<8|RDMAPVersion<<6) | uint16(op)
	if op.Tagged() {
		c |= ctrlTagged
	}
	if last {
		c |= ctrlLast
	}
	return binary.BigEndian.AppendUint16(b, c)
}
