package iwarp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/smbdirect/smbdirect/iwarp/internal/wire"
	"github.com/smbdirect/smbdirect/rdma"
)

// mpaRevision is what we send: revision 2 with the enhanced setup, as
// Linux siw and current iWARP adapters do.
const mpaRevision = 2

func clampIRDORD(v, def int) int {
	if v <= 0 {
		v = def
	}
	return min(v, maxIRDORD)
}

// handshakeDeadline arms conn with ctx's deadline or, when ctx has none,
// the handshake timeout, and cancels the I/O if ctx ends. A caller's
// deadline wins either way: a longer one is the caller asking to wait
// longer for a slow peer. The returned func disarms it.
func handshakeDeadline(ctx context.Context, conn net.Conn, timeout time.Duration) func() {
	dl, ok := ctx.Deadline()
	if !ok {
		dl = time.Now().Add(timeout)
	}
	conn.SetDeadline(dl)
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	return func() { stop() }
}

func appendPrivate(b []byte, v2 bool, ird, ord int, pd []byte) []byte {
	if v2 {
		b = wire.AppendMPAv2(b, wire.MPAv2{IRD: uint16(ird), ORD: uint16(ord)})
	}
	return append(b, pd...)
}

// Connect sets up the TCP connection and runs the MPA exchange as initiator.
func (e *endpoint) Connect(ctx context.Context, addr string, p rdma.ConnParams) error {
	if len(p.PrivateData) > rdma.MaxPrivateData {
		return fmt.Errorf("%w: %d bytes of private data, at most %d", rdma.ErrInvalidArgument, len(p.PrivateData), rdma.MaxPrivateData)
	}
	e.mu.Lock()
	err := e.life.beginConnect()
	e.mu.Unlock()
	if err != nil {
		return err
	}
	err = e.connect(ctx, addr, p)
	if err != nil {
		e.mu.Lock()
		e.life.connectFailed()
		e.mu.Unlock()
	}
	return err
}

func (e *endpoint) connect(ctx context.Context, addr string, p rdma.ConnParams) error {
	conn, err := e.pcfg.Dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	disarm := handshakeDeadline(ctx, conn, e.pcfg.HandshakeTimeout)
	defer disarm()
	ird, ord := clampIRDORD(p.IRD, defaultIRD), clampIRDORD(p.ORD, defaultORD)
	req := wire.MPAFrame{CRC: e.pcfg.CRC, Enhanced: true, Revision: mpaRevision, PrivateDataLen: wire.MPAv2Len + len(p.PrivateData)}
	if !e.pcfg.NoLargeFPDU {
		req.Other = mpaLarge
	}
	b := wire.AppendMPAFrame(make([]byte, 0, wire.MPAHeaderLen+req.PrivateDataLen), &req)
	b = appendPrivate(b, true, ird, ord, p.PrivateData)
	if _, err := conn.Write(b); err != nil {
		conn.Close()
		return fmt.Errorf("iwarp: sending MPA request: %w", err)
	}
	var hb [wire.MPAHeaderLen]byte
	if _, err := io.ReadFull(conn, hb[:]); err != nil {
		conn.Close()
		return fmt.Errorf("iwarp: reading MPA reply from %s: %w", addr, ctxErr(ctx, err))
	}
	rep, err := wire.ParseMPAFrame(hb[:], true)
	if err != nil {
		conn.Close()
		return fmt.Errorf("%w: MPA reply from %s: %v", rdma.ErrProtocol, addr, err)
	}
	pdata := make([]byte, rep.PrivateDataLen)
	if _, err := io.ReadFull(conn, pdata); err != nil {
		conn.Close()
		return fmt.Errorf("iwarp: reading MPA reply private data: %w", ctxErr(ctx, err))
	}
	if rep.Reject {
		conn.Close()
		if rep.Revision == 2 && rep.Enhanced && len(pdata) >= wire.MPAv2Len {
			pdata = pdata[wire.MPAv2Len:]
		}
		return &rdma.RejectError{PrivateData: pdata}
	}
	if rep.Markers {
		conn.Close()
		return fmt.Errorf("%w: peer %s requires MPA markers", rdma.ErrNotSupported, addr)
	}
	if rep.Revision != 1 && rep.Revision != 2 {
		conn.Close()
		return fmt.Errorf("%w: peer %s answered with MPA revision %d", rdma.ErrProtocol, addr, rep.Revision)
	}
	if rep.Revision == 2 && rep.Enhanced {
		v2, err := wire.ParseMPAv2(pdata)
		if err != nil {
			conn.Close()
			return fmt.Errorf("%w: enhanced MPA reply without IRD/ORD", rdma.ErrProtocol)
		}
		pdata = pdata[wire.MPAv2Len:]
		// The responder's IRD bounds our ORD; honour a larger responder ORD
		// up to our hard limit rather than failing (relaxed negotiation).
		ord = min(ord, int(v2.IRD))
		ird = min(max(ird, int(v2.ORD)), maxIRDORD)
	}
	crc := req.CRC || rep.CRC
	// Only our responders add the second bit; siw echoes the first.
	large := req.Other&mpaLarge != 0 && rep.Other&(mpaLarge|mpaLargeAck) == mpaLarge|mpaLargeAck
	disarm()
	conn.SetDeadline(time.Time{})
	if !e.start(conn, crc, large, ird, ord, e.connInfo(conn, crc, ird, ord, pdata), false) {
		return rdma.ErrClosed
	}
	return nil
}

