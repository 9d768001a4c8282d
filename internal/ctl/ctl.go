// Package ctl is the control protocol between smbdirectd and its clients
// (docs/smbdirectd.md): one message per SOCK_SEQPACKET datagram, a 16-byte
// header, a body, and file descriptors passed alongside with SCM_RIGHTS.
// Encoders append without allocating; Parse checks every length.
package ctl

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Version is the protocol version this package speaks.
const Version = 1

// Magic starts every message ("SD" little-endian).
const Magic = 0x4453

// DefaultSocket is where the daemon listens and clients connect unless
// told otherwise. This is its one definition: the exported name is
// client.DefaultSocket (package smbdirectd/client; smbdirectd/server and
// cmd/smbdirectd use this constant, which it equals), and clib's
// SDD_DEFAULT_SOCKET is checked against it by a test.
const DefaultSocket = "/run/smbdirect/smbdirectd.sock"

// HeaderLen is the size of the header; MaxMessage bounds a whole message
// (a SEND carries one SMB2 PDU of up to 16 MiB).
const (
	HeaderLen  = 16
	MaxMessage = HeaderLen + 16 + 1<<24
)

// Message types. Requests have the high bit clear; replies and events
// have it set.
const (
	TypeHello      = 0x01
	TypeDial       = 0x02
	TypeListen     = 0x03
	TypeClose      = 0x04
	TypeRegister   = 0x05
	TypeDeregister = 0x06
	TypeRDMAWrite  = 0x07
	TypeRDMARead   = 0x08
	TypeSend       = 0x09

	TypeOK         = 0x80
	TypeHelloOK    = 0x81
	TypeConn       = 0x82 // reply to Dial, and the event for each accepted connection
	TypeListening  = 0x83
	TypeRegistered = 0x85
	TypeError      = 0xff
)

// Header is the fixed start of every message.
type Header struct {
	Type   uint8
	Length uint32 // the whole message, header included
	ID     uint64 // chosen by the client; replies and events echo it
}

var (
	// ErrShort: the message ends before its fields do.
	ErrShort = errors.New("ctl: message truncated")
	// ErrMalformed: a field has an impossible value.
	ErrMalformed = errors.New("ctl: malformed message")
)

// AppendHeader appends a header; Length is patched by Finish.
func AppendHeader(b []byte, typ uint8, id uint64) []byte {
	b = binary.LittleEndian.AppendUint16(b, Magic)
	b = append(b, Version, typ)
	b = binary.LittleEndian.AppendUint32(b, 0)
	return binary.LittleEndian.AppendUint64(b, id)
}

// Finish writes the length of the message that starts at b[start:].
func Finish(b []byte, start int) []byte {
	binary.LittleEndian.PutUint32(b[start+4:], uint32(len(b)-start))
	return b
}

// ParseHeader checks a whole received message and returns its header and
// body.
func ParseHeader(msg []byte) (Header, []byte, error) {
	var h Header
	if len(msg) < HeaderLen {
		return h, nil, ErrShort
	}
	if binary.LittleEndian.Uint16(msg) != Magic {
		return h, nil, fmt.Errorf("%w: bad magic", ErrMalformed)
	}
	if msg[2] != Version {
		return h, nil, fmt.Errorf("%w: version %d, want %d", ErrMalformed, msg[2], Version)
	}
	h.Type = msg[3]
	h.Length = binary.LittleEndian.Uint32(msg[4:])
	h.ID = binary.LittleEndian.Uint64(msg[8:])
	if int64(h.Length) != int64(len(msg)) {
		return h, nil, fmt.Errorf("%w: length field %d, message of %d bytes", ErrMalformed, h.Length, len(msg))
	}
	return h, msg[HeaderLen:], nil
}

// Reader walks a body, remembering the first error.
type Reader struct {
	b   []byte
	err error
}

// NewReader reads body.
func NewReader(body []byte) *Reader { return &Reader{b: body} }

func (r *Reader) take(n int) []byte {
	if r.err != nil {
		return nil
	}
	if len(r.b) < n {
		r.err = ErrShort
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

// U8, U16, U32 and U64 read little-endian integers (0 after an error).
func (r *Reader) U8() uint8 {
	if v := r.take(1); v != nil {
		return v[0]
	}
	return 0
}

func (r *Reader) U16() uint16 {
	if v := r.take(2); v != nil {
		return binary.LittleEndian.Uint16(v)
	}
	return 0
}

func (r *Reader) U32() uint32 {
	if v := r.take(4); v != nil {
		return binary.LittleEndian.Uint32(v)
	}
	return 0
}

func (r *Reader) U64() uint64 {
	if v := r.take(8); v != nil {
		return binary.LittleEndian.Uint64(v)
	}
	return 0
}

// Bytes16 reads a u16 length and that many bytes (a subslice of the body).
func (r *Reader) Bytes16() []byte { return r.take(int(r.U16())) }

// Rest returns what is left.
func (r *Reader) Rest() []byte {
	v := r.b
	r.b = nil
	return v
}

// Err is the first error, or ErrMalformed if bytes are left over when
// done is true.
func (r *Reader) Err(done bool) error {
	if r.err == nil && done && len(r.b) != 0 {
		return fmt.Errorf("%w: %d bytes after the last field", ErrMalformed, len(r.b))
	}
	return r.err
}

// AppendBytes16 appends a u16 length and b.
func AppendBytes16(b, v []byte) []byte {
	b = binary.LittleEndian.AppendUint16(b, uint16(len(v)))
	return append(b, v...)
}
