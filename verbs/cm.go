//go:build linux && cgo && verbs

package verbs

/*
#include <stdlib.h>
#include "cverbs.h"
*/
import "C"

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"unsafe"

	"github.com/smbdirect/smbdirect/rdma"
)

// cmChannel is an rdma_cm event channel with its descriptor in the
// netpoller. Each endpoint and listener has its own, so no event needs to
// be routed between them.
type cmChannel struct {
	ch *C.struct_rdma_event_channel
	w  *fdWaiter
	ev C.struct_vb_event // the event next() returns; one reader at a time
	rc C.int
}

func newCMChannel() (*cmChannel, error) {
	ch := C.rdma_create_event_channel()
	if ch == nil {
		return nil, fmt.Errorf("verbs: rdma_create_event_channel: %w (is rdma_ucm loaded, /dev/infiniband/rdma_cm there?)", rdma.ErrNotSupported)
	}
	w, err := newWaiter(ch.fd, "rdma_cm")
	if err != nil {
		C.rdma_destroy_event_channel(ch)
		return nil, err
	}
	return &cmChannel{ch: ch, w: w}, nil
}

func (c *cmChannel) try(uintptr) bool {
	c.rc = C.vb_get_event(c.ch, &c.ev)
	return c.rc != C.int(syscall.EAGAIN)
}

// next waits for the next event; the caller reads c.ev.
func (c *cmChannel) next(ctx context.Context) error {
	if err := c.w.wait(ctx, c.try); err != nil {
		return err
	}
	if c.rc != 0 {
		return fmt.Errorf("verbs: rdma_get_cm_event: %w", syscall.Errno(c.rc))
	}
	return nil
}

// await waits for an event of id, of type want; any other event of id is
// an error (rejected, unreachable, ...).
func (c *cmChannel) await(ctx context.Context, id *C.struct_rdma_cm_id, want C.int, what string, trim bool) error {
	for {
		if err := c.next(ctx); err != nil {
			return fmt.Errorf("verbs: waiting for %s: %w", what, err)
		}
		if c.ev.id != id {
			continue
		}
		if c.ev._type == want {
			return nil
		}
		return c.eventErr(what, trim)
	}
}

// privateData returns the event's private data. InfiniBand's CM (and so
// RoCE's) carries it in fixed-size fields with no length: the receiver
// gets the sender's bytes followed by zeros up to the field's size. With
// trim (IB/RoCE) those trailing zeros are cut, which returns what the
// sender sent unless it ended in zero bytes itself. iWARP's MPA carries
// the length, so its private data is exact.
func (c *cmChannel) privateData(trim bool) []byte {
	b := C.GoBytes(unsafe.Pointer(&c.ev.private_data[0]), C.int(c.ev.private_data_len))
	if trim {
		for len(b) > 0 && b[len(b)-1] == 0 {
			b = b[:len(b)-1]
		}
	}
	if len(b) == 0 {
		return nil
	}
	return b
}

func (c *cmChannel) eventErr(what string, trim bool) error {
	name := C.GoString(C.rdma_event_str(uint32(c.ev._type)))
	switch c.ev._type {
	case C.RDMA_CM_EVENT_REJECTED:
		return &rdma.RejectError{PrivateData: c.privateData(trim), Reason: fmt.Sprintf("%s (status %d)", name, c.ev.status)}
	case C.RDMA_CM_EVENT_UNREACHABLE, C.RDMA_CM_EVENT_ADDR_ERROR, C.RDMA_CM_EVENT_ROUTE_ERROR, C.RDMA_CM_EVENT_CONNECT_ERROR:
		st := syscall.Errno(-c.ev.status)
		if st == syscall.ECONNREFUSED {
			return &rdma.RejectError{Reason: "connection refused"}
		}
		return fmt.Errorf("%w: %s: %s (%v)", rdma.ErrDisconnected, what, name, st)
	case C.RDMA_CM_EVENT_DEVICE_REMOVAL:
		return fmt.Errorf("%w: %s: the RDMA device was removed", rdma.ErrDisconnected, what)
	case C.RDMA_CM_EVENT_DISCONNECTED:
		return fmt.Errorf("%w: %s: %s", rdma.ErrDisconnected, what, name)
	}
	return fmt.Errorf("%w: %s: unexpected %s (status %d)", rdma.ErrProtocol, what, name, c.ev.status)
}

