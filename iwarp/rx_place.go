package iwarp

import (
	"errors"
	"fmt"

	"github.com/smbdirect/smbdirect/iwarp/internal/wire"
	"github.com/smbdirect/smbdirect/rdma"
)

// rxState is the receive side's view of messages in flight.
type rxState struct {
	recvMSN  uint32 // next expected Send MSN
	rreqMSN  uint32 // next expected Read Request MSN
	cur      *rqEntry
	curEnt   rqEntry
	curBytes int
	curOK    bool // cur is in use
	termLen  int  // a Terminate's ULPDU payload length, once its header came
	heard    bool // an FPDU came: txHold is over
	// respPending: Read Requests came whose responses wait for the
	// socket to be drained (sendResponses).
	respPending bool
}

// sendResponses writes the queued RDMA Read Responses from the receive
// path when the transmit path is idle and they are small: a hand-off to
// the transmit goroutine would cost a wake-up per Read, as much as the
// response itself. Otherwise the transmit goroutine sends them.
func (e *endpoint) sendResponses() {
	e.mu.Lock()
	if e.irqHead != e.irqTail && !e.tryInlineLocked() {
		e.kickTxLocked()
	}
	e.mu.Unlock()
}

// rxCommit is what a segment does once its payload is in place and its
// CRC checked. A value, not a closure: the receive path must not allocate.
type rxCommit struct {
	kind uint8 // 0 nothing, 1 read response, 2 send, 3 read request
	n    int
	last bool
	h    wire.Header
	s    *sqEntry
	irq  irqEntry
}

const (
	commitNone = iota
	commitReadResp
	commitSend
	commitReadReq
)

func (e *endpoint) commit(x *rxReader, st *rxState, c *rxCommit) {
	switch c.kind {
	case commitReadResp:
		e.mu.Lock()
		c.s.sent += c.n
		if c.last {
			c.s.done = true
			e.orq = e.orq[:copy(e.orq, e.orq[1:])]
			e.completeSQLocked(true)
			e.drv.delivered()
			if e.sqTx != e.sqTail {
				e.kickTxLocked() // an ORD slot is free for a Read waiting for one
			}
		}
		e.mu.Unlock()
	case commitSend:
		st.curBytes += c.n
		if !c.last {
			return
		}
		h := &c.h
		wc := rdma.Completion{ID: st.curEnt.wr.ID, Op: rdma.OpRecv, Bytes: st.curBytes,
			Solicited: h.Opcode == wire.OpSendSE || h.Opcode == wire.OpSendSEInv}
		if h.Opcode == wire.OpSendInv || h.Opcode == wire.OpSendSEInv {
			wc.Invalidated, wc.InvalidatedSTag = true, rdma.STag(h.Inv)
			if m := e.pd.lookup(h.Inv); m != nil && m.access&(rdma.AccessRemoteRead|rdma.AccessRemoteWrite) != 0 {
				m.valid.Store(false)
			} else {
				wc.Err = &rdma.WorkError{Op: rdma.OpRecv, ID: wc.ID, Err: fmt.Errorf("%w: peer asked to invalidate STag 0x%08x, which it cannot", rdma.ErrRemoteOperation, h.Inv)}
			}
		}
		st.curOK = false
		st.curEnt = rqEntry{}
		st.recvMSN++
		e.deliverRecv(wc)
	case commitReadReq:
		st.rreqMSN++
		e.mu.Lock()
		e.irq[e.irqTail%uint64(len(e.irq))] = c.irq
		e.irqTail++
		e.mu.Unlock()
		if x.nonblock && !(x.r == x.w && x.short) {
			// More may be in the socket: the responses go out together
			// once it is drained (rxDrive.step), one writev for a batch
			// of Read Requests rather than one each.
			st.respPending = true
			return
		}
		e.sendResponses()
	}
}

// rxFPDU is the FPDU being received, kept between calls of rxStep so
// that it resumes where a read would have blocked.
type rxFPDU struct {
	phase  uint8 // rxHeader, rxPayload, rxTrailer
	ulpdu  int
	hdr    [wire.MPALenSize + wire.ReadRequestLen]byte
	hdrLen int
	dst    []byte
	got    int
	crc    uint32
	// whole: the FPDU was in the receive buffer at its header, and its
	// CRC was computed there in one call (wantCRC is its trailer's).
	whole   bool
	wantCRC uint32
	c       rxCommit
}

