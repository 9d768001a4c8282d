package testbed

// A deliberately independent, minimal iWARP codec for the capture tests: it is written from RFC 5044/6581
// (MPA), 5041 (DDP) and 5040 (RDMAP) rather than taken from iwarp/internal/wire, so that what Linux siw
// accepts and sends checks the RFC reading, not our own codec against itself.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"time"
)

// MPA (RFC 5044 section 7.1; "enhanced" is RFC 6581).
const (
	mpaKeyReq      = "MPA ID Req Frame"
	mpaKeyRep      = "MPA ID Rep Frame"
	mpaFlagMarkers = 0x8000
	mpaFlagCRC     = 0x4000
	mpaFlagReject  = 0x2000
	mpaFlagEnh     = 0x1000
)

// DDP/RDMAP control field (RFC 5041 section 4, RFC 5040 section 4): T, L, 4 reserved bits, DDP version
// (2 bits), RDMAP version (2 bits), 2 reserved bits, opcode (4 bits).
const (
	ctlT        = 0x8000
	ctlL        = 0x4000
	ctlVersions = 1<<8 | 1<<6 // DDP version 1, RDMAP version 1
	opWrite     = 0
	opReadReq   = 1
	opReadResp  = 2
	opSend      = 3
	opTerminate = 7
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// mpaFrame is a parsed MPA request or reply.
type mpaFrame struct {
	Raw      []byte // header and private data as on the wire
	Key      string
	Flags    uint16 // the 16 bits after the key: M C R E, reserved, revision in the low byte
	PD       []byte
	IRD, ORD uint16 // RFC 6581 words (control bits included) when PD holds them
}

func appendMPA(b []byte, key string, flags uint16, pd []byte) []byte {
	b = append(b, key...)
	b = binary.BigEndian.AppendUint16(b, flags)
	b = binary.BigEndian.AppendUint16(b, uint16(len(pd)))
	return append(b, pd...)
}

func irdOrd(ird, ord uint16) []byte {
	return binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint16(nil, ird), ord)
}

// fpdu is a parsed MPA FPDU with its DDP/RDMAP header.
type fpdu struct {
	Raw        []byte // the whole FPDU: length, ULPDU, pad, CRC trailer if any
	ULPDULen   int
	Pad        int
	Ctrl       uint16
	Opcode     int
	Tagged     bool
	Last       bool
	STag       uint32 // tagged
	TO         uint64 // tagged
	Inv        uint32 // untagged: the reserved / invalidate-STag word
	QN, MSN    uint32 // untagged
	MO         uint32 // untagged
	Payload    []byte // after the DDP/RDMAP header
	CRCTrailer []byte // as on the wire
	CRC        uint32 // CRC32c over length, ULPDU and pad (what the trailer must encode)
}

// peer is one side of a connection to siw (or a replay of a capture), recording every byte in each
// direction.
type peer struct {
	r      io.Reader
	w      io.Writer
	crc    bool // CRC negotiated: the CRC fields are checked and filled in
	rx, tx bytes.Buffer
}

func newPeer(c net.Conn, deadline time.Time) *peer {
	c.SetDeadline(deadline)
	return &peer{r: c, w: c}
}

func (p *peer) read(n int) ([]byte, error) {
	b := make([]byte, n)
	if _, err := io.ReadFull(p.r, b); err != nil {
		return nil, err
	}
	p.rx.Write(b)
	return b, nil
}

func (p *peer) write(b []byte) error {
	p.tx.Write(b)
	_, err := p.w.Write(b)
	return err
}

// readMPA reads an MPA request or reply.
func (p *peer) readMPA() (*mpaFrame, error) {
	h, err := p.read(20)
	if err != nil {
		return nil, fmt.Errorf("reading the MPA header: %w", err)
	}
	f := &mpaFrame{Key: string(h[:16]), Flags: binary.BigEndian.Uint16(h[16:])}
	n := int(binary.BigEndian.Uint16(h[18:]))
	if f.Key != mpaKeyReq && f.Key != mpaKeyRep || n > 512 {
		return nil, fmt.Errorf("not an MPA frame: % x", h)
	}
	if f.PD, err = p.read(n); err != nil {
		return nil, fmt.Errorf("reading %d bytes of MPA private data: %w", n, err)
	}
	f.Raw = append(h, f.PD...)
	if f.Flags&mpaFlagEnh != 0 && n >= 4 {
		f.IRD, f.ORD = binary.BigEndian.Uint16(f.PD), binary.BigEndian.Uint16(f.PD[2:])
	}
	return f, nil
}

// readFPDU reads and decodes one FPDU; with CRC it checks the trailer (little-endian CRC32c, as found on
// the wire) and fails on a mismatch, saying whether the big-endian reading would have matched.
func (p *peer) readFPDU() (*fpdu, error) {
	lb, err := p.read(2)
	if err != nil {
		return nil, err
	}
	f := &fpdu{ULPDULen: int(binary.BigEndian.Uint16(lb))}
	f.Pad = (4 - (2+f.ULPDULen)%4) % 4
	// The CRC field is always there (RFC 5044 section 4.1): without CRC it "may contain any value" and
	// is not checked. Linux siw sends zeros.
	rest := f.ULPDULen + f.Pad + 4
	body, err := p.read(rest)
	if err != nil {
		return nil, fmt.Errorf("FPDU of %d bytes: %w", f.ULPDULen, err)
	}
	f.Raw = append(lb, body...)
	if pad := f.Raw[2+f.ULPDULen : 2+f.ULPDULen+f.Pad]; !bytes.Equal(pad, make([]byte, f.Pad)) {
		return f, fmt.Errorf("pad bytes % x are not zero", pad)
	}
	covered := f.Raw[:2+f.ULPDULen+f.Pad]
	f.CRC = crc32.Checksum(covered, castagnoli)
	f.CRCTrailer = f.Raw[len(covered):]
	if !p.crc && binary.BigEndian.Uint32(f.CRCTrailer) != 0 {
		return f, fmt.Errorf("CRC field % x without CRC: siw sends zeros", f.CRCTrailer)
	}
	if p.crc {
		if got := binary.LittleEndian.Uint32(f.CRCTrailer); got != f.CRC {
			return f, fmt.Errorf("CRC trailer % x: want %08x little-endian (big-endian match: %v)",
				f.CRCTrailer, f.CRC, binary.BigEndian.Uint32(f.CRCTrailer) == f.CRC)
		}
	}
	return f, f.decode(f.Raw[2 : 2+f.ULPDULen])
}