func (c *cmChannel) close() {
	c.w.close()
	C.rdma_destroy_event_channel(c.ch)
}

func splitAddr(addr string) (host, port string, err error) {
	host, port, err = net.SplitHostPort(addr)
	if err != nil {
		return "", "", fmt.Errorf("%w: %v", rdma.ErrInvalidArgument, err)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return "", "", fmt.Errorf("%w: port %q", rdma.ErrInvalidArgument, port)
	}
	return host, port, nil
}

func idAddr(id *C.struct_rdma_cm_id, peer bool) net.Addr {
	var buf [80]C.char
	p := C.int(0)
	if peer {
		p = 1
	}
	if C.vb_addr(id, p, &buf[0], C.int(len(buf))) != 0 {
		return nil
	}
	ap, err := netip.ParseAddrPort(C.GoString(&buf[0]))
	if err != nil {
		return nil
	}
	return net.TCPAddrFromAddrPort(ap)
}

type listener struct {
	pd   *pd
	cm   *cmChannel
	id   *C.struct_rdma_cm_id
	addr net.Addr

	mu     sync.Mutex // one Accept at a time reads the channel
	closed chan struct{}
	once   sync.Once
}

func (d *pd) Listen(ctx context.Context, addr string, cfg rdma.ListenConfig) (rdma.Listener, error) {
	host, port, err := splitAddr(addr)
	if err != nil {
		return nil, err
	}
	cm, err := newCMChannel()
	if err != nil {
		return nil, err
	}
	l := &listener{pd: d, cm: cm, closed: make(chan struct{})}
	if C.rdma_create_id(cm.ch, &l.id, nil, C.RDMA_PS_TCP) != 0 {
		cm.close()
		return nil, fmt.Errorf("verbs: rdma_create_id: %w", rdma.ErrQueueFull)
	}
	ch, cp := C.CString(host), C.CString(port)
	defer C.free(unsafe.Pointer(ch))
	defer C.free(unsafe.Pointer(cp))
	if rc := C.vb_bind(l.id, ch, cp); rc != 0 {
		l.Close()
		return nil, fmt.Errorf("verbs: listen on %s: %w", addr, syscall.Errno(rc))
	}
	backlog := cfg.Backlog
	if backlog <= 0 {
		backlog = 16
	}
	if rc, err := C.rdma_listen(l.id, C.int(backlog)); rc != 0 {
		l.Close()
		return nil, fmt.Errorf("verbs: rdma_listen on %s: %w", addr, errnoErr(err))
	}
	l.addr = idAddr(l.id, false)
	return l, nil
}

func (l *listener) Addr() net.Addr { return l.addr }

func (l *listener) Accept(ctx context.Context) (rdma.ConnRequest, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for {
		select {
		case <-l.closed:
			return nil, rdma.ErrClosed
		default:
		}
		if err := l.cm.next(ctx); err != nil {
			return nil, err
		}
		ev := &l.cm.ev
		switch ev._type {
		case C.RDMA_CM_EVENT_CONNECT_REQUEST:
			// The CM reports the values from the receiver's side: the
			// initiator's ORD is what we are to take as responder
			// resources, its IRD our initiator depth.
			r := &connReq{l: l, id: ev.id, pdata: l.cm.privateData(!l.pd.iwarp), ord: int(ev.responder_resources), ird: int(ev.initiator_depth)}
			r.remote, r.local = idAddr(ev.id, true), idAddr(ev.id, false)
			if ev.id.verbs != l.pd.ctx {
				// The request came in on another device than the PD's:
				// its queue pair could not use the PD's regions.
				r.Reject(nil)
				continue
			}
			return r, nil
		case C.RDMA_CM_EVENT_DEVICE_REMOVAL:
			if ev.id == l.id {
				return nil, fmt.Errorf("%w: the RDMA device %s was removed", rdma.ErrClosed, l.pd.name)
			}
		}
		// Events of requests not accepted yet (a peer that gave up) need
		// nothing: their ids are destroyed by Accept or Reject.
	}
}

