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
// trailers go to the arena, payloads are referenced in place. It belongs to
// whoever set endpoint.txBusy. The send-queue entries whose last segment is
// in the batch, [sqFrom, sqTo), complete once it is written.
type txBatch struct {
	iov      [][]byte
	bufs     net.Buffers
	arena    []byte
	runStart int
	bytes    int
	crc      bool
	sqFrom   uint64
	sqTo     uint64
}

func newTxBatch() *txBatch {
	// The arena starts small and grows by append up to about txArena (see
	// full); iov entries taken before a growth keep referring to the old
	// array, whose bytes stay as they were.
	return &txBatch{iov: make([][]byte, 0, 8), arena: make([]byte, 0, 1024)}
}

func (b *txBatch) reset() {
	clear(b.iov)
	b.iov = b.iov[:0]
	b.arena = b.arena[:0]
	b.runStart = 0
	b.bytes = 0
	b.sqFrom, b.sqTo = 0, 0
}

// empty reports whether nothing is waiting to be written.
func (b *txBatch) empty() bool { return len(b.iov) == 0 && b.runStart == len(b.arena) }

func (b *txBatch) full() bool {
	return len(b.iov)+3 > txMaxIov || len(b.arena)+segOverhead > txArena || b.bytes >= txMaxBytes
}

// segment appends one FPDU: appendHdr appends the DDP/RDMAP header to the
// arena, the payload is referenced.
func (b *txBatch) segment(appendHdr func([]byte) []byte, payload []byte) {
	start := len(b.arena)
	b.arena = wire.AppendMPALen(b.arena, 0) // patched below
	b.arena = appendHdr(b.arena)
	ulpdu := len(b.arena) - start - wire.MPALenSize + len(payload)
	wire.PutMPALen(b.arena[start:], ulpdu)
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
	}
	// The CRC field is sent even without CRC, as zero (RFC 5044 4.1).
	b.arena = wire.AppendCRC(b.arena, crc)
	b.bytes += len(payload) + len(b.arena) - start
}

// seal closes the open run of arena bytes into an iovec.
func (b *txBatch) seal() {
	if b.runStart < len(b.arena) {
		b.iov = append(b.iov, b.arena[b.runStart:])
		b.runStart = len(b.arena)
	}
}

// consume drops n written bytes from the front of the iovecs.
func (b *txBatch) consume(n int) {
	i := 0
	for i < len(b.iov) && n >= len(b.iov[i]) {
		n -= len(b.iov[i])
		i++
	}
	if i < len(b.iov) {
		b.iov[i] = b.iov[i][n:]
	}
	k := copy(b.iov, b.iov[i:])
	clear(b.iov[k:])
	b.iov = b.iov[:k]
}

// flush writes the whole batch (blocking) and resets it.
func (b *txBatch) flush(c net.Conn) error {
	b.seal()
	var err error
	if len(b.iov) > 0 {
		b.bufs = b.iov
		_, err = b.bufs.WriteTo(c)
	}
	b.iov = b.iov[:0]
	b.arena = b.arena[:0]
	b.runStart, b.bytes = 0, 0
	return err
}

