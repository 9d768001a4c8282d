//go:build linux && cgo && verbs

package verbs

/*
#cgo LDFLAGS: -libverbs -lrdmacm
#include <stdlib.h>
#include "cverbs.h"
*/
import "C"

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/smbdirect/smbdirect/rdma"
)

// Built is true: this build has the verbs provider.
const Built = true

func init() {
	rdma.Register(Name, func(cfg rdma.ProviderConfig) rdma.Provider { return New(Config{Logger: cfg.Logger}) })
}

type provider struct {
	cfg Config
	log *slog.Logger
}

// New returns the verbs provider. Nothing is opened until NewPD.
func New(cfg Config) rdma.Provider {
	l := cfg.Logger
	if l == nil {
		l = slog.New(slog.DiscardHandler)
	}
	return &provider{cfg: cfg, log: l}
}

func (p *provider) Name() string { return Name }

// devices returns rdma_cm's device contexts: the ones a cm_id's verbs
// pointer is one of, so a PD opened on them serves rdma_cm's queue pairs.
func devices() ([]*C.struct_ibv_context, func(), error) {
	var n C.int
	list := C.rdma_get_devices(&n)
	if list == nil {
		return nil, nil, fmt.Errorf("verbs: rdma_get_devices: %w", errnoErr(syscall.ENODEV))
	}
	ctxs := unsafe.Slice(list, int(n))
	return ctxs, func() { C.rdma_free_devices(list) }, nil
}

// Devices returns the names of the RDMA devices rdma_cm knows.
func Devices() ([]string, error) {
	ctxs, free, err := devices()
	if err != nil {
		return nil, err
	}
	defer free()
	names := make([]string, len(ctxs))
	for i, c := range ctxs {
		names[i] = C.GoString(C.vb_dev_name(c))
	}
	return names, nil
}

// ErrNoDevice: no RDMA device matches the configuration.
var ErrNoDevice = errors.New("verbs: no such RDMA device")

func (p *provider) pickDevice() (*C.struct_ibv_context, error) {
	ctxs, free, err := devices()
	if err != nil {
		return nil, err
	}
	defer free()
	names := make([]string, len(ctxs))
	for i, c := range ctxs {
		names[i] = C.GoString(C.vb_dev_name(c))
	}
	want := p.cfg.Device
	if want == "" && p.cfg.Route != "" {
		if want, err = routeDevice(p.cfg.Route); err != nil {
			return nil, err
		}
	}
	if want == "" {
		if len(ctxs) == 1 {
			return ctxs[0], nil
		}
		return nil, fmt.Errorf("%w: %d devices (%s), name one with --device", ErrNoDevice, len(ctxs), strings.Join(names, ", "))
	}
	for i, n := range names {
		if n == want {
			return ctxs[i], nil
		}
	}
	return nil, fmt.Errorf("%w: %q (devices: %s)", ErrNoDevice, want, strings.Join(names, ", "))
}

// routeDevice asks rdma_cm which device owns addr (a local address) or
// carries the route to it (a remote one).
func routeDevice(addr string) (string, error) {
	host := addr
	if h, _, ok := strings.Cut(addr, ":"); ok && !strings.Contains(addr, "[") && strings.Count(addr, ":") == 1 {
		host = h
	}
	host = strings.Trim(host, "[]")
	var id *C.struct_rdma_cm_id
	// A NULL channel makes the id synchronous: resolve returns when done.
	if C.rdma_create_id(nil, &id, nil, C.RDMA_PS_TCP) != 0 {
		return "", fmt.Errorf("verbs: rdma_create_id: %w", errnoErr(syscall.ENOMEM))
	}
	defer C.rdma_destroy_id(id)
	ch, cp := C.CString(host), C.CString("0")
	defer C.free(unsafe.Pointer(ch))
	defer C.free(unsafe.Pointer(cp))
	if rc := C.vb_bind(id, ch, cp); rc != 0 || id.verbs == nil {
		if rc := C.vb_resolve(id, ch, cp, 2000); rc != 0 {
			return "", fmt.Errorf("%w: no RDMA route to %s: %v", ErrNoDevice, host, syscall.Errno(rc))
		}
	}
	if id.verbs == nil {
		return "", fmt.Errorf("%w: %s is not on an RDMA device", ErrNoDevice, host)
	}
	return C.GoString(C.vb_dev_name(id.verbs)), nil
}