const (
	rxHeader = iota
	rxPayload
	rxTrailer
)

// rxStep runs the receive path until a read would block (errWouldBlock,
// with the FPDU in progress kept in f) or the stream ends (any other
// error). It must not close the socket: it may run inside a read callback
// of the socket (see drive.go).
func (e *endpoint) rxStep(x *rxReader, st *rxState, f *rxFPDU) error {
	crcOn := e.crc
	for {
		switch f.phase {
		case rxHeader:
			if err := x.need(wire.FPDUPrefixLen); err != nil {
				return err
			}
			ulpdu, hl := wire.ParseFPDUPrefix(x.buf[x.r:])
			if ulpdu < hl {
				return perr(wire.LayerDDP, wire.DDPTypeCatastrophic, 0, "ULPDU of %d bytes shorter than its %d-byte header", ulpdu, hl)
			}
			if err := x.need(wire.MPALenSize + hl); err != nil {
				return err
			}
			f.hdrLen = copy(f.hdr[:], x.buf[x.r:x.r+wire.MPALenSize+hl])
			raw := f.hdr[:f.hdrLen]
			h, _, err := wire.ParseHeader(raw[wire.MPALenSize:])
			if err != nil {
				var he *wire.HeaderError
				if errors.As(err, &he) {
					return &protoErr{layer: he.Layer, typ: he.Type, code: he.Code, msg: he.Msg, hdr: raw}
				}
				return perr(wire.LayerDDP, wire.DDPTypeCatastrophic, 0, "bad header: %v", err)
			}
			f.crc, f.whole = 0, false
			if crcOn {
				if end := x.r + wire.FPDULen(ulpdu); end <= x.w {
					// The whole FPDU is in the buffer (MSS-sized FPDUs
					// mostly are): one CRC call over it, not one each for
					// header, payload and pad. Checked after the header's
					// validation, as when the pieces come apart.
					f.whole = true
					f.crc = wire.UpdateCRC(0, x.buf[x.r:end-wire.CRCSize])
					f.wantCRC = wire.CRCFromTrailer(x.buf[end-wire.CRCSize:])
				} else {
					f.crc = wire.UpdateCRC(0, raw)
				}
			}
			x.r += len(raw)
			n := ulpdu - hl
			if !st.heard {
				// The first FPDU: the initiator spoke first, so we may send
				// now (txHold is set only before the receive path starts).
				st.heard = true
				e.mu.Lock()
				if e.life.heard() {
					e.kickTxLocked()
				}
				e.mu.Unlock()
			}

			var dst []byte
			f.c = rxCommit{n: n, last: h.Last}
			switch h.Opcode {
			case wire.OpWrite:
				dst, err = e.placeWrite(&h, n)
			case wire.OpReadResponse:
				dst, err = e.placeReadResponse(&h, &f.c)
			case wire.OpSend, wire.OpSendInv, wire.OpSendSE, wire.OpSendSEInv:
				dst, err = e.placeSend(st, &h, &f.c)
			case wire.OpReadRequest:
				if n != 0 {
					err = perr(wire.LayerDDP, wire.DDPTypeUntagged, wire.DDPCodeTooLong, "Read Request with %d bytes of payload", n)
					break
				}
				err = e.readRequest(st, &h, &f.c)
			case wire.OpTerminate:
				// The rest is read without yielding (recvTerminate), when
				// the receive path winds up.
				st.termLen = n
				return errTermReceived
			}
			if err == nil && f.whole && f.crc != f.wantCRC {
				// Not placed: its bytes are known to be damaged.
				err = crcErr(f.wantCRC, f.crc)
			}
			if err != nil {
				var pe *protoErr
				if errors.As(err, &pe) && pe.layer != wire.LayerLLP {
					pe.hdr = raw
				}
				return err
			}
			f.ulpdu, f.dst, f.got, f.phase = ulpdu, dst, 0, rxPayload
		case rxPayload:
			if err := x.readInto(f.dst, &f.got); err != nil {
				return err
			}
			x.bulk = len(f.dst) >= bulkPayload
			if crcOn && !f.whole {
				f.crc = wire.UpdateCRC(f.crc, f.dst)
			}
			f.phase = rxTrailer
		case rxTrailer:
			pad := wire.PadLen(f.ulpdu)
			// The CRC field is always there; without CRC it is not checked.
			tail := pad + wire.CRCSize
			if err := x.need(tail); err != nil {
				return err
			}
			if crcOn && !f.whole {
				crc := wire.UpdateCRC(f.crc, x.buf[x.r:x.r+pad])
				if got := wire.CRCFromTrailer(x.buf[x.r+pad:]); got != crc {
					return crcErr(got, crc)
				}
			}
			x.r += tail
			f.dst, f.phase = nil, rxHeader
			e.commit(x, st, &f.c)
		}
	}
}