// txLoop writes what the send path queued. Only the holder of txBusy (this
// loop, or PostSend on its inline fast path) touches the socket, so FPDUs of
// one message are never split by another's (the ordering DDP requires).
// It runs while there is something to send: kickTxLocked starts it, and it
// exits, in the same critical section as it finds nothing to do, when the
// queues are empty or an inline writer holds the socket (which kicks it
// again if it leaves work behind). Requests stay in posting order because
// there is one queue and one writer at a time, whichever goroutine it is.
func (e *endpoint) txLoop() {
	b := e.txb
	for {
		e.mu.Lock()
		if e.life.txBusy {
			// PostSend is writing inline; it kicks us when done if it
			// leaves work behind.
			e.txExitLocked()
			return
		}
		if e.term != nil {
			// e.term stays set, so no inline write follows the
			// Terminate, and txBusy keeps one from running beside it:
			// both use e.txb (a race smbd's hostile flood test found).
			t := e.term
			conn := e.conn
			e.life.takeTx()
			e.mu.Unlock()
			e.sendTerminate(b, conn, t)
			e.mu.Lock()
			e.txDone()
			e.txExitLocked()
			return
		}
		if e.life.state >= stEnding {
			e.txExitLocked()
			return
		}
		var fileEnt *sqEntry
		if !e.life.txHold && b.empty() {
			e.buildResponses(b)
			fileEnt = e.buildSends(b)
		}
		idle := b.empty() && fileEnt == nil && b.sqFrom == b.sqTo
		finish := idle && e.life.closing && e.sqTx == e.sqTail && e.irqHead == e.irqTail
		conn := e.conn
		if idle && !finish {
			e.txExitLocked()
			return
		}
		if !idle {
			e.life.takeTx()
		}
		e.mu.Unlock()

		if finish {
			// Graceful close: FIN after the last FPDU; the receive loop
			// waits for the peer's FIN. Staying until the end keeps a
			// second FIN from being attempted.
			if tc, ok := conn.(interface{ CloseWrite() error }); ok {
				tc.CloseWrite()
			}
			<-e.done
			e.mu.Lock()
			e.txExitLocked()
			return
		}
		err := b.flush(conn)
		if err == nil && fileEnt != nil {
			if e.fileBuf == nil && e.crc {
				e.fileBuf = make([]byte, e.segT)
			}
			if err = e.sendFile(conn, fileEnt, e.fileBuf); err != nil {
				err = fmt.Errorf("iwarp: send from file: %w", err)
				e.mu.Lock()
				fileEnt.err = err // the request learns why, the rest is flushed
				e.mu.Unlock()
			}
		}
		e.mu.Lock()
		e.txDone()
		if err == nil {
			e.txDoneLocked(b)
			if fileEnt != nil {
				fileEnt.done = true
				e.completeSQLocked(false)
			}
		}
		e.mu.Unlock()
		if err != nil {
			e.end(fmt.Errorf("iwarp: send: %w", err))
			e.mu.Lock()
			e.txExitLocked()
			return
		}
	}
}

// txExitLocked ends the transmit goroutine: called with e.mu held, it
// releases it, and reaps when the receive goroutine is gone too.
func (e *endpoint) txExitLocked() {
	e.txRun = false
	last := e.lastOutLocked()
	e.mu.Unlock()
	if last {
		e.reap()
	}
}

// txDone gives the socket up: it clears txBusy and wakes a flush waiting
// for the writer to finish. Called with e.mu held.
func (e *endpoint) txDone() {
	e.life.releaseTx()
	e.txIdle.Broadcast()
}

// txDoneLocked marks the send-queue entries of a written batch done and
// delivers their completions. Only now may the caller reuse the buffers.
func (e *endpoint) txDoneLocked(b *txBatch) {
	for i := b.sqFrom; i < b.sqTo; i++ {
		s := &e.sq[i%uint64(len(e.sq))]
		if s.wr.Op != rdma.OpRead {
			s.done = true
		}
	}
	b.sqFrom, b.sqTo = 0, 0
	e.completeSQLocked(false)
}

// inlineMax bounds the bytes PostSend writes itself (the requests it
// found pending, a batch posted with More included).
const inlineMax = 256 << 10

// tryInlineLocked writes the request just posted from the caller's
// goroutine when the transmit path is idle: for small messages this saves
// a goroutine hand-off per message, which is most of the latency. The
// receive path calls it too, for the RDMA Read Response it just queued. The
// write is non-blocking; what the socket does not take goes to txLoop.
// Called with e.mu held; returns with it held.
func (e *endpoint) tryInlineLocked() bool {
	if e.life.txBusy || e.life.txHold || e.term != nil || e.life.closing || e.raw == nil || !e.txb.empty() {
		return false
	}
	total := 0
	for i := e.irqHead; i < e.irqTail; i++ {
		r := &e.irq[i%uint64(len(e.irq))]
		total += len(r.src) - r.sent
	}
	if total > inlineMax {
		return false
	}
	for i := e.sqTx; i < e.sqTail; i++ {
		s := &e.sq[i%uint64(len(e.sq))]
		total += len(s.data)
		if s.wr.File != nil || total > inlineMax {
			return false
		}
	}
	b := e.txb
	e.buildResponses(b)
	e.buildSends(b)
	b.seal()
	if len(b.iov) == 0 {
		e.txDoneLocked(b) // e.g. a local invalidate
		return true
	}
	e.life.takeTx() // checked free above
	e.mu.Unlock()
	n, err := e.raw.writev(b.iov)
	e.mu.Lock()
	e.txDone()
	if err != nil {
		b.iov = b.iov[:0]
		e.mu.Unlock()
		e.end(fmt.Errorf("iwarp: send: %w", err))
		e.mu.Lock()
		return true
	}
	b.consume(n)
	if len(b.iov) == 0 {
		b.arena = b.arena[:0]
		b.runStart, b.bytes = 0, 0
		e.txDoneLocked(b)
	}
	if len(b.iov) > 0 || e.sqTx != e.sqTail || e.irqHead != e.irqTail || e.term != nil || e.life.closing || e.life.state >= stEnding {
		// The rest, or work posted or arrived meanwhile, is the
		// transmit loop's. Waking it for nothing would cost a goroutine
		// wake-up per message.
		e.kickTxLocked()
	}
	return true
}

