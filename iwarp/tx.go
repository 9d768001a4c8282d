package iwarp

import (
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/smbdirect/smbdirect/iwarp/internal/wire"
	"github.com/smbdirect/smbdirect/rdma"
)

// Batching limits of the transmit loop: one writev carries at most this
// many iovecs / header bytes / payload bytes.
const (
	txMaxIov   = 512
	txArena    = 32 << 10
	txMaxBytes = 4 << 20
	// segment overhead in the arena: MPA len, largest header, pad, CRC.
	segOverhead = wire.MPALenSize + wire.ReadRequestLen + 3 + wire.CRCSize
)

// termOut is a Terminate waiting to go out.
type termOut struct {
	t   wire.Terminate
	hdr [64]byte // copy of the offending header (Terminated aliases it)
}

// txBatch gathers FPDUs for one writev without allocating: headers and
// trailers go to the arena, payloads are referenced in place.
type txBatch struct {
	iov      [][]byte
	bufs     net.Buffers
	arena    []byte
	runStart int
	bytes    int
	crc      bool
}

func newTxBatch() *txBatch {
	return &txBatch{iov: make([][]byte, 0, txMaxIov), arena: make([]byte, 0, txArena)}
}

func (b *txBatch) reset() {
	clear(b.iov)
	b.iov = b.iov[:0]
	b.arena = b.arena[:0]
	b.runStart = 0
	b.bytes = 0
}

func (b *txBatch) full() bool {
	return len(b.iov)+3 > txMaxIov || len(b.arena)+segOverhead > txArena || b.bytes >= txMaxBytes
}

// segment appends one FPDU: hdr must be the DDP/RDMAP header (already
// appended by fn to the arena), payload is referenced.
func (b *txBatch) segment(appendHdr func([]byte) []byte, payload []byte) {
	start := len(b.arena)
	b.arena = wire.AppendMPALen(b.arena, 0) // patched below
	b.arena = appendHdr(b.arena)
	ulpdu := len(b.arena) - start - wire.MPALenSize + len(payload)
	b.arena[start] = byte(ulpdu >> 8)
	b.arena[start+1] = byte(ulpdu)
	var crc uint32
	if b.crc {
		crc = wire.UpdateCRC(0, b.arena[start:])
	}
	if len(payload) > 0 {
		b.iov = append(b.iov, b.arena[b.runStart:])
		b.iov = append(b.iov, payload)
		b.runStart = len(b.arena)
		if b.crc {
			crc = wire.UpdateCRC(crc, payload)
		}
	}
	p := len(b.arena)
	b.arena = wire.AppendPad(b.arena, ulpdu)
	if b.crc {
		crc = wire.UpdateCRC(crc, b.arena[p:])
		b.arena = wire.AppendCRC(b.arena, crc)
	}
	b.bytes += len(payload) + len(b.arena) - start
}

func (b *txBatch) flush(c net.Conn) error {
	if b.runStart < len(b.arena) {
		b.iov = append(b.iov, b.arena[b.runStart:])
		b.runStart = len(b.arena)
	}
	if len(b.iov) == 0 {
		return nil
	}
	b.bufs = b.iov
	_, err := b.bufs.WriteTo(c)
	b.reset()
	return err
}

// txLoop is the only goroutine writing to the socket, so FPDUs of one
// message are never split by another's (the ordering DDP requires).
func (e *endpoint) txLoop() {
	defer e.loops.Done()
	b := newTxBatch()
	b.crc = e.crc
	var fileBuf []byte
	for {
		e.mu.Lock()
		if e.term != nil {
			t := e.term
			e.term = nil
			conn := e.conn
			e.mu.Unlock()
			e.sendTerminate(b, conn, t)
			return
		}
		if e.state >= stEnding {
			e.mu.Unlock()
			return
		}
		var doneReads, doneSends bool
		var fileEnt *sqEntry
		if !e.txHold {
			doneReads = e.buildResponses(b)
			fileEnt, doneSends = e.buildSends(b)
		}
		idle := len(b.iov) == 0 && b.runStart == len(b.arena) && fileEnt == nil
		finish := idle && e.closing && e.sqTx == e.sqTail && e.irqHead == e.irqTail
		conn := e.conn
		e.mu.Unlock()

		if finish {
			// Graceful close: FIN after the last FPDU; the receive loop
			// waits for the peer's FIN.
			if tc, ok := conn.(interface{ CloseWrite() error }); ok {
				tc.CloseWrite()
			}
			<-e.done
			return
		}
		if idle && !doneReads && !doneSends {
			select {
			case <-e.txWake:
			case <-e.done:
			}
			continue
		}
		if err := b.flush(conn); err != nil {
			e.end(fmt.Errorf("iwarp: send: %w", err))
			return
		}
		if fileEnt != nil {
			if fileBuf == nil && e.crc {
				fileBuf = make([]byte, e.pcfg.MaxSegment)
			}
			if err := e.sendFile(conn, fileEnt, fileBuf); err != nil {
				err = fmt.Errorf("iwarp: send from file: %w", err)
				e.mu.Lock()
				fileEnt.err = err // the request learns why, the rest is flushed
				e.mu.Unlock()
				e.end(err)
				return
			}
		}
		if doneReads || doneSends || fileEnt != nil {
			e.mu.Lock()
			if fileEnt != nil {
				fileEnt.done = true
			}
			e.completeSQLocked()
			e.mu.Unlock()
		}
	}
}

