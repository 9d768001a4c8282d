package ctl

import "encoding/binary"

// Hello opens a session: the client's version range.
type Hello struct{ Min, Max uint8 }

func AppendHello(b []byte, id uint64, m *Hello) []byte {
	s := len(b)
	b = AppendHeader(b, TypeHello, id)
	b = append(b, m.Min, m.Max, 0, 0)
	return Finish(b, s)
}

func ParseHello(body []byte) (Hello, error) {
	r := NewReader(body)
	m := Hello{Min: r.U8(), Max: r.U8()}
	r.U16()
	return m, r.Err(true)
}

// HelloOK is the daemon's answer: the version used and who it is.
type HelloOK struct {
	Version uint8
	Daemon  string
}

func AppendHelloOK(b []byte, id uint64, m *HelloOK) []byte {
	s := len(b)
	b = AppendHeader(b, TypeHelloOK, id)
	b = append(b, m.Version, 0)
	b = AppendBytes16(b, []byte(m.Daemon))
	return Finish(b, s)
}

func ParseHelloOK(body []byte) (HelloOK, error) {
	r := NewReader(body)
	m := HelloOK{Version: r.U8()}
	r.U8()
	m.Daemon = string(r.Bytes16())
	return m, r.Err(true)
}

// OK ends a request successfully; Value is what the request defines (bytes
// transferred), else 0.
type OK struct{ Value uint64 }

func AppendOK(b []byte, id uint64, m *OK) []byte {
	s := len(b)
	b = AppendHeader(b, TypeOK, id)
	b = binary.LittleEndian.AppendUint64(b, m.Value)
	return Finish(b, s)
}

func ParseOK(body []byte) (OK, error) {
	r := NewReader(body)
	m := OK{Value: r.U64()}
	return m, r.Err(true)
}

// Error codes: errno values where one fits, so a C client can set errno.
const (
	CodeInvalid     = 22  // EINVAL: malformed or impossible request
	CodePermission  = 1   // EPERM: not allowed for this client
	CodeNotFound    = 2   // ENOENT: no such connection, listener or registration
	CodeLimit       = 122 // EDQUOT: a per-client limit is reached
	CodeConnRefused = 111 // ECONNREFUSED: the SMB Direct peer refused or failed negotiation
	CodeIO          = 5   // EIO: the transfer or the connection failed
	CodeTooLarge    = 90  // EMSGSIZE: beyond a negotiated size
	CodeTimeout     = 110 // ETIMEDOUT
	CodeNoHost      = 6   // ENXIO: the peer's host name does not resolve
	CodeHostUnreach = 113 // EHOSTUNREACH: no route to the peer's host
	CodeNetUnreach  = 101 // ENETUNREACH: no route to the peer's network
)

// Error ends a request with a code and a message for people.
type Error struct {
	Code    uint32
	Message string
}

func AppendError(b []byte, id uint64, m *Error) []byte {
	s := len(b)
	b = AppendHeader(b, TypeError, id)
	b = binary.LittleEndian.AppendUint32(b, m.Code)
	msg := m.Message
	if len(msg) > 1024 {
		msg = msg[:1024]
	}
	b = AppendBytes16(b, []byte(msg))
	return Finish(b, s)
}

func ParseError(body []byte) (Error, error) {
	r := NewReader(body)
	m := Error{Code: r.U32()}
	m.Message = string(r.Bytes16())
	return m, r.Err(true)
}
