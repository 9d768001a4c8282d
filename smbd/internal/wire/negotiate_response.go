package wire

import "encoding/binary"

// NegotiateResponse is the listening side's answer to a Negotiate Request
// ([MS-SMBD] 2.2.2). The Reserved field is written as 0 and ignored on
// receipt. A failure response (3.1.5.3) has MinVersion and MaxVersion
// 0x0100, a Status other than StatusSuccess and every other field 0.
type NegotiateResponse struct {
	MinVersion, MaxVersion uint16
	NegotiatedVersion      uint16
	CreditsRequested       uint16 // the sender's SendCreditTarget
	CreditsGranted         uint16 // the receives the sender has posted
	Status                 uint32 // NTSTATUS
	MaxReadWriteSize       uint32
	PreferredSendSize      uint32 // the sender's MaxSendSize
	MaxReceiveSize         uint32
	MaxFragmentedSize      uint32 // the sender's MaxFragmentedRecvSize
}

// AppendNegotiateResponse appends the 32 bytes of r.
func AppendNegotiateResponse(b []byte, r *NegotiateResponse) []byte {
	b = binary.LittleEndian.AppendUint16(b, r.MinVersion)
	b = binary.LittleEndian.AppendUint16(b, r.MaxVersion)
	b = binary.LittleEndian.AppendUint16(b, r.NegotiatedVersion)
	b = binary.LittleEndian.AppendUint16(b, 0) // Reserved
	b = binary.LittleEndian.AppendUint16(b, r.CreditsRequested)
	b = binary.LittleEndian.AppendUint16(b, r.CreditsGranted)
	b = binary.LittleEndian.AppendUint32(b, r.Status)
	b = binary.LittleEndian.AppendUint32(b, r.MaxReadWriteSize)
	b = binary.LittleEndian.AppendUint32(b, r.PreferredSendSize)
	b = binary.LittleEndian.AppendUint32(b, r.MaxReceiveSize)
	return binary.LittleEndian.AppendUint32(b, r.MaxFragmentedSize)
}

// ParseNegotiateResponse decodes a received Negotiate Response. msg is the
// whole message; it must be at least NegotiateResponseLen bytes and bytes
// after the first 32 are ignored, as [MS-SMBD] 3.1.5.7 ("at least 32
// bytes") and cifs.ko (process_negotiation_response) do. It checks only
// the length; Validate applies the rules of 3.1.5.7.
func ParseNegotiateResponse(msg []byte) (NegotiateResponse, error) {
	var r NegotiateResponse
	if len(msg) < NegotiateResponseLen {
		return r, ErrShort
	}
	r.MinVersion = binary.LittleEndian.Uint16(msg[0:])
	r.MaxVersion = binary.LittleEndian.Uint16(msg[2:])
	r.NegotiatedVersion = binary.LittleEndian.Uint16(msg[4:])
	r.CreditsRequested = binary.LittleEndian.Uint16(msg[8:])
	r.CreditsGranted = binary.LittleEndian.Uint16(msg[10:])
	r.Status = binary.LittleEndian.Uint32(msg[12:])
	r.MaxReadWriteSize = binary.LittleEndian.Uint32(msg[16:])
	r.PreferredSendSize = binary.LittleEndian.Uint32(msg[20:])
	r.MaxReceiveSize = binary.LittleEndian.Uint32(msg[24:])
	r.MaxFragmentedSize = binary.LittleEndian.Uint32(msg[28:])
	return r, nil
}

// Validate applies the receive rules of [MS-SMBD] 3.1.5.7; maxReceiveSize
// is the receiver's Connection.MaxReceiveSize (what it sent as
// MaxReceiveSize in its request). It returns a *RuleError for the first
// rule broken; any of them means: disconnect and fail the connect.
//
// Status is checked first, so that a failure response (whose other fields
// are 0) is reported as RuleStatus with the peer's NTSTATUS in Got; then
// the spec's order: RuleNegotiatedVersion, RuleMaxReceiveSize,
// RuleMaxFragmentedSize, RuleCreditsGranted, RuleCreditsRequested,
// RulePreferredSendSize.
func (r *NegotiateResponse) Validate(maxReceiveSize uint32) error {
	if r.Status != StatusSuccess {
		return ruleErr(RuleStatus, uint64(r.Status), uint64(StatusSuccess))
	}
	if r.NegotiatedVersion != ProtocolVersion {
		return ruleErr(RuleNegotiatedVersion, uint64(r.NegotiatedVersion), uint64(ProtocolVersion))
	}
	if r.MaxReceiveSize < MinReceiveSize {
		return ruleErr(RuleMaxReceiveSize, uint64(r.MaxReceiveSize), MinReceiveSize)
	}
	if r.MaxFragmentedSize < MinFragmentedSize {
		return ruleErr(RuleMaxFragmentedSize, uint64(r.MaxFragmentedSize), MinFragmentedSize)
	}
	if r.CreditsGranted == 0 {
		return ruleErr(RuleCreditsGranted, 0, 1)
	}
	if r.CreditsRequested == 0 {
		return ruleErr(RuleCreditsRequested, 0, 1)
	}
	if r.PreferredSendSize > maxReceiveSize {
		return ruleErr(RulePreferredSendSize, uint64(r.PreferredSendSize), uint64(maxReceiveSize))
	}
	return nil
}