// buildResponses adds RDMA Read Response segments to the batch. Responses
// are released from the IRD queue only once fully in the batch.
func (e *endpoint) buildResponses(b *txBatch) bool {
	any := false
	for e.irqHead < e.irqTail && !b.full() {
		r := &e.irq[e.irqHead%uint64(len(e.irq))]
		for !b.full() {
			n := min(len(r.src)-r.sent, e.pcfg.MaxSegment)
			last := r.sent+n == len(r.src)
			to := r.sinkTO + uint64(r.sent)
			stag := r.sinkSTag
			b.segment(func(a []byte) []byte {
				return wire.AppendTagged(a, wire.OpReadResponse, last, stag, to)
			}, r.src[r.sent:r.sent+n])
			r.sent += n
			if last {
				*r = irqEntry{}
				e.irqHead++
				any = true
				break
			}
		}
	}
	return any
}

// buildSends adds send-queue work to the batch, in order. It stops at a
// file-sourced request (returned, sent by the caller outside the batch)
// and at a Read beyond the ORD.
func (e *endpoint) buildSends(b *txBatch) (*sqEntry, bool) {
	any := false
	for e.sqTx < e.sqTail && !b.full() {
		s := &e.sq[e.sqTx%uint64(len(e.sq))]
		switch s.wr.Op {
		case rdma.OpSend, rdma.OpSendInvalidate:
			if s.wr.File != nil {
				if len(b.iov) > 0 || b.runStart < len(b.arena) {
					return nil, any // send the batch first
				}
				e.sqTx++
				return s, any
			}
			op := sendOpcode(&s.wr)
			inv := uint32(s.wr.InvalidateSTag)
			msn := e.sendMSN
			for {
				n := min(len(s.data)-s.sent, e.pcfg.MaxSegment)
				last := s.sent+n == len(s.data)
				mo := uint32(s.sent)
				b.segment(func(a []byte) []byte {
					return wire.AppendUntagged(a, op, last, inv, wire.QNSend, msn, mo)
				}, s.data[s.sent:s.sent+n])
				s.sent += n
				if last {
					break
				}
				if b.full() {
					return nil, any
				}
			}
			e.sendMSN++
		case rdma.OpWrite:
			if s.wr.File != nil {
				if len(b.iov) > 0 || b.runStart < len(b.arena) {
					return nil, any
				}
				e.sqTx++
				return s, any
			}
			stag := uint32(s.wr.RemoteSTag)
			for {
				n := min(len(s.data)-s.sent, e.pcfg.MaxSegment)
				last := s.sent+n == len(s.data)
				to := s.wr.RemoteAddr + uint64(s.sent)
				b.segment(func(a []byte) []byte {
					return wire.AppendTagged(a, wire.OpWrite, last, stag, to)
				}, s.data[s.sent:s.sent+n])
				s.sent += n
				if last {
					break
				}
				if b.full() {
					return nil, any
				}
			}
		case rdma.OpRead:
			if len(e.orq) == e.ord {
				return nil, any // ORD reached: wait for a response
			}
			rr := wire.ReadRequest{MSN: e.readMSN, SinkSTag: s.sink, SinkTO: s.to, Size: uint32(len(s.data)),
				SourceSTag: uint32(s.wr.RemoteSTag), SourceTO: s.wr.RemoteAddr}
			b.segment(func(a []byte) []byte { return wire.AppendReadRequest(a, &rr) }, nil)
			e.readMSN++
			e.orq = append(e.orq, e.sqTx)
			e.sqTx++
			continue // completes when the response arrives
		case rdma.OpLocalInvalidate:
			if m := e.pd.lookup(uint32(s.wr.InvalidateSTag)); m != nil {
				m.valid.Store(false)
			} else {
				s.err = fmt.Errorf("%w: local invalidate of unknown STag %v", rdma.ErrLocalProtection, s.wr.InvalidateSTag)
			}
		}
		s.done = true
		e.sqTx++
		any = true
	}
	return nil, any
}

// completeSQLocked delivers completions in posting order, as verbs do.
func (e *endpoint) completeSQLocked() {
	for e.sqHead < e.sqTx {
		s := &e.sq[e.sqHead%uint64(len(e.sq))]
		if !s.done {
			return
		}
		if s.err != nil {
			e.cq.push(rdma.Completion{ID: s.wr.ID, Op: s.wr.Op, Err: &rdma.WorkError{Op: s.wr.Op, ID: s.wr.ID, Err: s.err}})
		} else if !s.wr.Unsignaled {
			e.cq.push(rdma.Completion{ID: s.wr.ID, Op: s.wr.Op, Bytes: s.sent})
		}
		*s = sqEntry{}
		e.sqHead++
	}
}

// sendTerminate writes a Terminate and half-closes the stream. The receive
// loop drains the peer until it closes.
func (e *endpoint) sendTerminate(b *txBatch, conn net.Conn, t *termOut) {
	b.reset()
	b.segment(func(a []byte) []byte { return wire.AppendTerminate(a, &t.t) }, nil)
	conn.SetWriteDeadline(time.Now().Add(time.Second))
	b.flush(conn)
	if tc, ok := conn.(interface{ CloseWrite() error }); ok {
		tc.CloseWrite()
	}
}

var errFileShort = errors.New("file range ends early")

// sendOpcode maps a Send work request to its RDMAP opcode.
func sendOpcode(wr *rdma.SendWR) wire.Opcode {
	switch {
	case wr.Op == rdma.OpSendInvalidate && wr.Solicited:
		return wire.OpSendSEInv
	case wr.Op == rdma.OpSendInvalidate:
		return wire.OpSendInv
	case wr.Solicited:
		return wire.OpSendSE
	}
	return wire.OpSend
}