// crcErr is the error of an FPDU whose CRC field (got) is not the CRC
// computed over it.
func crcErr(got, computed uint32) error {
	return perr(wire.LayerLLP, 0, wire.LLPCodeCRC, "MPA CRC 0x%08x, computed 0x%08x", got, computed)
}

// placeWrite validates an RDMA Write segment and returns where it goes.
func (e *endpoint) placeWrite(h *wire.Header, n int) ([]byte, error) {
	if n == 0 {
		return nil, nil // zero-length Write (an RTR, say) needs no valid STag
	}
	m := e.pd.lookup(h.STag)
	if m == nil || !m.valid.Load() {
		return nil, perr(wire.LayerDDP, wire.DDPTypeTagged, wire.DDPCodeTaggedInvalidSTag, "RDMA Write to invalid STag 0x%08x", h.STag)
	}
	if m.access&rdma.AccessRemoteWrite == 0 {
		return nil, perr(wire.LayerRDMAP, wire.RDMAPTypeProtection, wire.RDMAPCodeAccessRights, "RDMA Write to STag 0x%08x without remote write access", h.STag)
	}
	off, err := m.span(h.TO, n)
	if err != nil {
		code := uint8(wire.DDPCodeTaggedBaseBounds)
		if err == errTOWrap {
			code = wire.DDPCodeTaggedTOWrap
		}
		return nil, perr(wire.LayerDDP, wire.DDPTypeTagged, code, "RDMA Write of %d bytes at 0x%x: %v of STag 0x%08x", n, h.TO, err, h.STag)
	}
	return m.buf[off : off+n], nil
}

// placeReadResponse matches a Read Response segment to the oldest
// outstanding Read.
func (e *endpoint) placeReadResponse(h *wire.Header, c *rxCommit) ([]byte, error) {
	n := c.n
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.orq) == 0 {
		return nil, perr(wire.LayerRDMAP, wire.RDMAPTypeRemoteOp, wire.RDMAPCodeOpcode, "RDMA Read Response with no Read outstanding")
	}
	s := &e.sq[e.orq[0]%uint64(len(e.sq))]
	if h.STag != s.sink {
		return nil, perr(wire.LayerDDP, wire.DDPTypeTagged, wire.DDPCodeTaggedInvalidSTag, "Read Response to STag 0x%08x, the Read's sink is 0x%08x", h.STag, s.sink)
	}
	if h.TO != s.to+uint64(s.sent) || s.sent+n > len(s.data) {
		return nil, perr(wire.LayerDDP, wire.DDPTypeTagged, wire.DDPCodeTaggedBaseBounds, "Read Response of %d bytes at 0x%x outside the Read's sink [0x%x,+%d) after %d", n, h.TO, s.to, len(s.data), s.sent)
	}
	c.kind, c.s = commitReadResp, s
	return s.data[s.sent : s.sent+n], nil
}