func (f *fpdu) decode(u []byte) error {
	if len(u) < 2 {
		return errors.New("ULPDU shorter than a control field")
	}
	f.Ctrl = binary.BigEndian.Uint16(u)
	f.Tagged, f.Last, f.Opcode = f.Ctrl&ctlT != 0, f.Ctrl&ctlL != 0, int(f.Ctrl&0xf)
	if f.Ctrl&0x0fc0 != ctlVersions {
		return fmt.Errorf("control %04x: not DDP version 1 / RDMAP version 1", f.Ctrl)
	}
	if f.Tagged {
		if len(u) < 14 {
			return errors.New("short tagged header")
		}
		f.STag, f.TO, f.Payload = binary.BigEndian.Uint32(u[2:]), binary.BigEndian.Uint64(u[6:]), u[14:]
		return nil
	}
	if len(u) < 18 {
		return errors.New("short untagged header")
	}
	f.Inv, f.QN = binary.BigEndian.Uint32(u[2:]), binary.BigEndian.Uint32(u[6:])
	f.MSN, f.MO, f.Payload = binary.BigEndian.Uint32(u[10:]), binary.BigEndian.Uint32(u[14:]), u[18:]
	return nil
}

func (f *fpdu) String() string {
	if f.Tagged {
		return fmt.Sprintf("tagged op %d L=%v STag %08x TO %x, %d bytes", f.Opcode, f.Last, f.STag, f.TO, len(f.Payload))
	}
	return fmt.Sprintf("untagged op %d L=%v QN %d MSN %d MO %d inv %08x, %d bytes", f.Opcode, f.Last, f.QN, f.MSN, f.MO, f.Inv, len(f.Payload))
}

// writeFPDU frames a ULPDU: length, ULPDU, pad, and the CRC field (zero when CRC is off).
func (p *peer) writeFPDU(ulpdu []byte) error {
	b := binary.BigEndian.AppendUint16(nil, uint16(len(ulpdu)))
	b = append(b, ulpdu...)
	b = append(b, make([]byte, (4-(2+len(ulpdu))%4)%4)...)
	var crc uint32
	if p.crc {
		crc = crc32.Checksum(b, castagnoli)
	}
	return p.write(binary.LittleEndian.AppendUint32(b, crc))
}

func untagged(op int, qn, msn, mo uint32, payload []byte) []byte {
	b := binary.BigEndian.AppendUint16(nil, ctlL|ctlVersions|uint16(op))
	b = binary.BigEndian.AppendUint32(b, 0)
	b = binary.BigEndian.AppendUint32(b, qn)
	b = binary.BigEndian.AppendUint32(b, msn)
	b = binary.BigEndian.AppendUint32(b, mo)
	return append(b, payload...)
}

func tagged(op int, stag uint32, to uint64, payload []byte) []byte {
	b := binary.BigEndian.AppendUint16(nil, ctlT|ctlL|ctlVersions|uint16(op))
	b = binary.BigEndian.AppendUint32(b, stag)
	b = binary.BigEndian.AppendUint64(b, to)
	return append(b, payload...)
}

// readRequest is the RDMAP Read Request payload (RFC 5040 section 4.4).
func readRequest(sinkSTag uint32, sinkTO uint64, size, srcSTag uint32, srcTO uint64) []byte {
	b := binary.BigEndian.AppendUint32(nil, sinkSTag)
	b = binary.BigEndian.AppendUint64(b, sinkTO)
	b = binary.BigEndian.AppendUint32(b, size)
	b = binary.BigEndian.AppendUint32(b, srcSTag)
	return binary.BigEndian.AppendUint64(b, srcTO)
}

// rpingInfo is rping's struct rping_rdma_info {be64 buf; be32 rkey; be32 size}.
type rpingInfo struct {
	Addr       uint64
	RKey, Size uint32
}

func (i rpingInfo) bytes() []byte {
	b := binary.BigEndian.AppendUint64(nil, i.Addr)
	b = binary.BigEndian.AppendUint32(b, i.RKey)
	return binary.BigEndian.AppendUint32(b, i.Size)
}

func parseRpingInfo(b []byte) (rpingInfo, error) {
	if len(b) != 16 {
		return rpingInfo{}, fmt.Errorf("rping info of %d bytes, want 16", len(b))
	}
	return rpingInfo{binary.BigEndian.Uint64(b), binary.BigEndian.Uint32(b[8:]), binary.BigEndian.Uint32(b[12:])}, nil
}

// rpingData is what rping's client puts in its buffer for ping 0: "rdma-ping-0: " then the letters from
// 'A' to 'z' over and over, NUL-terminated.
func rpingData(size int) []byte {
	b := []byte("rdma-ping-0: ")
	for c := byte('A'); len(b) < size-1; c++ {
		if c > 'z' {
			c = 'A'
		}
		b = append(b, c)
	}
	return append(b, 0)
}