func (p *provider) NewPD() (rdma.PD, error) {
	ctx, err := p.pickDevice()
	if err != nil {
		return nil, err
	}
	d := &pd{ctx: ctx, name: C.GoString(C.vb_dev_name(ctx)), log: p.log}
	var ini, resp, wr, tr C.int
	if rc := C.vb_query(ctx, &ini, &resp, &wr, &tr); rc != 0 {
		return nil, fmt.Errorf("verbs: ibv_query_device %s: %w", d.name, errnoErr(syscall.Errno(rc)))
	}
	d.maxORD, d.maxIRD, d.maxWR = int(ini), int(resp), int(wr)
	d.iwarp = tr == C.IBV_TRANSPORT_IWARP
	d.pd = C.ibv_alloc_pd(ctx)
	if d.pd == nil {
		return nil, fmt.Errorf("verbs: ibv_alloc_pd %s: %w", d.name, errnoErr(syscall.ENOMEM))
	}
	return d, nil
}

type pd struct {
	ctx    *C.struct_ibv_context
	pd     *C.struct_ibv_pd
	name   string
	log    *slog.Logger
	maxORD int
	maxIRD int
	maxWR  int
	iwarp  bool

	mu     sync.Mutex
	mrs    int
	eps    int
	closed bool
	// byKey finds a region by its rkey (its STag) when the device reports
	// it invalidated (a peer's Send with Invalidate, a local invalidate).
	byKey map[rdma.STag]*mr
}

// invalidated marks the region of stag invalid after the device did so.
func (d *pd) invalidated(stag rdma.STag) {
	d.mu.Lock()
	m := d.byKey[stag]
	d.mu.Unlock()
	if m != nil {
		m.valid.Store(false)
	}
}

func (d *pd) transport() string {
	if d.iwarp {
		return "iWARP"
	}
	return "InfiniBand/RoCE"
}

func (d *pd) RegisterMemory(buf []byte, access rdma.Access) (rdma.MR, error) {
	if len(buf) == 0 {
		return nil, fmt.Errorf("%w: registering an empty buffer", rdma.ErrInvalidArgument)
	}
	if access&rdma.AccessRemoteWrite != 0 && access&rdma.AccessLocalWrite == 0 {
		return nil, fmt.Errorf("%w: remote write needs local write", rdma.ErrInvalidArgument)
	}
	var a C.int
	if access&rdma.AccessLocalWrite != 0 {
		a |= C.IBV_ACCESS_LOCAL_WRITE
	}
	if access&rdma.AccessRemoteRead != 0 {
		a |= C.IBV_ACCESS_REMOTE_READ
	}
	if access&rdma.AccessRemoteWrite != 0 {
		a |= C.IBV_ACCESS_REMOTE_WRITE
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, rdma.ErrClosed
	}
	// The address goes to C as an integer: the kernel pins the pages, and
	// m.buf keeps Go's collector from reusing them (it does not move heap
	// objects). See rdma.AllocMemory for the rule.
	addr := uint64(uintptr(unsafe.Pointer(unsafe.SliceData(buf))))
	c, err := C.vb_reg_mr(d.pd, C.uint64_t(addr), C.uint64_t(len(buf)), a)
	if c == nil {
		return nil, fmt.Errorf("verbs: ibv_reg_mr of %d bytes on %s: %w", len(buf), d.name, errnoErr(err))
	}
	d.mrs++
	if d.byKey == nil {
		d.byKey = make(map[rdma.STag]*mr)
	}
	m := &mr{pd: d, c: c, buf: buf, access: access, stag: rdma.STag(c.rkey), lkey: uint32(c.lkey), addr: addr}
	m.valid.Store(true)
	d.byKey[m.stag] = m
	return m, nil
}

func (d *pd) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil
	}
	if d.mrs > 0 || d.eps > 0 {
		return fmt.Errorf("%w: %d regions and %d endpoints still open", rdma.ErrBusy, d.mrs, d.eps)
	}
	d.closed = true
	if rc := C.ibv_dealloc_pd(d.pd); rc != 0 {
		return fmt.Errorf("verbs: ibv_dealloc_pd: %w", errnoErr(syscall.Errno(rc)))
	}
	return nil
}

type mr struct {
	pd     *pd
	buf    []byte
	access rdma.Access
	stag   rdma.STag
	lkey   uint32
	addr   uint64
	refs   atomic.Int32 // posted work requests using the region
	valid  atomic.Bool

	mu     sync.Mutex
	c      *C.struct_ibv_mr // nil once deregistered
	closed bool
}

