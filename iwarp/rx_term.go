package iwarp

import (
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/smbdirect/smbdirect/iwarp/internal/wire"
	"github.com/smbdirect/smbdirect/rdma"
)

// protoErr is a violation the receiver answers with a Terminate.
type protoErr struct {
	layer, typ, code uint8
	msg              string
	hdr              []byte // offending segment's MPA length and header, for the Terminate
}

func (p *protoErr) Error() string { return p.msg }

func perr(layer, typ, code uint8, format string, args ...any) *protoErr {
	return &protoErr{layer: layer, typ: typ, code: code, msg: fmt.Sprintf(format, args...)}
}

// rxFinish winds the receive path up once rxStep ended with err: it reads
// the rest of a Terminate, answers a protocol error with one, and records
// why the connection ended. It runs outside any read callback, and its
// reads block.
func (e *endpoint) rxFinish(x *rxReader, st *rxState, f *rxFPDU, err error) {
	x.nonblock = false
	if err == errTermReceived {
		e.recvTerminate(x, st.termLen, f.hdr[:f.hdrLen])
	}
	if st.curOK {
		// A Send was being received when the stream ended: its receive
		// buffer was taken from the queue, so flush it here.
		id := st.curEnt.wr.ID
		e.cq.push(rdma.Completion{ID: id, Op: rdma.OpRecv, Err: &rdma.WorkError{Op: rdma.OpRecv, ID: id, Err: rdma.ErrFlushed}})
		st.curOK = false
	}
	var pe *protoErr
	if errors.As(err, &pe) {
		e.terminate(x, pe)
		return
	}
	e.mu.Lock()
	closing := e.life.closing
	e.mu.Unlock()
	switch {
	case err == errTermReceived:
		return // end already recorded
	case errors.Is(err, io.EOF):
		if closing {
			e.end(rdma.ErrClosed)
		} else {
			e.end(rdma.ErrDisconnected)
		}
	case errors.Is(err, net.ErrClosed):
		e.end(rdma.ErrClosed)
	default:
		e.end(fmt.Errorf("%w: %w", rdma.ErrDisconnected, err))
	}
}

var errTermReceived = errors.New("terminate received")

// terminate reports a protocol violation to the peer, then waits (bounded)
// for it to close, discarding whatever else it sends.
func (e *endpoint) terminate(x *rxReader, pe *protoErr) {
	te := &TerminateError{Layer: pe.layer, Type: pe.typ, Code: pe.code, Reason: pe.msg}
	e.log.Warn("iwarp: peer protocol error, terminating", "err", te)
	t := &termOut{}
	t.t = wire.Terminate{MSN: 1, Layer: pe.layer, Type: pe.typ, Code: pe.code}
	// The terminated headers start with the DDP segment length where the
	// MPA length stood (RFC 5040 4.8): the MPA ULPDU is the DDP segment.
	n := t.t.TerminatedLen(pe.hdr)
	t.t.Terminated = t.hdr[:copy(t.hdr[:], pe.hdr[:n])]
	e.mu.Lock()
	if e.err == nil {
		e.err = te
	}
	if e.life.state == stConnected {
		e.term = t
	}
	e.mu.Unlock()
	e.kickTx()
	x.conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	for x.skip(rxBufSize) == nil {
	}
	e.end(te)
}

// recvTerminate reads the peer's Terminate and ends the connection.
func (e *endpoint) recvTerminate(x *rxReader, n int, raw []byte) {
	body := n
	if body > 256 {
		body = 256 // keep what we need; the rest is of no use
	}
	msg := make([]byte, 0, len(raw)+body)
	msg = append(msg, raw[wire.MPALenSize:]...)
	if err := x.need(body); err == nil {
		msg = append(msg, x.buf[x.r:x.r+body]...)
	}
	te := &TerminateError{Received: true, Layer: wire.LayerRDMAP, Type: wire.RDMAPTypeCatastrophic, Code: wire.RDMAPCodeUnspecified}
	if t, err := wire.ParseTerminate(msg); err == nil {
		te.Layer, te.Type, te.Code = t.Layer, t.Type, t.Code
	} else {
		te.Reason = "unparsable Terminate: " + err.Error()
	}
	e.log.Info("iwarp: peer terminated the connection", "err", te)
	// The oldest outstanding Read learns why; the rest is flushed.
	e.mu.Lock()
	if len(e.orq) > 0 {
		e.sq[e.orq[0]%uint64(len(e.sq))].err = te
	}
	e.mu.Unlock()
	e.end(te)
}