// placeSend places an untagged Send segment into the posted receive.
func (e *endpoint) placeSend(st *rxState, h *wire.Header, c *rxCommit) ([]byte, error) {
	n := c.n
	if h.MSN != st.recvMSN {
		return nil, perr(wire.LayerDDP, wire.DDPTypeUntagged, wire.DDPCodeMSNRange, "Send MSN %d, expected %d", h.MSN, st.recvMSN)
	}
	if !st.curOK {
		if h.MO != 0 {
			return nil, perr(wire.LayerDDP, wire.DDPTypeUntagged, wire.DDPCodeInvalidMO, "first Send segment at MO %d", h.MO)
		}
		e.mu.Lock()
		if e.rqHead == e.rqTail {
			e.mu.Unlock()
			return nil, perr(wire.LayerDDP, wire.DDPTypeUntagged, wire.DDPCodeNoBuffer, "Send MSN %d: no receive buffer posted", h.MSN)
		}
		r := &e.rq[e.rqHead%uint64(len(e.rq))]
		st.curEnt = *r
		*r = rqEntry{}
		e.rqHead++
		e.mu.Unlock()
		st.curOK, st.curBytes = true, 0
	} else if int(h.MO) != st.curBytes {
		return nil, perr(wire.LayerDDP, wire.DDPTypeUntagged, wire.DDPCodeInvalidMO, "Send segment at MO %d, expected %d", h.MO, st.curBytes)
	}
	if st.curBytes+n > len(st.curEnt.dst) {
		id := st.curEnt.wr.ID
		e.deliverRecv(rdma.Completion{ID: id, Op: rdma.OpRecv, Err: &rdma.WorkError{Op: rdma.OpRecv, ID: id,
			Err: fmt.Errorf("%w: message of %d+ bytes, buffer of %d", rdma.ErrLocalLength, st.curBytes+n, len(st.curEnt.dst))}})
		st.curOK = false
		return nil, perr(wire.LayerDDP, wire.DDPTypeUntagged, wire.DDPCodeTooLong, "Send of %d+ bytes into a %d-byte receive buffer", st.curBytes+n, len(st.curEnt.dst))
	}
	c.kind, c.h = commitSend, *h
	return st.curEnt.dst[st.curBytes : st.curBytes+n], nil
}

// readRequest validates an inbound RDMA Read Request and queues its
// response.
func (e *endpoint) readRequest(st *rxState, h *wire.Header, c *rxCommit) error {
	if h.MSN != st.rreqMSN {
		return perr(wire.LayerDDP, wire.DDPTypeUntagged, wire.DDPCodeMSNRange, "Read Request MSN %d, expected %d", h.MSN, st.rreqMSN)
	}
	if h.MO != 0 || !h.Last {
		return perr(wire.LayerDDP, wire.DDPTypeUntagged, wire.DDPCodeInvalidMO, "Read Request segment at MO %d", h.MO)
	}
	var src []byte
	if h.ReadSize > 0 {
		m := e.pd.lookup(h.SourceSTag)
		if m == nil || !m.valid.Load() {
			return perr(wire.LayerRDMAP, wire.RDMAPTypeProtection, wire.RDMAPCodeInvalidSTag, "RDMA Read from invalid STag 0x%08x", h.SourceSTag)
		}
		if m.access&rdma.AccessRemoteRead == 0 {
			return perr(wire.LayerRDMAP, wire.RDMAPTypeProtection, wire.RDMAPCodeAccessRights, "RDMA Read from STag 0x%08x without remote read access", h.SourceSTag)
		}
		off, err := m.span(h.SourceTO, int(h.ReadSize))
		if err != nil || h.ReadSize > 1<<31 {
			code := uint8(wire.RDMAPCodeBaseBounds)
			if err == errTOWrap {
				code = wire.RDMAPCodeTOWrap
			}
			return perr(wire.LayerRDMAP, wire.RDMAPTypeProtection, code, "RDMA Read of %d bytes at 0x%x outside STag 0x%08x", h.ReadSize, h.SourceTO, h.SourceSTag)
		}
		src = m.buf[off : off+int(h.ReadSize)]
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.irqTail-e.irqHead >= uint64(len(e.irq)) {
		return perr(wire.LayerDDP, wire.DDPTypeUntagged, wire.DDPCodeNoBuffer, "Read Request beyond the IRD of %d", len(e.irq))
	}
	c.kind, c.irq = commitReadReq, irqEntry{src: src, sinkSTag: h.SinkSTag, sinkTO: h.SinkTO}
	return nil
}
