// Package wire encodes and decodes the iWARP wire formats: MPA connection
// frames (RFC 5044, with the enhanced connection setup of RFC 6581), the
// DDP/RDMAP headers of FPDUs (RFC 5041, RFC 5040) and the RDMAP Terminate
// message. Encoders append to a caller's slice and parsers read from one;
// neither allocates. Parsers are fuzzed: they must reject any input that is
// not a well-formed message with an error and never panic.
//
// Byte layout of an FPDU without markers:
//
//	+--------+----------------------------+------+-------+
//	| len 16 | ULPDU (DDP/RDMAP hdr+data) | pad  | CRC32c|
//	+--------+----------------------------+------+-------+
//
// len counts the ULPDU only; pad makes len(2)+ULPDU a multiple of 4; the CRC
// covers len, ULPDU and pad; see AppendCRC for its byte order. The CRC field
// is always present: when CRC was not negotiated it is zero and unchecked.
package wire

import "errors"

// ErrShort means the buffer ends before the message does.
var ErrShort = errors.New("wire: message truncated")

// ErrMalformed means the bytes are not a valid message.
var ErrMalformed = errors.New("wire: malformed message")
