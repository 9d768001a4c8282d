package ctl

import (
	"encoding/binary"
	"fmt"
)

// Access bits of a registration.
const (
	AccessPeerRead  = 1
	AccessPeerWrite = 2
)

// Register registers [Offset, Offset+Length) of the file passed with the
// message (a regular file, or a memfd shared with the client) on a
// connection, for the peer's RDMA access.
type Register struct {
	Conn   uint64
	Access uint8
	Offset uint64
	Length uint32
}

func AppendRegister(b []byte, id uint64, m *Register) []byte {
	s := len(b)
	b = AppendHeader(b, TypeRegister, id)
	b = binary.LittleEndian.AppendUint64(b, m.Conn)
	b = append(b, m.Access, 0, 0, 0)
	b = binary.LittleEndian.AppendUint64(b, m.Offset)
	b = binary.LittleEndian.AppendUint32(b, m.Length)
	return Finish(b, s)
}

func ParseRegister(body []byte) (Register, error) {
	r := NewReader(body)
	m := Register{Conn: r.U64(), Access: r.U8()}
	r.U8()
	r.U16()
	m.Offset, m.Length = r.U64(), r.U32()
	return m, r.Err(true)
}

// Descriptor is an MS-SMBD Buffer Descriptor V1.
type Descriptor struct {
	Offset uint64
	Token  uint32
	Length uint32
}

// Registered answers Register: the handle (for Deregister) and the
// descriptor to put in an SMB2 request's channel information.
type Registered struct {
	Reg        uint64
	Descriptor Descriptor
}

func AppendRegistered(b []byte, id uint64, m *Registered) []byte {
	s := len(b)
	b = AppendHeader(b, TypeRegistered, id)
	b = binary.LittleEndian.AppendUint64(b, m.Reg)
	b = appendDesc(b, m.Descriptor)
	return Finish(b, s)
}

func ParseRegistered(body []byte) (Registered, error) {
	r := NewReader(body)
	m := Registered{Reg: r.U64()}
	m.Descriptor = readDesc(r)
	return m, r.Err(true)
}

func appendDesc(b []byte, d Descriptor) []byte {
	b = binary.LittleEndian.AppendUint64(b, d.Offset)
	b = binary.LittleEndian.AppendUint32(b, d.Token)
	return binary.LittleEndian.AppendUint32(b, d.Length)
}

func readDesc(r *Reader) Descriptor {
	return Descriptor{Offset: r.U64(), Token: r.U32(), Length: r.U32()}
}

// Deregister revokes and releases a registration.
type Deregister struct{ Reg uint64 }

func AppendDeregister(b []byte, id uint64, m *Deregister) []byte {
	s := len(b)
	b = AppendHeader(b, TypeDeregister, id)
	b = binary.LittleEndian.AppendUint64(b, m.Reg)
	return Finish(b, s)
}

func ParseDeregister(body []byte) (Deregister, error) {
	r := NewReader(body)
	m := Deregister{Reg: r.U64()}
	return m, r.Err(true)
}

// MaxDescriptors bounds a Transfer's descriptor list.
const MaxDescriptors = 256

// Transfer is an RDMA Write (TypeRDMAWrite: from the file passed with the
// message, at FileOffset, to the peer's descriptors) or an RDMA Read
// (TypeRDMARead: from the peer's descriptors into the file). The reply is
// OK with the byte count, once the transfer is done.
type Transfer struct {
	Conn        uint64
	FileOffset  uint64
	Descriptors []Descriptor
}

// AppendTransfer appends a Transfer of type typ (TypeRDMAWrite or
// TypeRDMARead).
func AppendTransfer(b []byte, typ uint8, id uint64, m *Transfer) []byte {
	s := len(b)
	b = AppendHeader(b, typ, id)
	b = binary.LittleEndian.AppendUint64(b, m.Conn)
	b = binary.LittleEndian.AppendUint64(b, m.FileOffset)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(m.Descriptors)))
	for _, d := range m.Descriptors {
		b = appendDesc(b, d)
	}
	return Finish(b, s)
}

// ParseTransfer decodes a Transfer; the descriptors are appended to ds (so
// a caller can reuse a slice).
func ParseTransfer(body []byte, ds []Descriptor) (Transfer, error) {
	r := NewReader(body)
	m := Transfer{Conn: r.U64(), FileOffset: r.U64()}
	n := int(r.U16())
	if r.Err(false) == nil && (n == 0 || n > MaxDescriptors) {
		return m, fmt.Errorf("%w: %d descriptors, want 1 to %d", ErrMalformed, n, MaxDescriptors)
	}
	for i := 0; i < n && r.Err(false) == nil; i++ {
		ds = append(ds, readDesc(r))
	}
	m.Descriptors = ds
	return m, r.Err(true)
}
