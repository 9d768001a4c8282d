//go:build linux

// Package server is the smbdirectd daemon, the second entity of the design: it owns
// SMB Direct connections and hands each client process an ordinary stream
// fd (one end of a socketpair) carrying Direct-TCP-framed SMB2 PDUs, as a
// TCP socket would. While the client blocks, the daemon keeps the
// connection alive: keepalives, credits, receive posting. RDMA transfers
// of file ranges are requested over the control socket, with the file's
// fd passed along, so the data never passes through the client.
//
// The control protocol is in docs/smbdirectd.md and internal/ctl.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/smbdirect/smbdirect/internal/ctl"
	// The daemon's default SMB Direct provider (Config.SMBD with a nil
	// Provider) is the embedded soft-iWARP: it registers itself.
	_ "github.com/smbdirect/smbdirect/iwarp"
	"github.com/smbdirect/smbdirect/smb2rdma"
	"github.com/smbdirect/smbdirect/smbd"
	"github.com/smbdirect/smbdirect/smbdirectd/server/internal/channel"
)

// Config configures the daemon. Zero values take the documented defaults.
type Config struct {
	// Socket is the control socket's path (client.DefaultSocket in smbdirectd/client).
	Socket string
	// SocketMode is the socket file's permission bits (0660): together
	// with the directory's, the first gate.
	SocketMode os.FileMode
	// AllowUIDs and AllowGIDs are the users and groups (by SO_PEERCRED)
	// allowed to use the daemon; root and the daemon's own user always
	// are. Both empty: only those two.
	AllowUIDs, AllowGIDs []int
	// MaxConnsPerClient bounds the SMB Direct connections a client (a
	// control connection) opens (64).
	MaxConnsPerClient int
	// MaxRegisteredPerClient bounds the bytes a client has registered at
	// once (1 GiB).
	MaxRegisteredPerClient int64
	// DialTimeout bounds a Dial that does not give its own (30 s).
	DialTimeout time.Duration
	// SMBD configures the SMB Direct connections (MS-SMBD defaults).
	SMBD *smbd.Config
	// Logger receives the daemon's structured logs; nil discards them.
	Logger *slog.Logger
}