// buildResponses adds RDMA Read Response segments to the batch. Responses
// are released from the IRD queue only once fully in the batch.
func (e *endpoint) buildResponses(b *txBatch) {
	for e.irqHead < e.irqTail && !b.full() {
		r := &e.irq[e.irqHead%uint64(len(e.irq))]
		for !b.full() {
			n := min(len(r.src)-r.sent, e.segT)
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
				break
			}
		}
	}
}

// buildSends adds send-queue work to the batch, in order. It stops at a
// file-sourced request (returned, sent by the caller outside the batch)
// and at a Read beyond the ORD.
func (e *endpoint) buildSends(b *txBatch) *sqEntry {
	for e.sqTx < e.sqTail && !b.full() {
		s := &e.sq[e.sqTx%uint64(len(e.sq))]
		switch s.wr.Op {
		case rdma.OpSend, rdma.OpSendInvalidate:
			if s.wr.File != nil {
				if !b.empty() {
					return nil // send the batch first
				}
				e.sqTx++
				return s
			}
			op := sendOpcode(&s.wr)
			inv := uint32(s.wr.InvalidateSTag)
			msn := e.sendMSN
			for {
				n := min(len(s.data)-s.sent, e.segU)
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
					return nil
				}
			}
			e.sendMSN++
		case rdma.OpWrite:
			if s.wr.File != nil {
				if !b.empty() {
					return nil
				}
				e.sqTx++
				return s
			}
			stag := uint32(s.wr.RemoteSTag)
			for {
				n := min(len(s.data)-s.sent, e.segT)
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
					return nil
				}
			}
		case rdma.OpRead:
			if len(e.orq) == e.ord {
				return nil // ORD reached: wait for a response
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
		if b.sqFrom == b.sqTo {
			b.sqFrom = e.sqTx
		}
		e.sqTx++
		b.sqTo = e.sqTx
	}
	return nil
}

// completeSQLocked delivers completions in posting order, as verbs do.
// rx: called on the receive path.
func (e *endpoint) completeSQLocked(rx bool) {
	for e.sqHead < e.sqTx {
		s := &e.sq[e.sqHead%uint64(len(e.sq))]
		if !s.done {
			return
		}
		var c rdma.Completion
		if s.err != nil {
			c = rdma.Completion{ID: s.wr.ID, Op: s.wr.Op, Err: &rdma.WorkError{Op: s.wr.Op, ID: s.wr.ID, Err: s.err}}
		} else if !s.wr.Unsignaled {
			c = rdma.Completion{ID: s.wr.ID, Op: s.wr.Op, Bytes: s.sent}
		}
		*s = sqEntry{}
		e.sqHead++
		switch {
		case c.Op == 0:
		case rx:
			e.cq.pushRx(c)
		default:
			e.cq.push(c)
		}
	}
}

// sendTerminate writes a Terminate and half-closes the stream. The receive
// loop drains the peer until it closes.
func (e *endpoint) sendTerminate(b *txBatch, conn net.Conn, t *termOut) {
	conn.SetWriteDeadline(time.Now().Add(time.Second))
	// Finish an FPDU the inline path left half written, or the peer would
	// read the Terminate as part of it.
	b.flush(conn)
	b.segment(func(a []byte) []byte { return wire.AppendTerminate(a, &t.t) }, nil)
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