func (m *mr) STag() rdma.STag     { return m.stag }
func (m *mr) Addr() uint64        { return m.addr }
func (m *mr) Bytes() []byte       { return m.buf }
func (m *mr) Access() rdma.Access { return m.access }
func (m *mr) Valid() bool         { return m.valid.Load() }

// Invalidate deregisters the region: a region from ibv_reg_mr cannot be
// invalidated and revalidated by a work request, and deregistration is
// what makes the device refuse the peer's accesses from then on.
func (m *mr) Invalidate() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return rdma.ErrClosed
	}
	return m.dereg()
}

func (m *mr) dereg() error {
	m.valid.Store(false)
	if m.c == nil {
		return nil
	}
	if rc := C.ibv_dereg_mr(m.c); rc != 0 {
		return fmt.Errorf("verbs: ibv_dereg_mr: %w", errnoErr(syscall.Errno(rc)))
	}
	m.c = nil
	return nil
}

func (m *mr) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil
	}
	if n := m.refs.Load(); n > 0 {
		return fmt.Errorf("%w: region %v is used by %d posted work requests", rdma.ErrBusy, m.stag, n)
	}
	if err := m.dereg(); err != nil {
		return err
	}
	m.closed = true
	m.pd.mu.Lock()
	if m.pd.byKey[m.stag] == m {
		delete(m.pd.byKey, m.stag)
	}
	m.pd.mrs--
	m.pd.mu.Unlock()
	return nil
}

// errnoErr maps an errno from libibverbs/librdmacm to the rdma errors.
func errnoErr(err error) error {
	var e syscall.Errno
	if !errors.As(err, &e) {
		if err == nil {
			return syscall.EIO
		}
		return err
	}
	var s error
	switch e {
	case syscall.ENOMEM, syscall.EAGAIN:
		s = rdma.ErrQueueFull
	case syscall.EINVAL, syscall.EFAULT:
		s = rdma.ErrInvalidArgument
	case syscall.ECONNREFUSED:
		s = rdma.ErrRejected
	case syscall.ENOTCONN:
		s = rdma.ErrNotConnected
	case syscall.ENODEV, syscall.EOPNOTSUPP:
		s = rdma.ErrNotSupported
	case syscall.EBUSY:
		s = rdma.ErrBusy
	case syscall.EPERM, syscall.EACCES:
		s = rdma.ErrLocalProtection
	default:
		return e
	}
	return fmt.Errorf("%w (%v)", s, e)
}

// fdWaiter waits for a non-blocking file descriptor of libibverbs or
// librdmacm (a completion or event channel) in Go's netpoller, through a
// duplicate the os.File owns: closing it wakes a waiter and leaves the
// library's descriptor to the library.
type fdWaiter struct {
	f  *os.File
	rc syscall.RawConn
}

func newWaiter(fd C.int, name string) (*fdWaiter, error) {
	if rc := C.vb_set_nonblock(fd); rc != 0 {
		return nil, fmt.Errorf("verbs: %s: %w", name, syscall.Errno(rc))
	}
	nfd, err := syscall.Dup(int(fd))
	if err != nil {
		return nil, fmt.Errorf("verbs: %s: %w", name, err)
	}
	syscall.CloseOnExec(nfd)
	f := os.NewFile(uintptr(nfd), name)
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &fdWaiter{f: f, rc: rc}, nil
}

var past = time.Unix(1, 0)

// wait calls try until it reports true, waiting for the descriptor to be
// readable in between. It ends early with ctx's error, or with
// rdma.ErrClosed once the waiter is closed.
func (w *fdWaiter) wait(ctx context.Context, try func(uintptr) bool) error {
	if ctx.Done() != nil {
		if err := ctx.Err(); err != nil {
			return err
		}
		stop := context.AfterFunc(ctx, func() { w.f.SetReadDeadline(past) })
		defer stop()
	}
	for {
		err := w.rc.Read(try)
		if err == nil {
			return nil
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			// Another waiter's context set the deadline: clear it and
			// go on (that waiter has returned).
			w.f.SetReadDeadline(time.Time{})
			continue
		}
		if errors.Is(err, os.ErrClosed) {
			return rdma.ErrClosed
		}
		return err
	}
}

func (w *fdWaiter) close() { w.f.Close() }
