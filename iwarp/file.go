package iwarp

import (
	"fmt"
	"io"
	"net"
	"syscall"

	"github.com/smbdirect/smbdirect/iwarp/internal/wire"
	"github.com/smbdirect/smbdirect/rdma"
)

// useSendfile is off in the tests of the copying fallback, which the
// systems without a sendfile path use.
var useSendfile = true

// sendFile transmits a Send or RDMA Write whose source is a file range.
// Without CRC, on Linux, the payload goes from the page cache to the socket
// with sendfile(2) and never enters user memory. With CRC it has to be read
// (the CRC covers it) into buf, one segment at a time; so it is without CRC
// where there is no sendfile path (other systems, a conn that is not a
// socket): the same FPDUs, with a zero CRC field.
func (e *endpoint) sendFile(conn net.Conn, s *sqEntry, buf []byte) error {
	fr := s.wr.File
	var rc syscall.RawConn
	if !e.crc {
		rc = sendfileConn(conn)
	}
	copied := rc == nil
	seg := e.segU
	if s.wr.Op == rdma.OpWrite {
		seg = e.segT
	}
	if copied && len(buf) < min(fr.Length, seg) {
		// Only the copying fallback without CRC gets here: the transmit
		// loop keeps a buffer for CRC connections only.
		buf = make([]byte, min(fr.Length, seg))
	}
	b := newTxBatch()
	b.crc = e.crc
	var msn uint32
	if s.wr.Op != rdma.OpWrite {
		e.mu.Lock()
		msn = e.sendMSN
		e.sendMSN++
		e.mu.Unlock()
	}
	hdr := func(a []byte, n int, last bool) []byte {
		switch s.wr.Op {
		case rdma.OpWrite:
			return wire.AppendTagged(a, wire.OpWrite, last, uint32(s.wr.RemoteSTag), s.wr.RemoteAddr+uint64(s.sent))
		default:
			return wire.AppendUntagged(a, sendOpcode(&s.wr), last, uint32(s.wr.InvalidateSTag), wire.QNSend, msn, uint32(s.sent))
		}
	}
	for first := true; first || s.sent < fr.Length; first = false {
		n := min(fr.Length-s.sent, seg)
		last := s.sent+n == fr.Length
		if copied {
			if _, err := io.ReadFull(io.NewSectionReader(fr.File, fr.Offset+int64(s.sent), int64(n)), buf[:n]); err != nil {
				return fmt.Errorf("%w: %v", errFileShort, err)
			}
			b.segment(func(a []byte) []byte { return hdr(a, n, last) }, buf[:n])
			if err := b.flush(conn); err != nil {
				return err
			}
			s.sent += n
			continue
		}
		// Header now; payload by sendfile; pad and (zero) CRC field with the
		// next header.
		start := len(b.arena)
		b.arena = wire.AppendMPALen(b.arena, 0)
		b.arena = hdr(b.arena, n, last)
		ulpdu := len(b.arena) - start - wire.MPALenSize + n
		wire.PutMPALen(b.arena[start:], ulpdu)
		if _, err := conn.Write(b.arena); err != nil {
			return err
		}
		b.reset()
		if err := sendfileN(rc, fr.File, fr.Offset+int64(s.sent), n); err != nil {
			return err
		}
		b.arena = wire.AppendPad(b.arena, ulpdu)
		b.arena = wire.AppendCRC(b.arena, 0) // CRC off: the field is zero
		s.sent += n
	}
	if len(b.arena) > 0 {
		_, err := conn.Write(b.arena)
		return err
	}
	return nil
}
