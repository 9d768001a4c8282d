package wire

import (
	"encoding/binary"
	"fmt"
)

// Terminate layers (RFC 5040 section 4.8).
const (
	LayerRDMAP = 0
	LayerDDP   = 1
	LayerLLP   = 2 // MPA
)

// RDMAP error types and codes.
const (
	RDMAPTypeCatastrophic = 0
	RDMAPTypeProtection   = 1
	RDMAPTypeRemoteOp     = 2

	RDMAPCodeInvalidSTag     = 0x00
	RDMAPCodeBaseBounds      = 0x01
	RDMAPCodeAccessRights    = 0x02
	RDMAPCodeSTagNotAssoc    = 0x03
	RDMAPCodeTOWrap          = 0x04
	RDMAPCodeVersion         = 0x05
	RDMAPCodeOpcode          = 0x06
	RDMAPCodeCatastrophic    = 0x07
	RDMAPCodeCatastrophicAll = 0x08
	RDMAPCodeCannotInvalid   = 0x09
	RDMAPCodeUnspecified     = 0xff
)

// DDP error types and codes.
const (
	DDPTypeCatastrophic = 0
	DDPTypeTagged       = 1
	DDPTypeUntagged     = 2

	DDPCodeTaggedInvalidSTag = 0x00
	DDPCodeTaggedBaseBounds  = 0x01
	DDPCodeTaggedNotAssoc    = 0x02
	DDPCodeTaggedTOWrap      = 0x03
	DDPCodeTaggedVersion     = 0x04

	DDPCodeInvalidQN       = 0x01
	DDPCodeNoBuffer        = 0x02 // invalid MSN, no buffer available
	DDPCodeMSNRange        = 0x03
	DDPCodeInvalidMO       = 0x04
	DDPCodeTooLong         = 0x05
	DDPCodeUntaggedVersion = 0x06
)

// MPA (LLP) error codes; the type is always 0.
const (
	LLPCodeStreamLost      = 0x01
	LLPCodeCRC             = 0x02
	LLPCodeFPDUStart       = 0x03
	LLPCodeInvalidReqResp  = 0x04
	LLPCodeLocalCatastroph = 0x05
	LLPCodeInsufficientIRD = 0x06
	LLPCodeNoMatchingRTR   = 0x07
)

// Terminate control flags.
const (
	termFlagM = 0x8000 // DDP segment length valid
	termFlagD = 0x4000 // DDP header included
	termFlagR = 0x2000 // RDMAP header included

	// Linux siw declares the control word as C bitfields (struct
	// iwarp_terminate in siw's iwarp.h) which a little-endian build lays
	// out from the least significant bit: EType in the high nibble of the
	// first byte, Layer in the low one, M, D and R in the low bits of the
	// third byte, where the RFC has reserved zeros. Captured from Linux
	// 6.12 on x86-64: testdata/terminate.
	termSiwM = 0x0100
	termSiwD = 0x0200
	termSiwR = 0x0400
)

// TerminatedLen says which headers of the offending segment a Terminate
// reporting (layer, typ, code) carries, and sets the Hdrct bits to match
// (RFC 5040 section 4.8): M and D with the DDP header (14 bytes tagged, 18
// untagged) after the 2-byte DDP segment length, and R only when the
// 28-byte RDMA Read Request header follows that, for an RDMAP error on a
// Read Request. D never covers the Read Request fields. Like Linux siw
// (siw_send_terminate), it sends no header when the layout cannot be
// trusted (a version or opcode error) or the error is not about one
// segment (catastrophic, MPA). seg is the offending segment's MPA length
// followed by its header; n is how many of its bytes to send.
func (t *Terminate) TerminatedLen(seg []byte) (n int) {
	t.SegLenValid, t.HasDDP, t.HasRDMAP = false, false, false
	if len(seg) < MPALenSize+2 {
		return 0
	}
	switch t.Layer {
	case LayerDDP:
		if t.Type == DDPTypeTagged && t.Code == DDPCodeTaggedVersion ||
			t.Type == DDPTypeUntagged && t.Code == DDPCodeUntaggedVersion {
			return 0
		}
	case LayerRDMAP:
		if t.Type == RDMAPTypeCatastrophic || t.Code == RDMAPCodeVersion || t.Code == RDMAPCodeOpcode {
			return 0
		}
	default:
		return 0
	}
	ctrl := binary.BigEndian.Uint16(seg[MPALenSize:])
	n = MPALenSize + UntaggedLen
	if ctrl&ctrlTagged != 0 {
		n = MPALenSize + TaggedLen
	}
	rr := ctrl&ctrlTagged == 0 && Opcode(ctrl&ctrlOpcode) == OpReadRequest
	if t.Layer == LayerRDMAP && rr {
		n = MPALenSize + ReadRequestLen
		t.HasRDMAP = true
	}
	if len(seg) < n {
		t.HasRDMAP = false
		return 0
	}
	t.SegLenValid, t.HasDDP = true, true
	return n
}