func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	// The conn deadline is ctx's own and may fire before ctx's timer does.
	if dl, ok := ctx.Deadline(); ok && errors.Is(err, os.ErrDeadlineExceeded) && !time.Now().Before(dl) {
		return context.DeadlineExceeded
	}
	return err
}

func (e *endpoint) connInfo(conn net.Conn, crc bool, ird, ord int, pdata []byte) rdma.ConnInfo {
	return rdma.ConnInfo{
		LocalAddr: conn.LocalAddr(), RemoteAddr: conn.RemoteAddr(),
		ORD: ord, IRD: ird, CRC: crc, PrivateData: pdata,
		Provider: "iwarp",
		Detail:   fmt.Sprintf("MPA rev 2, CRC %v, markers off", crc),
	}
}

// Listen accepts MPA connection requests on a TCP address.
func (d *pd) Listen(ctx context.Context, addr string, cfg rdma.ListenConfig) (rdma.Listener, error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if cfg.Backlog <= 0 {
		cfg.Backlog = 16
	}
	l := &listener{pd: d, ln: ln, reqs: make(chan *connRequest, cfg.Backlog), closed: make(chan struct{})}
	l.wg.Add(1)
	go l.acceptLoop()
	return l, nil
}

type listener struct {
	pd     *pd
	ln     net.Listener
	reqs   chan *connRequest
	closed chan struct{}
	once   sync.Once
	wg     sync.WaitGroup
}

func (l *listener) Addr() net.Addr { return l.ln.Addr() }

func (l *listener) Close() error {
	l.once.Do(func() {
		close(l.closed)
		l.ln.Close()
	})
	l.wg.Wait()
	// Refuse the requests nobody accepted.
	for {
		select {
		case r := <-l.reqs:
			r.conn.Close()
		default:
			return nil
		}
	}
}