func (c *Config) defaults() {
	if c.Socket == "" {
		c.Socket = ctl.DefaultSocket
	}
	if c.SocketMode == 0 {
		c.SocketMode = 0o660
	}
	if c.MaxConnsPerClient <= 0 {
		c.MaxConnsPerClient = 64
	}
	if c.MaxRegisteredPerClient <= 0 {
		c.MaxRegisteredPerClient = 1 << 30
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = 30 * time.Second
	}
	if c.SMBD == nil {
		c.SMBD = &smbd.Config{}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Stats are the daemon's counters (also served as Prometheus metrics).
type Stats struct {
	Clients    int64 `json:"clients"`
	Conns      int64 `json:"connections"`
	ConnsTotal int64 `json:"connections_total"`
	// BytesSent and BytesReceived are SMB2 PDU bytes in SMB Direct
	// messages; data an RDMA channel moves is in the channels' counters.
	BytesSent     int64 `json:"bytes_sent"`
	BytesReceived int64 `json:"bytes_received"`
	RDMAWritten   int64 `json:"rdma_written_bytes"`
	RDMARead      int64 `json:"rdma_read_bytes"`
	Registered    int64 `json:"registered_bytes"`
	Errors        int64 `json:"errors_total"`
	Refused       int64 `json:"clients_refused_total"`
	// The server-side RDMA channel (ListenServerChannel listeners):
	// WRITE data RDMA-read from peers and the WRITE requests, READ data
	// RDMA-written to them and the READ responses, and READ/WRITE
	// requests or responses with an RDMA channel passed on unchanged
	// because they could not be rewritten (signed, malformed, too large).
	ServerRDMAReadBytes      int64 `json:"server_rdma_read_bytes"`
	ServerRDMAWriteBytes     int64 `json:"server_rdma_write_bytes"`
	ServerRDMAReads          int64 `json:"server_rdma_reads"`
	ServerRDMAWrites         int64 `json:"server_rdma_writes"`
	ServerChannelPassthrough int64 `json:"server_channel_passthrough"`
	// The client-side RDMA channel (DialClientChannel connections): READ
	// requests sent with an RDMA channel and the data the peer RDMA-wrote
	// for them, WRITE requests sent with one and the data the peer
	// RDMA-read, and READ/WRITE requests left inline (signed, compound,
	// small, or larger than MaxReadWriteSize).
	ClientRDMAReads      int64 `json:"client_rdma_reads"`
	ClientRDMAReadBytes  int64 `json:"client_rdma_read_bytes"`
	ClientRDMAWrites     int64 `json:"client_rdma_writes"`
	ClientRDMAWriteBytes int64 `json:"client_rdma_write_bytes"`
	ClientChannelInline  int64 `json:"client_channel_inline"`
}

// clientCounts sums smb2rdma.Stats of client-channel connections.
type clientCounts struct{ reads, readBytes, writes, writeBytes, inline int64 }

func (c *clientCounts) add(st smb2rdma.Stats) {
	c.reads += int64(st.Reads)
	c.readBytes += int64(st.BytesPlaced)
	c.writes += int64(st.Writes)
	c.writeBytes += int64(st.BytesFetched)
	c.inline += int64(st.Inline)
}

// Server is a running daemon.
type Server struct {
	cfg Config
	log *slog.Logger
	ln  *net.UnixListener
	// lock is the socket's lock file, held until Close (see Listen).
	lock *os.File

	mu      sync.Mutex
	clients map[*client]struct{}
	live    map[*dconn]struct{} // every connection, whoever holds its fd
	closed  bool
	wg      sync.WaitGroup
	// stopped is closed when Close has finished: every peer disconnected
	// and "stopped" logged. Serve and later Close calls wait for it, so a
	// process exiting when Serve returns has shut down in order.
	stopped chan struct{}

	handles atomic.Uint64

	clientsN, conns, connsTotal, sent, received, rdmaW, rdmaR, registered, errs, refused atomic.Int64
	channel                                                                              channel.Counters
	// clientDone: the client-side channel's counts of closed connections
	// (guarded by mu).
	clientDone clientCounts
}

// ErrDaemonRunning is returned by Listen when another daemon holds the
// control socket.
var ErrDaemonRunning = errors.New("another smbdirectd is listening")

// Listen creates the control socket (replacing a stale one) and returns
// the server; Serve runs it.
//
// A lock file next to the socket (its path + ".lock", flock'ed for the
// server's life) makes the check for a live daemon, the removal of a
// stale socket and the bind one step: two daemons started at once (two
// "smbdirect exec" with none running, say) cannot both pass the check and
// unlink each other's socket. The loser gets ErrDaemonRunning.
func Listen(cfg Config) (*Server, error) {
	cfg.defaults()
	if err := os.MkdirAll(filepath.Dir(cfg.Socket), 0o755); err != nil {
		return nil, fmt.Errorf("smbdirectd: socket directory: %w", err)
	}
	lock, err := lockSocket(cfg.Socket)
	if err != nil {
		return nil, err
	}
	ln, err := listenLocked(cfg)
	if err != nil {
		lock.Close()
		return nil, err
	}
	s := &Server{cfg: cfg, log: cfg.Logger, ln: ln, lock: lock, clients: make(map[*client]struct{}), live: make(map[*dconn]struct{}),
		stopped: make(chan struct{})}
	s.handles.Store(uint64(time.Now().UnixNano()) &^ 0xffff) // handles do not repeat across restarts
	return s, nil
}

// lockSocket takes the lock that guards socket; see Listen.
func lockSocket(socket string) (*os.File, error) {
	f, err := os.OpenFile(socket+".lock", os.O_RDWR|os.O_CREATE|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("smbdirectd: lock file: %w", err)
	}
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("smbdirectd: %w on %s", ErrDaemonRunning, socket)
		}
		return nil, fmt.Errorf("smbdirectd: lock file: %w", err)
	}
	return f, nil
}

// listenLocked binds the control socket; the caller holds its lock.
func listenLocked(cfg Config) (*net.UnixListener, error) {
	if st, err := os.Lstat(cfg.Socket); err == nil {
		if st.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("smbdirectd: %s exists and is not a socket", cfg.Socket)
		}
		// A live daemon answers (one not using the lock: an older
		// build); a stale socket does not.
		if c, err := net.Dial("unixpacket", cfg.Socket); err == nil {
			c.Close()
			return nil, fmt.Errorf("smbdirectd: %w on %s", ErrDaemonRunning, cfg.Socket)
		}
		os.Remove(cfg.Socket)
	}
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: cfg.Socket, Net: "unixpacket"})
	if err != nil {
		return nil, fmt.Errorf("smbdirectd: %w", err)
	}
	ln.SetUnlinkOnClose(true)
	if err := os.Chmod(cfg.Socket, cfg.SocketMode); err != nil {
		ln.Close()
		return nil, fmt.Errorf("smbdirectd: %w", err)
	}
	return ln, nil
}