// Terminate is an RDMAP Terminate message.
type Terminate struct {
	MSN               uint32
	Layer, Type, Code uint8
	// SegLenValid, HasDDP and HasRDMAP are the M, D and R flags.
	SegLenValid, HasDDP, HasRDMAP bool
	// SiwLayout: the parsed control word was in Linux siw's little-endian
	// bitfield layout (see termSiwM), told apart by its flags in bits the
	// RFC reserves. A siw Terminate without flags (an MPA or catastrophic
	// error) cannot be told apart and reads with Layer and Type swapped.
	// AppendTerminate always writes the RFC layout.
	SiwLayout bool
	// Terminated holds the DDP segment length (2 bytes) followed by the
	// headers of the offending segment, as Linux siw and RFC 5040 lay them
	// out. When parsing it aliases the input.
	Terminated []byte
}

// AppendTerminate appends the ULPDU of a Terminate message.
func AppendTerminate(b []byte, t *Terminate) []byte {
	b = AppendUntagged(b, OpTerminate, true, 0, QNTerminate, t.MSN, 0)
	c := uint32(t.Layer&0xf)<<28 | uint32(t.Type&0xf)<<24 | uint32(t.Code)<<16
	if t.SegLenValid {
		c |= termFlagM
	}
	if t.HasDDP {
		c |= termFlagD
	}
	if t.HasRDMAP {
		c |= termFlagR
	}
	b = binary.BigEndian.AppendUint32(b, c)
	return append(b, t.Terminated...)
}

// ParseTerminate parses a Terminate ULPDU (starting at the control field).
func ParseTerminate(b []byte) (Terminate, error) {
	var t Terminate
	h, n, err := ParseHeader(b)
	if err != nil {
		return t, err
	}
	if h.Opcode != OpTerminate {
		return t, fmt.Errorf("%w: %v is not a Terminate", ErrMalformed, h.Opcode)
	}
	if len(b) < n+4 {
		return t, ErrShort
	}
	c := binary.BigEndian.Uint32(b[n:])
	t.MSN = h.MSN
	t.Layer = uint8(c >> 28)
	t.Type = uint8(c>>24) & 0xf
	t.Code = uint8(c >> 16)
	t.SegLenValid = c&termFlagM != 0
	t.HasDDP = c&termFlagD != 0
	t.HasRDMAP = c&termFlagR != 0
	if c&(termFlagM|termFlagD|termFlagR) == 0 && c&(termSiwM|termSiwD|termSiwR) != 0 {
		t.SiwLayout = true
		t.Layer, t.Type = uint8(c>>24)&0xf, uint8(c>>28)
		t.SegLenValid = c&termSiwM != 0
		t.HasDDP = c&termSiwD != 0
		t.HasRDMAP = c&termSiwR != 0
	}
	rest := b[n+4:]
	if !t.SegLenValid && !t.HasDDP && !t.HasRDMAP {
		return t, nil
	}
	// Terminated headers: 2-byte segment length, then the DDP header; the
	// RDMAP part of a Read Request follows when R is set. Take what the
	// flags promise and check it is there.
	want := 2
	if t.HasDDP {
		if len(rest) < 4 {
			return t, ErrShort
		}
		if binary.BigEndian.Uint16(rest[2:])&ctrlTagged != 0 {
			want += TaggedLen
		} else {
			want += UntaggedLen
			if t.HasRDMAP && Opcode(binary.BigEndian.Uint16(rest[2:])&ctrlOpcode) == OpReadRequest {
				want += ReadRequestLen - UntaggedLen
			}
		}
	}
	if len(rest) < want {
		return t, ErrShort
	}
	t.Terminated = rest[:want]
	return t, nil
}