func (l *listener) Accept(ctx context.Context) (rdma.ConnRequest, error) {
	select {
	case r := <-l.reqs:
		return r, nil
	case <-l.closed:
		return nil, rdma.ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (l *listener) acceptLoop() {
	defer l.wg.Done()
	log := l.pd.p.cfg.Logger
	for {
		conn, err := l.ln.Accept()
		if err != nil {
			select {
			case <-l.closed:
				return
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			log.Warn("iwarp: accept", "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			r, err := l.readRequest(conn)
			if err != nil {
				log.Info("iwarp: refused connection", "remote", conn.RemoteAddr(), "err", err)
				conn.Close()
				return
			}
			select {
			case l.reqs <- r:
			case <-l.closed:
				conn.Close()
			default:
				log.Warn("iwarp: backlog full, rejecting", "remote", conn.RemoteAddr())
				r.Reject(nil)
			}
		}()
	}
}

// readRequest reads and checks an MPA request. Requests we cannot serve
// get an MPA reply with the Reject bit, so the initiator learns why.
func (l *listener) readRequest(conn net.Conn) (*connRequest, error) {
	cfg := &l.pd.p.cfg
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-l.closed:
			cancel()
		case <-ctx.Done():
		}
	}()
	disarm := handshakeDeadline(ctx, conn, cfg.HandshakeTimeout)
	defer func() {
		disarm()
		conn.SetDeadline(time.Time{})
	}()
	var hb [wire.MPAHeaderLen]byte
	if _, err := io.ReadFull(conn, hb[:]); err != nil {
		return nil, fmt.Errorf("reading MPA request: %w", err)
	}
	req, err := wire.ParseMPAFrame(hb[:], false)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", rdma.ErrProtocol, err)
	}
	pdata := make([]byte, req.PrivateDataLen)
	if _, err := io.ReadFull(conn, pdata); err != nil {
		return nil, fmt.Errorf("reading MPA request private data: %w", err)
	}
	r := &connRequest{l: l, conn: conn, req: req, ird: defaultIRD, ord: defaultORD, pdata: pdata}
	if req.Revision == 2 && req.Enhanced {
		v2, err := wire.ParseMPAv2(pdata)
		if err != nil {
			r.Reject(nil)
			return nil, fmt.Errorf("%w: enhanced MPA request without IRD/ORD", rdma.ErrProtocol)
		}
		r.v2, r.v2ok = v2, true
		r.pdata = pdata[wire.MPAv2Len:]
		r.ird, r.ord = int(v2.IRD), int(v2.ORD)
	}
	if req.Revision != 1 && req.Revision != 2 {
		r.Reject(nil)
		return nil, fmt.Errorf("%w: MPA revision %d", rdma.ErrNotSupported, req.Revision)
	}
	if req.Markers {
		r.Reject(nil)
		return nil, fmt.Errorf("%w: peer asked for MPA markers", rdma.ErrNotSupported)
	}
	return r, nil
}

type connRequest struct {
	l        *listener
	conn     net.Conn
	req      wire.MPAFrame
	v2       wire.MPAv2
	v2ok     bool
	ird, ord int // the initiator's
	pdata    []byte
	once     sync.Once
	answered bool
}

func (r *connRequest) PrivateData() []byte  { return r.pdata }
func (r *connRequest) RemoteORD() int       { return r.ord }
func (r *connRequest) RemoteIRD() int       { return r.ird }
func (r *connRequest) RemoteAddr() net.Addr { return r.conn.RemoteAddr() }
func (r *connRequest) LocalAddr() net.Addr  { return r.conn.LocalAddr() }

func (r *connRequest) reply(reject, crc, large bool, ird, ord int, v2 wire.MPAv2, pd []byte) error {
	rep := wire.MPAFrame{Reply: true, Reject: reject, CRC: crc, Revision: r.req.Revision, Enhanced: r.v2ok}
	if large {
		rep.Other = mpaLarge | mpaLargeAck
	}
	rep.PrivateDataLen = len(pd)
	if r.v2ok {
		rep.PrivateDataLen += wire.MPAv2Len
	}
	b := wire.AppendMPAFrame(make([]byte, 0, wire.MPAHeaderLen+rep.PrivateDataLen), &rep)
	if r.v2ok {
		v2.IRD, v2.ORD = uint16(ird), uint16(ord)
		b = wire.AppendMPAv2(b, v2)
	}
	b = append(b, pd...)
	r.conn.SetWriteDeadline(time.Now().Add(r.l.pd.p.cfg.HandshakeTimeout))
	_, err := r.conn.Write(b)
	r.conn.SetWriteDeadline(time.Time{})
	return err
}

func (r *connRequest) Reject(pd []byte) error {
	err := rdma.ErrInvalidArgument
	r.once.Do(func() {
		if len(pd) > rdma.MaxPrivateData {
			pd = pd[:rdma.MaxPrivateData]
		}
		err = r.reply(true, false, false, 0, 0, wire.MPAv2{}, pd)
		r.conn.Close()
	})
	return err
}

func (r *connRequest) Accept(ctx context.Context, ep rdma.Endpoint, p rdma.ConnParams) error {
	e, ok := ep.(*endpoint)
	if !ok || e.pd != r.l.pd {
		return fmt.Errorf("%w: endpoint of another provider or PD", rdma.ErrInvalidArgument)
	}
	if len(p.PrivateData) > rdma.MaxPrivateData {
		return fmt.Errorf("%w: %d bytes of private data, at most %d", rdma.ErrInvalidArgument, len(p.PrivateData), rdma.MaxPrivateData)
	}
	e.mu.Lock()
	if err := e.life.beginConnect(); err != nil {
		e.mu.Unlock()
		return err
	}
	e.mu.Unlock()
	err := rdma.ErrInvalidArgument
	r.once.Do(func() {
		err = nil
		// Our IRD: what we offer, at least what the initiator wants to
		// read at once (cheap for us); our ORD: bounded by its IRD.
		ird := clampIRDORD(p.IRD, defaultIRD)
		ord := clampIRDORD(p.ORD, defaultORD)
		if r.v2ok {
			ird = min(max(ird, r.ord), maxIRDORD)
			ord = min(ord, r.ird)
		}
		crc := r.req.CRC || e.pcfg.CRC
		large := r.req.Other&mpaLarge != 0 && !e.pcfg.NoLargeFPDU
		var v2 wire.MPAv2
		if r.v2.P2P {
			// Peer-to-peer mode: we take a zero-length Write (or Read) as
			// the ready-to-receive message; our transmit stays held until
			// the initiator's first FPDU arrives anyway.
			v2.P2P = true
			if r.v2.WriteRTR || !r.v2.ReadRTR {
				v2.WriteRTR = true
			} else {
				v2.ReadRTR = true
			}
		}
		stop := context.AfterFunc(ctx, func() { r.conn.SetWriteDeadline(time.Unix(1, 0)) })
		err = r.reply(false, crc, large, ird, ord, v2, p.PrivateData)
		stop()
		if err != nil {
			r.conn.Close()
			err = fmt.Errorf("iwarp: sending MPA reply: %w", ctxErr(ctx, err))
			return
		}
		if !e.start(r.conn, crc, large, ird, ord, e.connInfo(r.conn, crc, ird, ord, r.pdata), true) {
			err = rdma.ErrClosed
		}
	})
	if err != nil {
		e.mu.Lock()
		e.life.connectFailed()
		e.mu.Unlock()
	}
	return err
}
