package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"

	"github.com/smbdirect/smbdirect/internal/framing"
)

// The PDUs of bench scale: Direct-TCP-framed, pdu bytes each, of which the
// first scaleHdr are the sending end's id, the PDU's sequence number and
// a CRC32C of the rest of the PDU (id and sequence number included), and
// the rest comes from a pseudo-random table at an offset that depends on
// both, so a PDU lost, repeated, reordered, cut or delivered to the wrong
// connection is caught by the receiver.
const scaleHdr = 12

var (
	// errScaleChecksum: a PDU's contents do not match its checksum.
	errScaleChecksum = errors.New("PDU checksum mismatch")
	// errScaleLost: a PDU is missing, repeated, reordered, from another
	// connection or of the wrong length.
	errScaleLost = errors.New("PDU lost, out of order or malformed")
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

const scaleTableLen = 1 << 20

var (
	scaleTableOnce sync.Once
	scaleTable     []byte
)

// scaleBody returns the table: scaleTableLen bytes plus room for the
// largest body after any offset.
func scaleBody() []byte {
	scaleTableOnce.Do(func() {
		r := rand.New(rand.NewPCG(11, 6))
		scaleTable = make([]byte, scaleTableLen+maxScalePDU)
		for i := 0; i < len(scaleTable); i += 8 {
			binary.LittleEndian.PutUint64(scaleTable[i:], r.Uint64())
		}
	})
	return scaleTable
}

// maxScalePDU is the largest --pdu: the MS-SMBD default largest
// reassembled message.
const maxScalePDU = 1 << 20

func scaleOffset(id, seq uint32) int {
	return int((uint64(id)*7919 + uint64(seq)*4099) % scaleTableLen)
}

// sendPDUs writes count pdu-byte PDUs of end id to w.
func sendPDUs(w io.Writer, id uint32, pdu, count int) error {
	table := scaleBody()
	buf := make([]byte, framing.HeaderLen+pdu)
	if err := framing.Put(buf, pdu); err != nil {
		return err
	}
	p := buf[framing.HeaderLen:]
	for seq := range uint32(count) {
		binary.BigEndian.PutUint32(p[0:], id)
		binary.BigEndian.PutUint32(p[4:], seq)
		off := scaleOffset(id, seq)
		copy(p[scaleHdr:], table[off:off+pdu-scaleHdr])
		crc := crc32.Update(crc32.Update(0, castagnoli, p[:8]), castagnoli, p[scaleHdr:])
		binary.BigEndian.PutUint32(p[8:], crc)
		if _, err := w.Write(buf); err != nil {
			return err
		}
	}
	return nil
}

// recvPDUs reads count pdu-byte PDUs from r, all from one end, numbered
// from 0, and checks each one's checksum; got counts the bytes read. It
// reads in small pieces: a thousand connections' receivers hold little
// memory.
func recvPDUs(r io.Reader, pdu, count int, got *atomic.Int64) error {
	var hdr [framing.HeaderLen + scaleHdr]byte
	buf := make([]byte, 4096)
	var id uint32
	for seq := range uint32(count) {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return fmt.Errorf("PDU %d: %w", seq, err)
		}
		n, ok := framing.Parse(hdr[:])
		if !ok || n != pdu {
			return fmt.Errorf("%w: PDU %d: header % x, want a %d-byte PDU", errScaleLost, seq, hdr[:framing.HeaderLen], pdu)
		}
		p := hdr[framing.HeaderLen:]
		gotID, gotSeq := binary.BigEndian.Uint32(p[0:]), binary.BigEndian.Uint32(p[4:])
		if seq == 0 {
			id = gotID
		}
		if gotID != id || gotSeq != seq {
			return fmt.Errorf("%w: PDU %d of end %d: got PDU %d of end %d", errScaleLost, seq, id, gotSeq, gotID)
		}
		crc := crc32.Update(0, castagnoli, p[:8])
		for left := pdu - scaleHdr; left > 0; {
			k := min(left, len(buf))
			if _, err := io.ReadFull(r, buf[:k]); err != nil {
				return fmt.Errorf("PDU %d: %w", seq, err)
			}
			crc = crc32.Update(crc, castagnoli, buf[:k])
			left -= k
		}
		if want := binary.BigEndian.Uint32(p[8:]); crc != want {
			return fmt.Errorf("%w: PDU %d of end %d: crc32c %08x, carried %08x", errScaleChecksum, seq, id, crc, want)
		}
		if got != nil {
			got.Add(int64(framing.HeaderLen + pdu))
		}
	}
	return nil
}

// exchange sends count PDUs of end id on c while it receives as many
// from the other end: both ways at once, as SMB2 traffic may be. On a
// failure to receive it closes c, so that the sender does not wait for
// a peer that has stopped reading.
func exchange(c net.Conn, id uint32, pdu, count int, got *atomic.Int64) error {
	errc := make(chan error, 1)
	go func() { errc <- sendPDUs(c, id, pdu, count) }()
	rerr := recvPDUs(c, pdu, count, got)
	if rerr != nil {
		c.Close()
	}
	werr := <-errc
	if rerr != nil {
		return fmt.Errorf("receive: %w", rerr)
	}
	if werr != nil {
		return fmt.Errorf("send: %w", werr)
	}
	return nil
}