// String describes the error the Terminate reports.
func (t *Terminate) String() string {
	return fmt.Sprintf("layer %s, type %d, code 0x%02x (%s)", layerName(t.Layer), t.Type, t.Code, ErrorText(t.Layer, t.Type, t.Code))
}

func layerName(l uint8) string {
	switch l {
	case LayerRDMAP:
		return "RDMAP"
	case LayerDDP:
		return "DDP"
	case LayerLLP:
		return "MPA"
	}
	return fmt.Sprintf("%d", l)
}

// ErrorText names a Terminate error.
func ErrorText(layer, typ, code uint8) string {
	switch layer {
	case LayerRDMAP:
		switch typ {
		case RDMAPTypeCatastrophic:
			return "catastrophic"
		case RDMAPTypeProtection, RDMAPTypeRemoteOp:
			switch code {
			case RDMAPCodeInvalidSTag:
				return "invalid STag"
			case RDMAPCodeBaseBounds:
				return "base or bounds violation"
			case RDMAPCodeAccessRights:
				return "access rights violation"
			case RDMAPCodeSTagNotAssoc:
				return "STag not associated with RDMAP stream"
			case RDMAPCodeTOWrap:
				return "TO wrap"
			case RDMAPCodeVersion:
				return "invalid RDMAP version"
			case RDMAPCodeOpcode:
				return "unexpected opcode"
			case RDMAPCodeCatastrophic:
				return "catastrophic error, localized to stream"
			case RDMAPCodeCatastrophicAll:
				return "catastrophic error, global"
			case RDMAPCodeCannotInvalid:
				return "STag cannot be invalidated"
			}
			return "unspecified"
		}
	case LayerDDP:
		switch typ {
		case DDPTypeCatastrophic:
			return "catastrophic"
		case DDPTypeTagged:
			switch code {
			case DDPCodeTaggedInvalidSTag:
				return "tagged: invalid STag"
			case DDPCodeTaggedBaseBounds:
				return "tagged: base or bounds violation"
			case DDPCodeTaggedNotAssoc:
				return "tagged: STag not associated with stream"
			case DDPCodeTaggedTOWrap:
				return "tagged: TO wrap"
			case DDPCodeTaggedVersion:
				return "tagged: invalid DDP version"
			}
		case DDPTypeUntagged:
			switch code {
			case DDPCodeInvalidQN:
				return "untagged: invalid QN"
			case DDPCodeNoBuffer:
				return "untagged: invalid MSN, no buffer available"
			case DDPCodeMSNRange:
				return "untagged: invalid MSN, MSN range"
			case DDPCodeInvalidMO:
				return "untagged: invalid MO"
			case DDPCodeTooLong:
				return "untagged: message too long for receive buffer"
			case DDPCodeUntaggedVersion:
				return "untagged: invalid DDP version"
			}
		}
	case LayerLLP:
		switch code {
		case LLPCodeStreamLost:
			return "TCP stream lost"
		case LLPCodeCRC:
			return "received MPA CRC does not match"
		case LLPCodeFPDUStart:
			return "marker and ULPDU length mismatch"
		case LLPCodeInvalidReqResp:
			return "invalid MPA request or reply"
		case LLPCodeLocalCatastroph:
			return "local catastrophic"
		case LLPCodeInsufficientIRD:
			return "insufficient IRD resources"
		case LLPCodeNoMatchingRTR:
			return "no matching RTR model"
		}
	}
	return "unknown"
}
