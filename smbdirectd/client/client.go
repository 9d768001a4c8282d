// Package client is the Go client of the smbdirectd daemon (package
// smbdirectd/server, command cmd/smbdirectd): it asks the daemon for SMB Direct
// connections and gets each as an ordinary stream fd carrying
// Direct-TCP-framed SMB2 PDUs, which survives fork and exec; and it
// requests RDMA transfers of file ranges, which the daemon performs from
// or into the file itself. The C library in clib/ speaks the same
// protocol (docs/smbdirectd.md).
package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/smbdirect/smbdirect/internal/ctl"
)

// DefaultSocket is the daemon's default control socket: where
// server.Config and cmd/smbdirectd listen unless told otherwise, and where
// Dial connects given "". It is the only exported name of this path.
const DefaultSocket = ctl.DefaultSocket

// Error is a request the daemon refused or failed. Code is an errno value
// (unix.ENOENT, unix.EMSGSIZE, ...; those are syscall.Errno values), so
// errors.Is(err, unix.ENOENT) works.
type Error struct {
	Code    uint32
	Message string
}

func (e *Error) Error() string { return "smbdirectd: " + e.Message }

// Is matches the errno of the code.
func (e *Error) Is(target error) bool {
	n, ok := target.(syscall.Errno)
	return ok && uint32(n) == e.Code
}

// ErrClosed: the client, or its session with the daemon, is closed.
var ErrClosed = errors.New("smbdirectd: client closed")

// Client is a session with the daemon. Its methods may be called
// concurrently; each request waits for its own reply.
type Client struct {
	uc *net.UnixConn

	wmu sync.Mutex

	mu      sync.Mutex
	nextID  uint64
	waiting map[uint64]chan reply
	events  map[uint64]chan reply // by Listen request ID
	err     error
	done    chan struct{}
}

type reply struct {
	h    ctl.Header
	body []byte
	fds  []int
}

// Dial opens a session with the daemon at socket ("" for DefaultSocket).
func Dial(ctx context.Context, socket string) (*Client, error) {
	if err := fdPassing(); err != nil {
		return nil, err
	}
	if socket == "" {
		socket = DefaultSocket
	}
	var d net.Dialer
	nc, err := d.DialContext(ctx, "unixpacket", socket)
	if err != nil {
		return nil, fmt.Errorf("smbdirectd: %w", err)
	}
	c := &Client{uc: nc.(*net.UnixConn), nextID: 1, waiting: map[uint64]chan reply{}, events: map[uint64]chan reply{}, done: make(chan struct{})}
	go c.readLoop()
	r, err := c.call(ctx, func(id uint64) []byte {
		return ctl.AppendHello(nil, id, &ctl.Hello{Min: ctl.Version, Max: ctl.Version})
	}, nil)
	if err == nil {
		_, err = ctl.ParseHelloOK(r.body)
	}
	if err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// Close ends the session. Registrations and listeners made through it are
// released by the daemon; connections stay while their fds are open.
func (c *Client) Close() error {
	err := c.uc.Close()
	<-c.done
	return err
}

func (c *Client) readLoop() {
	defer close(c.done)
	buf := make([]byte, 1<<16)
	oob := make([]byte, rightsSpace(4))
	var err error
	for {
		var n, oobn int
		n, oobn, _, _, err = c.uc.ReadMsgUnix(buf, oob)
		if err != nil || n == 0 {
			break
		}
		var fds []int
		if oobn > 0 {
			fds = parseRights(oob[:oobn])
		}
		h, body, e := ctl.ParseHeader(buf[:n])
		if e != nil {
			closeAll(fds)
			continue
		}
		r := reply{h: h, body: append([]byte(nil), body...), fds: fds}
		c.mu.Lock()
		ch := c.waiting[h.ID]
		if ch != nil {
			delete(c.waiting, h.ID)
		} else {
			ch = c.events[h.ID]
		}
		c.mu.Unlock()
		if ch == nil {
			closeAll(fds)
			continue
		}
		select {
		case ch <- r:
		default: // an event nobody takes: drop it, and its fds
			closeAll(fds)
		}
	}
	if err == nil {
		err = ErrClosed
	}
	c.mu.Lock()
	c.err = fmt.Errorf("%w: %v", ErrClosed, err)
	for id, ch := range c.waiting {
		close(ch)
		delete(c.waiting, id)
	}
	for id, ch := range c.events {
		close(ch)
		delete(c.events, id)
	}
	c.mu.Unlock()
}

func closeAll(fds []int) {
	for _, fd := range fds {
		closeFD(fd)
	}
}

// send sends a request built by build with the next ID; ch receives its
// reply (and, for a Listen, the events).
func (c *Client) send(build func(id uint64) []byte, fds []int, ch chan reply, event bool) (uint64, error) {
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return 0, err
	}
	id := c.nextID
	c.nextID++
	if event {
		c.events[id] = ch
	} else {
		c.waiting[id] = ch
	}
	c.mu.Unlock()
	var oob []byte
	if len(fds) > 0 {
		oob = unixRights(fds)
	}
	c.wmu.Lock()
	_, _, err := c.uc.WriteMsgUnix(build(id), oob, nil)
	c.wmu.Unlock()
	if err != nil {
		c.mu.Lock()
		delete(c.waiting, id)
		delete(c.events, id)
		c.mu.Unlock()
		return 0, fmt.Errorf("smbdirectd: %w", err)
	}
	return id, nil
}

