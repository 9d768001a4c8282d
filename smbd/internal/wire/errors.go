package wire

import "fmt"

// Rule names a receive rule of [MS-SMBD] that a message broke.
type Rule uint8

const (
	// RuleVersion: the request's MinVersion..MaxVersion range does not
	// include 0x0100 (3.1.5.6). Unlike every other rule, the answer is a
	// Negotiate Response with Status STATUS_NOT_SUPPORTED (3.1.5.3).
	RuleVersion Rule = iota + 1
	// RuleNegotiatedVersion: the response's NegotiatedVersion is not
	// 0x0100 (3.1.5.7).
	RuleNegotiatedVersion
	// RuleStatus: the response's Status is not STATUS_SUCCESS (3.1.5.7).
	RuleStatus
	// RuleCreditsRequested: CreditsRequested is 0 (3.1.5.6, 3.1.5.7,
	// 3.1.5.8).
	RuleCreditsRequested
	// RuleCreditsGranted: the response's CreditsGranted is 0 (3.1.5.7).
	RuleCreditsGranted
	// RuleMaxReceiveSize: MaxReceiveSize is below MinReceiveSize
	// (3.1.5.6, 3.1.5.7).
	RuleMaxReceiveSize
	// RuleMaxFragmentedSize: MaxFragmentedSize is below
	// MinFragmentedSize (3.1.5.6, 3.1.5.7).
	RuleMaxFragmentedSize
	// RulePreferredSendSize: the response's PreferredSendSize exceeds the
	// receiver's MaxReceiveSize (3.1.5.7).
	RulePreferredSendSize
	// RuleDataOffsetAlignment: DataOffset is not a multiple of 8
	// (2.2.3, 3.1.5.8).
	RuleDataOffsetAlignment
	// RuleDataOffsetOverlap: DataLength > 0 but DataOffset points into
	// the header (below DataTransferHeaderLen; 2.2.3).
	RuleDataOffsetOverlap
	// RuleDataBounds: DataOffset+DataLength is beyond the end of the
	// message (3.1.5.8).
	RuleDataBounds
	// RuleFragmentedSize: DataLength+RemainingDataLength exceeds the
	// receiver's MaxFragmentedSize (3.1.5.8).
	RuleFragmentedSize
	// RuleDescriptorLength: a buffer descriptor list whose length is not
	// a multiple of BufferDescriptorV1Len.
	RuleDescriptorLength
	// RuleDescriptorCount: a buffer descriptor list with no entry or with
	// more entries than the caller allows.
	RuleDescriptorCount
)

var ruleNames = [...]string{
	RuleVersion:             "version range excludes 0x0100",
	RuleNegotiatedVersion:   "negotiated version is not 0x0100",
	RuleStatus:              "negotiate status is not success",
	RuleCreditsRequested:    "credits requested is 0",
	RuleCreditsGranted:      "credits granted is 0",
	RuleMaxReceiveSize:      "max receive size below 128",
	RuleMaxFragmentedSize:   "max fragmented size below 131072",
	RulePreferredSendSize:   "preferred send size above our max receive size",
	RuleDataOffsetAlignment: "data offset not 8-byte aligned",
	RuleDataOffsetOverlap:   "data offset inside the header",
	RuleDataBounds:          "data beyond the end of the message",
	RuleFragmentedSize:      "data length plus remaining data length above max fragmented size",
	RuleDescriptorLength:    "buffer descriptor list length not a multiple of 16",
	RuleDescriptorCount:     "buffer descriptor count out of range",
}

func (r Rule) String() string {
	if int(r) < len(ruleNames) && ruleNames[r] != "" {
		return ruleNames[r]
	}
	return fmt.Sprintf("rule %d", uint8(r))
}

// RuleError is a message that breaks a rule of [MS-SMBD] section 3.1.5 or
// 2.2. The receiver must terminate the connection (after a failure
// Negotiate Response for RuleVersion). It wraps ErrMalformed.
type RuleError struct {
	Rule Rule
	// Got is the offending value and Limit the bound it broke, where the
	// rule has them: for RuleDataBounds DataOffset+DataLength and the
	// message length, for RuleVersion MinVersion<<16|MaxVersion and
	// 0x0100, for RuleStatus the peer's NTSTATUS and 0.
	Got, Limit uint64
}

func (e *RuleError) Error() string {
	switch e.Rule {
	case RuleVersion, RuleNegotiatedVersion, RuleStatus:
		return fmt.Sprintf("wire: %v (got %#x)", e.Rule, e.Got)
	}
	return fmt.Sprintf("wire: %v (got %d, limit %d)", e.Rule, e.Got, e.Limit)
}

func (e *RuleError) Unwrap() error { return ErrMalformed }

func ruleErr(r Rule, got, limit uint64) error { return &RuleError{Rule: r, Got: got, Limit: limit} }
