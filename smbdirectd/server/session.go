//go:build linux

package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/smbdirect/smbdirect/internal/ctl"
	"github.com/smbdirect/smbdirect/smbd"
)

// maxControl is the largest control datagram taken (a Send carries one
// SMB2 PDU, such as a READ response, of up to 64 KiB).
const maxControl = ctl.HeaderLen + 12 + 64<<10

// maxFDs is the most descriptors taken with one message; extra ones are
// closed.
const maxFDs = 4

// client is one control connection: a process using the daemon.
type client struct {
	s    *Server
	uc   *net.UnixConn
	cred *unix.Ucred
	log  interface {
		Info(string, ...any)
		Warn(string, ...any)
		Debug(string, ...any)
	}

	wmu sync.Mutex // one reply datagram at a time

	mu        sync.Mutex
	conns     map[uint64]*dconn
	regs      map[uint64]*registration
	listeners map[uint64]*smbd.Listener
	regBytes  int64
	// pendingConns are connections being dialed or handed over, counted
	// against the limit.
	pendingConns int
	ctx          context.Context
	cancel       context.CancelFunc
	work         sync.WaitGroup
}

type registration struct {
	buf  *smbd.Buffer
	size int64
}

func newClient(s *Server, uc *net.UnixConn, cred *unix.Ucred) *client {
	c := &client{s: s, uc: uc, cred: cred, conns: map[uint64]*dconn{}, regs: map[uint64]*registration{}, listeners: map[uint64]*smbd.Listener{}}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.log = s.log.With("client_pid", cred.Pid, "client_uid", cred.Uid)
	return c
}

// serve reads requests until the client goes, then releases what it held:
// registrations and listeners. Its connections live on while their stream
// fd is open somewhere (a forked child may hold it).
func (c *client) serve() {
	c.log.Info("smbdirectd: client connected")
	buf := make([]byte, maxControl)
	oob := make([]byte, unix.CmsgSpace(maxFDs*4))
	for {
		n, oobn, flags, _, err := c.uc.ReadMsgUnix(buf, oob)
		if err != nil || n == 0 {
			break
		}
		fds := parseFDs(oob[:oobn])
		if flags&(unix.MSG_TRUNC|unix.MSG_CTRUNC) != 0 {
			closeFDs(fds)
			c.fail(0, ctl.CodeInvalid, "message or descriptors truncated (limit %d bytes, %d fds)", maxControl, maxFDs)
			continue
		}
		c.handle(buf[:n], fds)
	}
	c.release()
	c.log.Info("smbdirectd: client gone")
}

// shutdown ends the session at once (daemon stopping); serve then
// releases what it held.
func (c *client) shutdown() { c.uc.Close() }

func (c *client) release() {
	c.cancel()
	c.work.Wait()
	c.mu.Lock()
	for id, r := range c.regs {
		r.buf.Close()
		c.s.registered.Add(-r.size)
		delete(c.regs, id)
	}
	c.regBytes = 0
	for id, l := range c.listeners {
		l.Close()
		delete(c.listeners, id)
	}
	c.mu.Unlock()
	c.uc.Close()
}

func parseFDs(oob []byte) []int {
	if len(oob) == 0 {
		return nil
	}
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil
	}
	var fds []int
	for _, m := range msgs {
		if f, err := unix.ParseUnixRights(&m); err == nil {
			fds = append(fds, f...)
		}
	}
	return fds
}