func (l *listener) Close() error {
	l.once.Do(func() {
		close(l.closed)
		// Wakes an Accept; the lock then waits for it to leave.
		l.cm.w.close()
		l.mu.Lock()
		C.rdma_destroy_id(l.id)
		C.rdma_destroy_event_channel(l.cm.ch)
		l.mu.Unlock()
	})
	return nil
}

type connReq struct {
	l             *listener
	id            *C.struct_rdma_cm_id
	pdata         []byte
	ord, ird      int
	remote, local net.Addr
	done          bool
}

func (r *connReq) PrivateData() []byte  { return r.pdata }
func (r *connReq) RemoteORD() int       { return r.ord }
func (r *connReq) RemoteIRD() int       { return r.ird }
func (r *connReq) RemoteAddr() net.Addr { return r.remote }
func (r *connReq) LocalAddr() net.Addr  { return r.local }

func (r *connReq) Reject(privateData []byte) error {
	if r.done {
		return fmt.Errorf("%w: request already answered", rdma.ErrInvalidArgument)
	}
	if len(privateData) > rdma.MaxPrivateData {
		return fmt.Errorf("%w: %d bytes of private data", rdma.ErrInvalidArgument, len(privateData))
	}
	r.done = true
	var p unsafe.Pointer
	if len(privateData) > 0 {
		p = C.CBytes(privateData)
		defer C.free(p)
	}
	rc, err := C.rdma_reject(r.id, p, C.uint8_t(len(privateData)))
	C.rdma_destroy_id(r.id)
	if rc != 0 {
		return fmt.Errorf("verbs: rdma_reject: %w", errnoErr(err))
	}
	return nil
}

func (r *connReq) Accept(ctx context.Context, ep rdma.Endpoint, params rdma.ConnParams) error {
	e, ok := ep.(*endpoint)
	if !ok || e.pd != r.l.pd {
		return fmt.Errorf("%w: endpoint of another provider or PD", rdma.ErrInvalidArgument)
	}
	if r.done {
		return fmt.Errorf("%w: request already answered", rdma.ErrInvalidArgument)
	}
	if len(params.PrivateData) > rdma.MaxPrivateData {
		return fmt.Errorf("%w: %d bytes of private data", rdma.ErrInvalidArgument, len(params.PrivateData))
	}
	r.done = true
	// From here the id's events go to the endpoint's channel.
	if rc, err := C.rdma_migrate_id(r.id, e.cm.ch); rc != 0 {
		C.rdma_reject(r.id, nil, 0)
		C.rdma_destroy_id(r.id)
		return fmt.Errorf("verbs: rdma_migrate_id: %w", errnoErr(err))
	}
	// As in MPA v2 (RFC 6581): the responder takes at least the
	// initiator's ORD as its IRD, and reads at most as many at once as
	// the initiator's IRD allows.
	ird, ord := e.pd.clamp(params)
	ird = min(max(ird, r.ord), e.pd.maxIRD, 255)
	ord = min(ord, r.ird)
	return e.establish(ctx, r.id, true, params.PrivateData, ird, ord, slices.Clone(r.pdata))
}

// clamp applies the defaults and the device's limits to IRD and ORD.
func (d *pd) clamp(p rdma.ConnParams) (ird, ord int) {
	ird, ord = p.IRD, p.ORD
	if ird <= 0 {
		ird = 16
	}
	if ord <= 0 {
		ord = 16
	}
	return min(ird, d.maxIRD, 255), min(ord, d.maxORD, 255)
}
