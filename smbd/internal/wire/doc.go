// Package wire encodes and decodes the SMB Direct wire formats of
// [MS-SMBD] (SMB2 Remote Direct Memory Access Transport Protocol, version
// 0x0100): the Negotiate Request and Response, the Data Transfer header
// and the Buffer Descriptor V1 list that SMB2 READ/WRITE requests carry
// in their channel information. Every field is little-endian.
//
// Encoders append to a caller's slice and parsers read from one; neither
// allocates. Parsers check the length and the per-message rules of
// [MS-SMBD] section 3.1.5 and are fuzzed: they reject with an error, never
// panic. Rules that need connection state (the negotiated sizes) are left
// to the caller, with helpers: NegotiateRequest.Validate,
// NegotiateResponse.Validate and DataTransfer.CheckFragment.
//
// Each SMB Direct message is exactly one RDMA Send, so a parser gets the
// whole message (the receive completion's byte count), never a stream.
//
// Negotiate Request, 20 bytes (section 2.2.1):
//
//	 0               2               4
//	+---------------+---------------+
//	|  MinVersion   |  MaxVersion   |  0
//	+---------------+---------------+
//	|   Reserved    | CreditsReqstd |  4
//	+---------------+---------------+
//	|       PreferredSendSize       |  8
//	+-------------------------------+
//	|        MaxReceiveSize         | 12
//	+-------------------------------+
//	|       MaxFragmentedSize       | 16
//	+-------------------------------+ 20
//
// Negotiate Response, 32 bytes (section 2.2.2):
//
//	+---------------+---------------+
//	|  MinVersion   |  MaxVersion   |  0
//	+---------------+---------------+
//	| NegotiatedVer |   Reserved    |  4
//	+---------------+---------------+
//	| CreditsReqstd | CreditsGrantd |  8
//	+---------------+---------------+
//	|       Status (NTSTATUS)       | 12
//	+-------------------------------+
//	|       MaxReadWriteSize        | 16
//	+-------------------------------+
//	|       PreferredSendSize       | 20
//	+-------------------------------+
//	|        MaxReceiveSize         | 24
//	+-------------------------------+
//	|       MaxFragmentedSize       | 28
//	+-------------------------------+ 32
//
// Data Transfer message (section 2.2.3): a 20-byte header; with a payload
// also 4 bytes of Padding and the payload at DataOffset (24 here):
//
//	+---------------+---------------+
//	| CreditsReqstd | CreditsGrantd |  0
//	+---------------+---------------+
//	|     Flags     |   Reserved    |  4
//	+---------------+---------------+
//	|      RemainingDataLength      |  8
//	+-------------------------------+
//	|          DataOffset           | 12
//	+-------------------------------+
//	|          DataLength           | 16
//	+-------------------------------+
//	|   Padding (only with data)    | 20
//	+-------------------------------+
//	|  Buffer: DataLength bytes     | 24 = DataOffset
//	|  ...                          |
//	+-------------------------------+
//
// Buffer Descriptor V1, 16 bytes ([MS-SMBD] section 2.2.3.1, named
// SMB_DIRECT_BUFFER_DESCRIPTOR_V1; [MS-SMB2] sections 2.2.19 and 2.2.21
// embed a list of them when Channel is SMB2_CHANNEL_RDMA_V1 or
// SMB2_CHANNEL_RDMA_V1_INVALIDATE):
//
//	+-------------------------------+
//	|         Offset (64)           |  0
//	|                               |
//	+-------------------------------+
//	|      Token (remote STag)      |  8
//	+-------------------------------+
//	|            Length             | 12
//	+-------------------------------+ 16
package wire

import "errors"

// ErrShort means the buffer ends before the message does: a message
// shorter than its fixed part.
var ErrShort = errors.New("wire: message truncated")

// ErrMalformed means the bytes are not a valid message. Errors that name
// the broken rule (*RuleError) wrap it.
var ErrMalformed = errors.New("wire: malformed message")