func closeFDs(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// reply sends one datagram, with fds if any.
func (c *client) reply(b []byte, fds ...int) error {
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_, _, err := c.uc.WriteMsgUnix(b, oob, nil)
	return err
}

func (c *client) fail(id uint64, code uint32, format string, args ...any) {
	c.s.errs.Add(1)
	msg := fmt.Sprintf(format, args...)
	c.log.Debug("smbdirectd: request failed", "id", id, "code", code, "err", msg)
	c.reply(ctl.AppendError(nil, id, &ctl.Error{Code: code, Message: msg}))
}

func (c *client) ok(id uint64, v uint64) { c.reply(ctl.AppendOK(nil, id, &ctl.OK{Value: v})) }

// handle dispatches one request. fds it does not take are closed.
func (c *client) handle(msg []byte, fds []int) {
	h, body, err := ctl.ParseHeader(msg)
	if err != nil {
		closeFDs(fds)
		c.fail(h.ID, ctl.CodeInvalid, "%v", err)
		return
	}
	needFD := h.Type == ctl.TypeRegister || h.Type == ctl.TypeRDMAWrite || h.Type == ctl.TypeRDMARead
	if (needFD && len(fds) != 1) || (!needFD && len(fds) != 0) {
		closeFDs(fds)
		c.fail(h.ID, ctl.CodeInvalid, "message type %#x with %d file descriptors", h.Type, len(fds))
		return
	}
	switch h.Type {
	case ctl.TypeHello:
		m, err := ctl.ParseHello(body)
		if err != nil || m.Min > ctl.Version || m.Max < ctl.Version {
			c.fail(h.ID, ctl.CodeInvalid, "no common protocol version (client %d-%d, daemon %d): %v", m.Min, m.Max, ctl.Version, err)
			return
		}
		c.reply(ctl.AppendHelloOK(nil, h.ID, &ctl.HelloOK{Version: ctl.Version, Daemon: "smbdirectd"}))
	case ctl.TypeDial:
		m, err := ctl.ParseDial(body)
		if err != nil {
			c.fail(h.ID, ctl.CodeInvalid, "%v", err)
			return
		}
		c.async(func() { c.dial(h.ID, m) })
	case ctl.TypeListen:
		m, err := ctl.ParseListen(body)
		if err != nil {
			c.fail(h.ID, ctl.CodeInvalid, "%v", err)
			return
		}
		c.listen(h.ID, m)
	case ctl.TypeClose:
		m, err := ctl.ParseClose(body)
		if err != nil {
			c.fail(h.ID, ctl.CodeInvalid, "%v", err)
			return
		}
		c.closeHandle(h.ID, m.Handle)
	case ctl.TypeSend:
		m, err := ctl.ParseSend(body)
		if err != nil {
			c.fail(h.ID, ctl.CodeInvalid, "%v", err)
			return
		}
		d := c.conn(m.Conn)
		if d == nil {
			c.fail(h.ID, ctl.CodeNotFound, "no connection %d", m.Conn)
			return
		}
		pdu := append([]byte(nil), m.PDU...)
		c.async(func() {
			var err error
			d.pdu.Lock() // between the stream's PDUs
			if m.Invalidate != 0 {
				err = d.c.WriteMessageInvalidate(pdu, m.Invalidate)
			} else {
				err = d.c.WriteMessage(pdu)
			}
			d.pdu.Unlock()
			if err != nil {
				c.fail(h.ID, codeOf(err), "send: %v", err)
				return
			}
			c.s.sent.Add(int64(len(pdu)))
			c.ok(h.ID, uint64(len(pdu)))
		})
	case ctl.TypeRegister:
		m, err := ctl.ParseRegister(body)
		if err != nil {
			unix.Close(fds[0])
			c.fail(h.ID, ctl.CodeInvalid, "%v", err)
			return
		}
		c.register(h.ID, m, fds[0])
	case ctl.TypeDeregister:
		m, err := ctl.ParseDeregister(body)
		if err != nil {
			c.fail(h.ID, ctl.CodeInvalid, "%v", err)
			return
		}
		c.mu.Lock()
		r := c.regs[m.Reg]
		delete(c.regs, m.Reg)
		if r != nil {
			c.regBytes -= r.size
		}
		c.mu.Unlock()
		if r == nil {
			c.fail(h.ID, ctl.CodeNotFound, "no registration %d", m.Reg)
			return
		}
		// The reply says whether the peer had invalidated it (Send with
		// Invalidate) before it was revoked here.
		var byPeer uint64
		if !r.buf.Valid() {
			byPeer = 1
		}
		r.buf.Close()
		c.s.registered.Add(-r.size)
		c.ok(h.ID, byPeer)
	case ctl.TypeRDMAWrite, ctl.TypeRDMARead:
		m, err := ctl.ParseTransfer(body, nil)
		if err != nil {
			unix.Close(fds[0])
			c.fail(h.ID, ctl.CodeInvalid, "%v", err)
			return
		}
		c.transfer(h.ID, h.Type, m, fds[0])
	default:
		closeFDs(fds)
		c.fail(h.ID, ctl.CodeInvalid, "unknown message type %#x", h.Type)
	}
}

// async runs f on its own goroutine, tracked so release waits for it.
func (c *client) async(f func()) {
	c.work.Add(1)
	go func() {
		defer c.work.Done()
		f()
	}()
}

func (c *client) conn(id uint64) *dconn {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.conns[id]
}

func (c *client) dial(id uint64, m ctl.Dial) {
	if m.Flags&^ctl.DialClientChannel != 0 {
		c.fail(id, ctl.CodeInvalid, "dial: unknown flags %#x", m.Flags&^ctl.DialClientChannel)
		return
	}
	if !c.reserveConn() {
		c.fail(id, ctl.CodeLimit, "at most %d connections per client", c.s.cfg.MaxConnsPerClient)
		return
	}
	timeout := c.s.cfg.DialTimeout
	if m.TimeoutMS > 0 {
		timeout = time.Duration(m.TimeoutMS) * time.Millisecond
	}
	ctx, cancel := context.WithTimeout(c.ctx, timeout)
	defer cancel()
	cfg := *c.s.cfg.SMBD
	sc, err := smbd.Dial(ctx, m.Addr, &cfg)
	if err != nil {
		c.unreserveConn()
		c.fail(id, dialCode(err), "%v", err)
		return
	}
	ch := noChannel
	if m.Flags&ctl.DialClientChannel != 0 {
		ch = clientChannel
	}
	c.hand(id, 0, sc, ch)
}

// hand wraps an SMB Direct connection in a socketpair and sends the
// client its end.
func (c *client) hand(id, listener uint64, sc *smbd.Conn, ch channelKind) {
	d, fd, err := newDconn(c, sc, ch)
	if err != nil {
		c.unreserveConn()
		sc.Close()
		c.fail(id, ctl.CodeIO, "socketpair: %v", err)
		return
	}
	info := sc.Info()
	msg := ctl.AppendConn(nil, id, &ctl.Conn{Conn: d.id, Listener: listener, MaxSendSize: uint32(info.MaxSendSize),
		MaxFragmentedSend: uint32(info.MaxFragmentedSend), MaxFragmentedRecv: uint32(info.MaxFragmentedRecv),
		MaxReadWriteSize: uint32(info.MaxReadWriteSize), Remote: sc.RemoteAddr().String()})
	err = c.reply(msg, fd)
	unix.Close(fd)
	if err != nil {
		d.discard()
		return
	}
	d.start()
}

func (c *client) reserveConn() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.conns)+c.pendingConns >= c.s.cfg.MaxConnsPerClient {
		return false
	}
	c.pendingConns++
	return true
}