// Addr is the control socket's path.
func (s *Server) Addr() string { return s.cfg.Socket }

// Stats returns the counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	cc := s.clientDone
	for d := range s.live {
		if d.oc != nil {
			cc.add(d.oc.Stats())
		}
	}
	s.mu.Unlock()
	return Stats{Clients: s.clientsN.Load(), Conns: s.conns.Load(), ConnsTotal: s.connsTotal.Load(),
		BytesSent: s.sent.Load(), BytesReceived: s.received.Load(), RDMAWritten: s.rdmaW.Load(),
		RDMARead: s.rdmaR.Load(), Registered: s.registered.Load(), Errors: s.errs.Load(), Refused: s.refused.Load(),
		ServerRDMAReadBytes: s.channel.ReadBytes.Load(), ServerRDMAWriteBytes: s.channel.WriteBytes.Load(),
		ServerRDMAReads: s.channel.Reads.Load(), ServerRDMAWrites: s.channel.Writes.Load(),
		ServerChannelPassthrough: s.channel.Passthrough.Load(),
		ClientRDMAReads:          cc.reads, ClientRDMAReadBytes: cc.readBytes, ClientRDMAWrites: cc.writes,
		ClientRDMAWriteBytes: cc.writeBytes, ClientChannelInline: cc.inline}
}

// Serve accepts clients until ctx ends or Close is called, then shuts
// down gracefully: every SMB Direct connection is disconnected. It
// returns only once that shutdown is complete (Close has returned), also
// when accepting fails, so the caller may exit at once.
func (s *Server) Serve(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { s.Close() })
	defer stop()
	s.log.Info("smbdirectd: listening", "socket", s.cfg.Socket)
	for {
		uc, err := s.ln.AcceptUnix()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			// Close may be running on the AfterFunc's goroutine; it, not
			// the wait group draining, marks the end of the shutdown.
			s.Close()
			if closed {
				return nil
			}
			return err
		}
		s.accept(uc)
	}
}

func (s *Server) accept(uc *net.UnixConn) {
	cred, err := peerCred(uc)
	if err != nil || !s.allowed(cred) {
		s.refused.Add(1)
		s.log.Warn("smbdirectd: client refused", "uid", cred.Uid, "gid", cred.Gid, "pid", cred.Pid, "err", err)
		uc.Close()
		return
	}
	c := newClient(s, uc, cred)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		uc.Close()
		return
	}
	s.clients[c] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	s.clientsN.Add(1)
	go func() {
		defer s.wg.Done()
		c.serve()
		s.mu.Lock()
		delete(s.clients, c)
		s.mu.Unlock()
		s.clientsN.Add(-1)
	}()
}

func peerCred(uc *net.UnixConn) (*unix.Ucred, error) {
	rc, err := uc.SyscallConn()
	if err != nil {
		return &unix.Ucred{}, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := rc.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return &unix.Ucred{}, err
	}
	if cerr != nil {
		return &unix.Ucred{}, cerr
	}
	return cred, nil
}

func (s *Server) allowed(cred *unix.Ucred) bool {
	uid, gid := int(cred.Uid), int(cred.Gid)
	if uid == 0 || uid == os.Getuid() || slices.Contains(s.cfg.AllowUIDs, uid) || slices.Contains(s.cfg.AllowGIDs, gid) {
		return true
	}
	if len(s.cfg.AllowGIDs) > 0 {
		// Supplementary groups count too.
		for _, g := range supplementaryGroups(int(cred.Pid)) {
			if slices.Contains(s.cfg.AllowGIDs, g) {
				return true
			}
		}
	}
	return false
}

// Close stops accepting, ends every client session and disconnects every
// SMB Direct connection. It waits for all of it; so does every later or
// concurrent call.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		<-s.stopped
		return nil
	}
	s.closed = true
	clients := make([]*client, 0, len(s.clients))
	for c := range s.clients {
		clients = append(clients, c)
	}
	s.mu.Unlock()
	s.ln.Close()
	for _, c := range clients {
		c.shutdown()
	}
	s.mu.Lock()
	live := make([]*dconn, 0, len(s.live))
	for d := range s.live {
		live = append(live, d)
	}
	s.mu.Unlock()
	for _, d := range live {
		d.close()
	}
	s.wg.Wait()
	// After the listener has unlinked the socket: the next daemon finds
	// none, or binds its own.
	s.lock.Close()
	s.log.Info("smbdirectd: stopped")
	close(s.stopped)
	return nil
}
