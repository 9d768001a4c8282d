// Package smb2 holds the few SMB2 messages the tools need (MS-SMB2): for
// now the NEGOTIATE request and the fields of its response that a probe
// prints. It is no SMB2 client.
package smb2

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// HeaderLen is the SMB2 sync header size.
const HeaderLen = 64

// Dialects.
const (
	Dialect202 = 0x0202
	Dialect210 = 0x0210
	Dialect300 = 0x0300
	Dialect302 = 0x0302
)

// Command codes.
const CommandNegotiate = 0x0000

var (
	// ErrShort: the message ends early.
	ErrShort = errors.New("smb2: message truncated")
	// ErrMalformed: not the expected message.
	ErrMalformed = errors.New("smb2: malformed message")
)

// AppendNegotiateRequest appends an SMB2 NEGOTIATE request (MS-SMB2
// 2.2.3) offering dialects, with signing enabled and the given client GUID
// and no negotiate contexts: 3.1.1 needs AppendNegotiateRequest311.
func AppendNegotiateRequest(b []byte, messageID uint64, guid [16]byte, dialects []uint16) []byte {
	start := len(b)
	b = append(b, make([]byte, HeaderLen+36)...)
	h := b[start:]
	copy(h, "\xfeSMB")
	binary.LittleEndian.PutUint16(h[4:], HeaderLen) // StructureSize
	binary.LittleEndian.PutUint16(h[12:], CommandNegotiate)
	binary.LittleEndian.PutUint16(h[14:], 1) // CreditRequest
	binary.LittleEndian.PutUint64(h[24:], messageID)
	body := h[HeaderLen:]
	binary.LittleEndian.PutUint16(body[0:], 36) // StructureSize
	binary.LittleEndian.PutUint16(body[2:], uint16(len(dialects)))
	binary.LittleEndian.PutUint16(body[4:], 1) // SecurityMode: signing enabled
	copy(body[12:28], guid[:])
	for _, d := range dialects {
		b = binary.LittleEndian.AppendUint16(b, d)
	}
	return b
}

// NegotiateResponse holds what a probe reports of a NEGOTIATE response.
type NegotiateResponse struct {
	Status          uint32 `json:"status"`
	Dialect         uint16 `json:"dialect"`
	SecurityMode    uint16 `json:"security_mode"`
	Capabilities    uint32 `json:"capabilities"`
	MaxTransactSize uint32 `json:"max_transact_size"`
	MaxReadSize     uint32 `json:"max_read_size"`
	MaxWriteSize    uint32 `json:"max_write_size"`
	// The server's choices in the negotiate contexts of a 3.1.1 response;
	// Contexts has bit 1<<type set for each context type present.
	PreauthHash uint16 `json:"-"`
	Cipher      uint16 `json:"-"`
	Signing     uint16 `json:"-"`
	Contexts    uint32 `json:"-"`
}

// Has reports whether the response carried a context of type typ.
func (r *NegotiateResponse) Has(typ uint16) bool { return typ < 32 && r.Contexts&(1<<typ) != 0 }

// ParseNegotiateResponse parses a NEGOTIATE response (MS-SMB2 2.2.4). An
// error response (Status not 0) is returned with only Status set.
func ParseNegotiateResponse(b []byte) (NegotiateResponse, error) {
	var r NegotiateResponse
	if len(b) < HeaderLen {
		return r, ErrShort
	}
	if string(b[:4]) != "\xfeSMB" || binary.LittleEndian.Uint16(b[4:]) != HeaderLen {
		return r, fmt.Errorf("%w: no SMB2 header", ErrMalformed)
	}
	if c := binary.LittleEndian.Uint16(b[12:]); c != CommandNegotiate {
		return r, fmt.Errorf("%w: command 0x%04x, want NEGOTIATE", ErrMalformed, c)
	}
	if binary.LittleEndian.Uint32(b[16:])&1 == 0 {
		return r, fmt.Errorf("%w: not a response", ErrMalformed)
	}
	r.Status = binary.LittleEndian.Uint32(b[8:])
	if r.Status != 0 {
		return r, nil
	}
	body := b[HeaderLen:]
	if len(body) < 64 {
		return r, ErrShort
	}
	if s := binary.LittleEndian.Uint16(body); s != 65 {
		return r, fmt.Errorf("%w: NEGOTIATE response StructureSize %d", ErrMalformed, s)
	}
	r.SecurityMode = binary.LittleEndian.Uint16(body[2:])
	r.Dialect = binary.LittleEndian.Uint16(body[4:])
	r.Capabilities = binary.LittleEndian.Uint32(body[24:])
	r.MaxTransactSize = binary.LittleEndian.Uint32(body[28:])
	r.MaxReadSize = binary.LittleEndian.Uint32(body[32:])
	r.MaxWriteSize = binary.LittleEndian.Uint32(body[36:])
	if r.Dialect == Dialect311 {
		count := int(binary.LittleEndian.Uint16(body[6:]))
		if err := parseResponseContexts(&r, b, int(binary.LittleEndian.Uint32(body[60:])), count); err != nil {
			return r, fmt.Errorf("%w: negotiate contexts", err)
		}
	}
	return r, nil
}

// DialectName formats a dialect as "3.0.2".
func DialectName(d uint16) string {
	return fmt.Sprintf("%d.%d.%d", d>>8, (d>>4)&0xf, d&0xf)
}

var commandNames = [...]string{"NEGOTIATE", "SESSION_SETUP", "LOGOFF", "TREE_CONNECT", "TREE_DISCONNECT", "CREATE", "CLOSE",
	"FLUSH", "READ", "WRITE", "LOCK", "IOCTL", "CANCEL", "ECHO", "QUERY_DIRECTORY", "CHANGE_NOTIFY", "QUERY_INFO", "SET_INFO", "OPLOCK_BREAK"}

// Describe names the message in b: the SMB2 command of its (first) header,
// "SMB1" for an SMB1 message, or "?" for anything else.
func Describe(b []byte) string {
	switch {
	case len(b) >= HeaderLen && string(b[:4]) == "\xfeSMB":
		c := binary.LittleEndian.Uint16(b[12:])
		if int(c) < len(commandNames) {
			return commandNames[c]
		}
		return fmt.Sprintf("command 0x%04x", c)
	case len(b) >= 4 && string(b[:4]) == "\xffSMB":
		return "SMB1"
	case len(b) >= 4 && string(b[:4]) == "\xfdSMB":
		return "TRANSFORM"
	}
	return "?"
}

// Dialects lists the dialects a NEGOTIATE request offers, or nil.
func Dialects(b []byte) []uint16 {
	if Describe(b) != "NEGOTIATE" || len(b) < HeaderLen+36 {
		return nil
	}
	n := int(binary.LittleEndian.Uint16(b[HeaderLen+2:]))
	var out []uint16
	for i := 0; i < n && HeaderLen+36+2*i+2 <= len(b); i++ {
		out = append(out, binary.LittleEndian.Uint16(b[HeaderLen+36+2*i:]))
	}
	return out
}