func (c *client) unreserveConn() {
	c.mu.Lock()
	c.pendingConns--
	c.mu.Unlock()
}

func (c *client) listen(id uint64, m ctl.Listen) {
	if m.Flags&^ctl.ListenServerChannel != 0 {
		c.fail(id, ctl.CodeInvalid, "listen: unknown flags %#x", m.Flags&^ctl.ListenServerChannel)
		return
	}
	cfg := *c.s.cfg.SMBD
	l, err := smbd.Listen(c.ctx, m.Addr, &cfg)
	if err != nil {
		c.fail(id, ctl.CodeInvalid, "listen: %v", err)
		return
	}
	lid := c.s.handles.Add(1)
	c.mu.Lock()
	c.listeners[lid] = l
	c.mu.Unlock()
	c.reply(ctl.AppendListening(nil, id, &ctl.Listening{Listener: lid, Addr: l.Addr().String()}))
	c.async(func() {
		for {
			sc, err := l.AcceptSMBD(c.ctx)
			if err != nil {
				return
			}
			if !c.reserveConn() {
				c.log.Warn("smbdirectd: connection limit reached, refusing", "remote", sc.RemoteAddr())
				sc.Close()
				continue
			}
			ch := noChannel
			if m.Flags&ctl.ListenServerChannel != 0 {
				ch = serverChannel
			}
			c.hand(id, lid, sc, ch)
		}
	})
}

