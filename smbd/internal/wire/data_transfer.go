package wire

import "encoding/binary"

// DataTransfer is the header of a Data Transfer message, every message
// after negotiation ([MS-SMBD] 2.2.3). Reserved and Padding are written as
// 0 and ignored on receipt.
type DataTransfer struct {
	CreditsRequested uint16 // the sender's SendCreditTarget, at least 1
	CreditsGranted   uint16 // receives newly posted for the peer
	Flags            uint16 // FlagResponseRequested or 0
	// RemainingDataLength counts the bytes of the upper-layer message
	// still to come in later messages; 0 in its last fragment.
	RemainingDataLength uint32
	// DataOffset is where the payload starts, from the start of the
	// message. ParseDataTransfer reports the received value;
	// AppendDataTransfer ignores it (see there).
	DataOffset uint32
	DataLength uint32
}

// ResponseRequested reports whether the peer asks for a prompt message in
// return (a keepalive, [MS-SMBD] 3.1.5.8).
func (h *DataTransfer) ResponseRequested() bool { return h.Flags&FlagResponseRequested != 0 }

// AppendDataTransfer appends the header of a Data Transfer message whose
// payload, h.DataLength bytes, the caller sends right after it (appended,
// or as a further gather element of the same Send).
//
// It writes DataOffset itself, as cifs.ko and ksmbd do: with no payload
// the message is the 20-byte header alone with DataOffset 0 ([MS-SMBD]
// 2.2.3: "If no data payload ..., this value MUST be 0"; Padding is not
// sent); with a payload it is the 24-byte header, Padding included, and
// DataOffset DataTransferHeaderLen (24, the value the spec recommends).
func AppendDataTransfer(b []byte, h *DataTransfer) []byte {
	var off uint32
	if h.DataLength > 0 {
		off = DataTransferHeaderLen
	}
	b = binary.LittleEndian.AppendUint16(b, h.CreditsRequested)
	b = binary.LittleEndian.AppendUint16(b, h.CreditsGranted)
	b = binary.LittleEndian.AppendUint16(b, h.Flags)
	b = binary.LittleEndian.AppendUint16(b, 0) // Reserved
	b = binary.LittleEndian.AppendUint32(b, h.RemainingDataLength)
	b = binary.LittleEndian.AppendUint32(b, off)
	b = binary.LittleEndian.AppendUint32(b, h.DataLength)
	if h.DataLength > 0 {
		b = binary.LittleEndian.AppendUint32(b, 0) // Padding
	}
	return b
}

// ParseDataTransfer decodes a received Data Transfer message; msg is the
// whole message (the receive completion's byte count). It returns the
// header and the payload, a subslice of msg (nil when DataLength is 0).
//
// It applies the per-message rules of [MS-SMBD] 3.1.5.8, in order:
// ErrShort for a message under DataTransferMinLen bytes, then a
// *RuleError: RuleCreditsRequested (0), RuleDataOffsetAlignment (not a
// multiple of 8), RuleDataOffsetOverlap (a payload starting below
// DataTransferHeaderLen, inside the header; 2.2.3 has the header first),
// RuleDataBounds (DataOffset+DataLength, computed without overflow, past
// the end of msg). Any error means: terminate the connection.
//
// With DataLength 0 any aligned DataOffset within msg is accepted, as the
// receive rules (and Linux) allow, though senders must write 0. The limit
// on DataLength+RemainingDataLength needs the negotiated size: see
// CheckFragment. Unknown Flags bits are kept and otherwise ignored.
func ParseDataTransfer(msg []byte) (DataTransfer, []byte, error) {
	var h DataTransfer
	if len(msg) < DataTransferMinLen {
		return h, nil, ErrShort
	}
	h.CreditsRequested = binary.LittleEndian.Uint16(msg[0:])
	h.CreditsGranted = binary.LittleEndian.Uint16(msg[2:])
	h.Flags = binary.LittleEndian.Uint16(msg[4:])
	h.RemainingDataLength = binary.LittleEndian.Uint32(msg[8:])
	h.DataOffset = binary.LittleEndian.Uint32(msg[12:])
	h.DataLength = binary.LittleEndian.Uint32(msg[16:])
	if h.CreditsRequested == 0 {
		return h, nil, ruleErr(RuleCreditsRequested, 0, 1)
	}
	if h.DataOffset%8 != 0 {
		return h, nil, ruleErr(RuleDataOffsetAlignment, uint64(h.DataOffset), 8)
	}
	if h.DataLength > 0 && h.DataOffset < DataTransferHeaderLen {
		return h, nil, ruleErr(RuleDataOffsetOverlap, uint64(h.DataOffset), DataTransferHeaderLen)
	}
	end := uint64(h.DataOffset) + uint64(h.DataLength)
	if end > uint64(len(msg)) {
		return h, nil, ruleErr(RuleDataBounds, end, uint64(len(msg)))
	}
	if h.DataLength == 0 {
		return h, nil, nil
	}
	return h, msg[h.DataOffset:end:end], nil
}

// CheckFragment applies the last rule of [MS-SMBD] 3.1.5.8:
// DataLength+RemainingDataLength must not exceed maxFragmentedSize, the
// receiver's Connection.MaxFragmentedRecvSize (what it sent as
// MaxFragmentedSize). It returns a *RuleError with RuleFragmentedSize
// otherwise. The sum is computed in 64 bits, so it covers Linux's three
// checks (each length, and their sum, against the limit).
func (h *DataTransfer) CheckFragment(maxFragmentedSize uint32) error {
	if sum := uint64(h.DataLength) + uint64(h.RemainingDataLength); sum > uint64(maxFragmentedSize) {
		return ruleErr(RuleFragmentedSize, sum, uint64(maxFragmentedSize))
	}
	return nil
}
