package ctl

import (
	"encoding/binary"
	"fmt"
)

// Dial asks the daemon to connect to an SMB Direct server; the reply is a
// Conn with the stream fd. Flags (DialClientChannel) follow the address
// as an optional u32, exactly as Listen's do.
type Dial struct {
	Addr      string
	TimeoutMS uint32 // 0: the daemon's default
	Flags     uint32
}

// DialClientChannel gives the dialed connection the daemon's client-side
// RDMA channel: unsigned SMB2 READ and WRITE requests the client writes
// inline are sent with an RDMA channel, the daemon registering the memory,
// and READ responses reach the client inline again (docs/smbdirectd.md).
const DialClientChannel = 1

func AppendDial(b []byte, id uint64, m *Dial) []byte {
	s := len(b)
	b = AppendHeader(b, TypeDial, id)
	b = binary.LittleEndian.AppendUint32(b, m.TimeoutMS)
	b = AppendBytes16(b, []byte(m.Addr))
	if m.Flags != 0 {
		b = binary.LittleEndian.AppendUint32(b, m.Flags)
	}
	return Finish(b, s)
}

func ParseDial(body []byte) (Dial, error) {
	r := NewReader(body)
	m := Dial{TimeoutMS: r.U32()}
	m.Addr = string(r.Bytes16())
	if err := r.Err(false); err != nil || len(r.b) == 0 {
		return m, err
	}
	if len(r.b) != 4 {
		return m, fmt.Errorf("%w: %d bytes after the Dial address, want 0 or 4", ErrMalformed, len(r.b))
	}
	m.Flags = r.U32()
	return m, nil
}

// Listen asks the daemon to accept SMB Direct connections on Addr; the
// reply is Listening, then a Conn event (with the Listen's ID) per
// accepted connection. Flags (ListenServerChannel) follow the address as
// an optional u32: a body that ends after the address means 0, so clients
// that predate Flags keep working, and 0 is sent that way.
type Listen struct {
	Addr  string
	Flags uint32
}

// ListenServerChannel gives the connections accepted by a listener the
// daemon's server-side RDMA channel: SMB2 READ and WRITE requests with an
// RDMA channel reach the client as inline requests, the daemon doing the
// RDMA transfers (docs/smbdirectd.md).
const ListenServerChannel = 1

func AppendListen(b []byte, id uint64, m *Listen) []byte {
	s := len(b)
	b = AppendHeader(b, TypeListen, id)
	b = AppendBytes16(b, []byte(m.Addr))
	if m.Flags != 0 {
		b = binary.LittleEndian.AppendUint32(b, m.Flags)
	}
	return Finish(b, s)
}

func ParseListen(body []byte) (Listen, error) {
	r := NewReader(body)
	m := Listen{Addr: string(r.Bytes16())}
	if err := r.Err(false); err != nil || len(r.b) == 0 {
		return m, err
	}
	if len(r.b) != 4 {
		return m, fmt.Errorf("%w: %d bytes after the Listen address, want 0 or 4", ErrMalformed, len(r.b))
	}
	m.Flags = r.U32()
	return m, nil
}

// Listening reports the listener's handle and bound address.
type Listening struct {
	Listener uint64
	Addr     string
}

func AppendListening(b []byte, id uint64, m *Listening) []byte {
	s := len(b)
	b = AppendHeader(b, TypeListening, id)
	b = binary.LittleEndian.AppendUint64(b, m.Listener)
	b = AppendBytes16(b, []byte(m.Addr))
	return Finish(b, s)
}

func ParseListening(body []byte) (Listening, error) {
	r := NewReader(body)
	m := Listening{Listener: r.U64()}
	m.Addr = string(r.Bytes16())
	return m, r.Err(true)
}

// Conn announces an SMB Direct connection; its stream fd travels with the
// message. What was negotiated comes along.
type Conn struct {
	Conn              uint64
	Listener          uint64 // 0 for a Dial
	MaxSendSize       uint32
	MaxFragmentedSend uint32
	MaxFragmentedRecv uint32
	MaxReadWriteSize  uint32
	Remote            string
}

func AppendConn(b []byte, id uint64, m *Conn) []byte {
	s := len(b)
	b = AppendHeader(b, TypeConn, id)
	b = binary.LittleEndian.AppendUint64(b, m.Conn)
	b = binary.LittleEndian.AppendUint64(b, m.Listener)
	b = binary.LittleEndian.AppendUint32(b, m.MaxSendSize)
	b = binary.LittleEndian.AppendUint32(b, m.MaxFragmentedSend)
	b = binary.LittleEndian.AppendUint32(b, m.MaxFragmentedRecv)
	b = binary.LittleEndian.AppendUint32(b, m.MaxReadWriteSize)
	b = AppendBytes16(b, []byte(m.Remote))
	return Finish(b, s)
}

func ParseConn(body []byte) (Conn, error) {
	r := NewReader(body)
	m := Conn{Conn: r.U64(), Listener: r.U64(), MaxSendSize: r.U32(), MaxFragmentedSend: r.U32(),
		MaxFragmentedRecv: r.U32(), MaxReadWriteSize: r.U32()}
	m.Remote = string(r.Bytes16())
	return m, r.Err(true)
}

// Close ends a connection or a listener (by handle) at once.
type Close struct{ Handle uint64 }

func AppendClose(b []byte, id uint64, m *Close) []byte {
	s := len(b)
	b = AppendHeader(b, TypeClose, id)
	b = binary.LittleEndian.AppendUint64(b, m.Handle)
	return Finish(b, s)
}

func ParseClose(body []byte) (Close, error) {
	r := NewReader(body)
	m := Close{Handle: r.U64()}
	return m, r.Err(true)
}

// Send sends one SMB2 PDU (no Direct TCP header) on a connection with
// Send with Invalidate of Invalidate (0: a plain send).
type Send struct {
	Conn       uint64
	Invalidate uint32
	PDU        []byte
}

func AppendSend(b []byte, id uint64, m *Send) []byte {
	s := len(b)
	b = AppendHeader(b, TypeSend, id)
	b = binary.LittleEndian.AppendUint64(b, m.Conn)
	b = binary.LittleEndian.AppendUint32(b, m.Invalidate)
	b = append(b, m.PDU...)
	return Finish(b, s)
}

func ParseSend(body []byte) (Send, error) {
	r := NewReader(body)
	m := Send{Conn: r.U64(), Invalidate: r.U32()}
	m.PDU = r.Rest()
	return m, r.Err(false)
}
