package wire

import "encoding/binary"

// NegotiateRequest is the first message on a connection, sent by the
// connecting side ([MS-SMBD] 2.2.1). The Reserved field is written as 0 and
// ignored on receipt.
type NegotiateRequest struct {
	MinVersion, MaxVersion uint16
	CreditsRequested       uint16 // the sender's SendCreditTarget
	PreferredSendSize      uint32 // the sender's MaxSendSize
	MaxReceiveSize         uint32
	MaxFragmentedSize      uint32 // the sender's MaxFragmentedRecvSize
}

// AppendNegotiateRequest appends the 20 bytes of r.
func AppendNegotiateRequest(b []byte, r *NegotiateRequest) []byte {
	b = binary.LittleEndian.AppendUint16(b, r.MinVersion)
	b = binary.LittleEndian.AppendUint16(b, r.MaxVersion)
	b = binary.LittleEndian.AppendUint16(b, 0) // Reserved
	b = binary.LittleEndian.AppendUint16(b, r.CreditsRequested)
	b = binary.LittleEndian.AppendUint32(b, r.PreferredSendSize)
	b = binary.LittleEndian.AppendUint32(b, r.MaxReceiveSize)
	return binary.LittleEndian.AppendUint32(b, r.MaxFragmentedSize)
}

// ParseNegotiateRequest decodes a received Negotiate Request. msg is the
// whole message; it must be at least NegotiateRequestLen bytes and bytes
// after the first 20 are ignored: [MS-SMBD] 3.1.5.6 asks only for "at
// least 20 bytes", and ksmbd (recv_done) accepts any byte_len >= 20 too.
// It checks only the length; Validate applies the rules of 3.1.5.6.
func ParseNegotiateRequest(msg []byte) (NegotiateRequest, error) {
	var r NegotiateRequest
	if len(msg) < NegotiateRequestLen {
		return r, ErrShort
	}
	r.MinVersion = binary.LittleEndian.Uint16(msg[0:])
	r.MaxVersion = binary.LittleEndian.Uint16(msg[2:])
	r.CreditsRequested = binary.LittleEndian.Uint16(msg[6:])
	r.PreferredSendSize = binary.LittleEndian.Uint32(msg[8:])
	r.MaxReceiveSize = binary.LittleEndian.Uint32(msg[12:])
	r.MaxFragmentedSize = binary.LittleEndian.Uint32(msg[16:])
	return r, nil
}

// Validate applies the receive rules of [MS-SMBD] 3.1.5.6, in the spec's
// order, and returns a *RuleError for the first one broken:
// RuleVersion (answer with a Negotiate Response whose Status is
// StatusNotSupported, then disconnect), or RuleCreditsRequested,
// RuleMaxReceiveSize, RuleMaxFragmentedSize (disconnect without an
// answer).
//
// The bounds are the spec's, inclusive: MaxReceiveSize 128 and
// MaxFragmentedSize 131072 pass. (ksmbd, smb_direct_check_recvmsg,
// refuses those two exact values.)
func (r *NegotiateRequest) Validate() error {
	if r.MinVersion > ProtocolVersion || r.MaxVersion < ProtocolVersion {
		return ruleErr(RuleVersion, uint64(r.MinVersion)<<16|uint64(r.MaxVersion), uint64(ProtocolVersion))
	}
	if r.CreditsRequested == 0 {
		return ruleErr(RuleCreditsRequested, 0, 1)
	}
	if r.MaxReceiveSize < MinReceiveSize {
		return ruleErr(RuleMaxReceiveSize, uint64(r.MaxReceiveSize), MinReceiveSize)
	}
	if r.MaxFragmentedSize < MinFragmentedSize {
		return ruleErr(RuleMaxFragmentedSize, uint64(r.MaxFragmentedSize), MinFragmentedSize)
	}
	return nil
}