func (c *client) closeHandle(id, h uint64) {
	c.mu.Lock()
	d := c.conns[h]
	l := c.listeners[h]
	delete(c.listeners, h)
	c.mu.Unlock()
	switch {
	case d != nil:
		d.close()
	case l != nil:
		l.Close()
	default:
		c.fail(id, ctl.CodeNotFound, "no connection or listener %d", h)
		return
	}
	c.ok(id, 0)
}

func (c *client) register(id uint64, m ctl.Register, fd int) {
	f := os.NewFile(uintptr(fd), "registered")
	defer f.Close() // the mapping outlives the descriptor
	d := c.conn(m.Conn)
	if d == nil {
		c.fail(id, ctl.CodeNotFound, "no connection %d", m.Conn)
		return
	}
	var access smbd.Access
	if m.Access&ctl.AccessPeerRead != 0 {
		access |= smbd.PeerRead
	}
	if m.Access&ctl.AccessPeerWrite != 0 {
		access |= smbd.PeerWrite
	}
	size := int64(m.Length)
	c.mu.Lock()
	if c.regBytes+size > c.s.cfg.MaxRegisteredPerClient {
		c.mu.Unlock()
		c.fail(id, ctl.CodeLimit, "at most %d registered bytes per client", c.s.cfg.MaxRegisteredPerClient)
		return
	}
	c.regBytes += size
	c.mu.Unlock()
	buf, err := d.c.RegisterFile(f, int64(m.Offset), int(m.Length), access)
	if err != nil {
		c.mu.Lock()
		c.regBytes -= size
		c.mu.Unlock()
		c.fail(id, codeOf(err), "register: %v", err)
		return
	}
	rid := c.s.handles.Add(1)
	c.mu.Lock()
	c.regs[rid] = &registration{buf: buf, size: size}
	c.mu.Unlock()
	c.s.registered.Add(size)
	dd := buf.Descriptor()
	c.reply(ctl.AppendRegistered(nil, id, &ctl.Registered{Reg: rid, Descriptor: ctl.Descriptor{Offset: dd.Offset, Token: dd.Token, Length: dd.Length}}))
}

func (c *client) transfer(id uint64, typ uint8, m ctl.Transfer, fd int) {
	f := os.NewFile(uintptr(fd), "transfer")
	d := c.conn(m.Conn)
	if d == nil {
		f.Close()
		c.fail(id, ctl.CodeNotFound, "no connection %d", m.Conn)
		return
	}
	descs := make([]smbd.BufferDescriptor, len(m.Descriptors))
	var total uint64
	for i, x := range m.Descriptors {
		descs[i] = smbd.BufferDescriptor{Offset: x.Offset, Token: x.Token, Length: x.Length}
		total += uint64(x.Length)
	}
	c.async(func() {
		defer f.Close()
		var err error
		if typ == ctl.TypeRDMAWrite {
			err = d.c.RDMAWriteFile(c.ctx, f, int64(m.FileOffset), descs)
		} else {
			err = d.c.RDMAReadFile(c.ctx, f, int64(m.FileOffset), descs)
		}
		if err != nil {
			c.fail(id, codeOf(err), "%v", err)
			return
		}
		if typ == ctl.TypeRDMAWrite {
			c.s.rdmaW.Add(int64(total))
		} else {
			c.s.rdmaR.Add(int64(total))
		}
		c.ok(id, total)
	})
}

func codeOf(err error) uint32 {
	switch {
	case errors.Is(err, smbd.ErrMessageTooLarge):
		return ctl.CodeTooLarge
	case errors.Is(err, smbd.ErrProtocol):
		return ctl.CodeInvalid
	case errors.Is(err, os.ErrPermission), errors.Is(err, unix.EACCES):
		return ctl.CodePermission
	}
	return ctl.CodeIO
}

// supplementaryGroups reads a process's groups from /proc.
func supplementaryGroups(pid int) []int {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return nil
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "Groups:"); ok {
			var gs []int
			for _, f := range strings.Fields(rest) {
				if g, err := strconv.Atoi(f); err == nil {
					gs = append(gs, g)
				}
			}
			return gs
		}
	}
	return nil
}