// call sends a request and waits for its reply; an Error reply becomes an
// *Error.
func (c *Client) call(ctx context.Context, build func(id uint64) []byte, fds []int) (reply, error) {
	ch := make(chan reply, 1)
	id, err := c.send(build, fds, ch, false)
	if err != nil {
		return reply{}, err
	}
	select {
	case r, ok := <-ch:
		if !ok {
			return reply{}, c.closedErr()
		}
		return r, replyErr(r)
	case <-ctx.Done():
		c.mu.Lock()
		delete(c.waiting, id)
		c.mu.Unlock()
		return reply{}, ctx.Err()
	}
}

func (c *Client) closedErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return c.err
	}
	return ErrClosed
}

func replyErr(r reply) error {
	if r.h.Type != ctl.TypeError {
		return nil
	}
	closeAll(r.fds)
	e, err := ctl.ParseError(r.body)
	if err != nil {
		return fmt.Errorf("smbdirectd: unparsable error reply: %w", err)
	}
	return &Error{Code: e.Code, Message: e.Message}
}

// Conn is an SMB Direct connection held by the daemon. Stream is the
// client's end of it: read and write SMB2 PDUs with their 4-byte Direct
// TCP header, as on a TCP socket. Pass Stream to a child (fork, or
// exec with cmd.ExtraFiles) and it continues the same connection.
type Conn struct {
	Handle uint64
	Stream *os.File
	Info   ctl.Conn
}

// NetConn returns a net.Conn on a duplicate of the stream fd.
func (c *Conn) NetConn() (net.Conn, error) { return net.FileConn(c.Stream) }

// Close closes the client's stream fd (the connection ends when every copy
// of it is closed).
func (c *Conn) Close() error { return c.Stream.Close() }

func connFrom(r reply) (*Conn, error) {
	m, err := ctl.ParseConn(r.body)
	if err != nil || len(r.fds) != 1 {
		closeAll(r.fds)
		return nil, fmt.Errorf("smbdirectd: bad connection reply (%d fds): %v", len(r.fds), err)
	}
	return &Conn{Handle: m.Conn, Stream: os.NewFile(uintptr(r.fds[0]), "smbdirect:"+m.Remote), Info: m}, nil
}

// Connect asks the daemon to connect to an SMB Direct server at addr.
func (c *Client) Connect(ctx context.Context, addr string) (*Conn, error) {
	return c.ConnectFlags(ctx, addr, 0)
}

// DialClientChannel, as a ConnectFlags flag, gives the connection the
// daemon's client-side RDMA channel: unsigned READ and WRITE requests
// written inline to the stream go to the server with an RDMA channel, the
// daemon doing the registrations, and READ responses come back inline
// (docs/smbdirectd.md).
const DialClientChannel = ctl.DialClientChannel

// ConnectFlags is Connect with flags (DialClientChannel).
func (c *Client) ConnectFlags(ctx context.Context, addr string, flags uint32) (*Conn, error) {
	var ms uint32
	if dl, ok := ctx.Deadline(); ok {
		ms = uint32(max(1, time.Until(dl).Milliseconds()))
	}
	r, err := c.call(ctx, func(id uint64) []byte {
		return ctl.AppendDial(nil, id, &ctl.Dial{Addr: addr, TimeoutMS: ms, Flags: flags})
	}, nil)
	if err != nil {
		return nil, err
	}
	return connFrom(r)
}

// Listener receives the SMB Direct connections the daemon accepts.
type Listener struct {
	c      *Client
	Handle uint64
	Addr   string
	events chan reply
}

// Listen asks the daemon to accept SMB Direct connections on addr.
func (c *Client) Listen(ctx context.Context, addr string) (*Listener, error) {
	return c.ListenFlags(ctx, addr, 0)
}

// ListenServerChannel, as a ListenFlags flag, gives the accepted
// connections the daemon's server-side RDMA channel: SMB2 READ and WRITE
// requests with an RDMA channel arrive on the stream as inline requests,
// and the daemon RDMA-writes the READ responses' data to the peer and
// RDMA-reads the WRITE data from it (docs/smbdirectd.md). For an SMB
// server that knows nothing of RDMA.
const ListenServerChannel = ctl.ListenServerChannel

// ListenFlags is Listen with flags (ListenServerChannel). A daemon that
// does not know a flag refuses the Listen with EINVAL.
func (c *Client) ListenFlags(ctx context.Context, addr string, flags uint32) (*Listener, error) {
	ch := make(chan reply, 16)
	id, err := c.send(func(id uint64) []byte {
		return ctl.AppendListen(nil, id, &ctl.Listen{Addr: addr, Flags: flags})
	}, nil, ch, true)
	if err != nil {
		return nil, err
	}
	select {
	case r, ok := <-ch:
		if !ok {
			return nil, c.closedErr()
		}
		if err := replyErr(r); err != nil {
			c.mu.Lock()
			delete(c.events, id)
			c.mu.Unlock()
			return nil, err
		}
		m, err := ctl.ParseListening(r.body)
		if err != nil {
			return nil, err
		}
		return &Listener{c: c, Handle: m.Listener, Addr: m.Addr, events: ch}, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Accept waits for the next connection.
func (l *Listener) Accept(ctx context.Context) (*Conn, error) {
	select {
	case r, ok := <-l.events:
		if !ok {
			return nil, l.c.closedErr()
		}
		if err := replyErr(r); err != nil {
			return nil, err
		}
		return connFrom(r)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Close stops the daemon's listener.
func (l *Listener) Close() error { return l.c.CloseHandle(context.Background(), l.Handle) }

// CloseHandle ends a connection or listener at once, whoever holds its fd.
func (c *Client) CloseHandle(ctx context.Context, h uint64) error {
	_, err := c.call(ctx, func(id uint64) []byte { return ctl.AppendClose(nil, id, &ctl.Close{Handle: h}) }, nil)
	return err
}
