//go:build linux && cgo && verbs

package verbs

// These tests run inside the testbed VM on a kernel RDMA device (rxe or
// siw): TestVMVerbs (vm_test.go) builds this package's test binary with
// -tags verbs and runs them there, one at a time, with the device and
// addresses in the environment. They fail, never skip, without a device.

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/smbdirect/smbdirect/internal/rping"
	"github.com/smbdirect/smbdirect/internal/testbed"
	"github.com/smbdirect/smbdirect/rdma"
	"github.com/smbdirect/smbdirect/rdma/rdmatest"
	"github.com/smbdirect/smbdirect/smb2rdma"
	"github.com/smbdirect/smbdirect/smbd"
	"github.com/smbdirect/smbdirect/smbdirectd/client"
	"github.com/smbdirect/smbdirect/smbdirectd/server"
)

func env(t *testing.T, name string) string {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		t.Fatalf("%s is not set: this test runs in the testbed VM (TestVMVerbs)", name)
	}
	return v
}

func envInt(t *testing.T, name string) int {
	t.Helper()
	n, err := strconv.Atoi(env(t, name))
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return n
}

func guestPD(t *testing.T) rdma.PD {
	t.Helper()
	pd, err := New(Config{Device: env(t, "VERBS_DEVICE")}).NewPD()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := pd.Close(); err != nil {
			t.Errorf("PD close: %v", err)
		}
	})
	return pd
}

// TestGuestConformance runs the rdma API's shared semantics on the device.
func TestGuestConformance(t *testing.T) {
	dev, addr := env(t, "VERBS_DEVICE"), env(t, "VERBS_LISTEN")
	rdmatest.TestProvider(t, rdmatest.Harness{
		Provider:   func(*testing.T) rdma.Provider { return New(Config{Device: dev}) },
		ListenAddr: addr,
	})
}

// TestGuestRpingClient runs our rping client against VERBS_ADDR.
func TestGuestRpingClient(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	count := envInt(t, "VERBS_COUNT")
	opt := rping.Options{Addr: env(t, "VERBS_ADDR"), Size: envInt(t, "VERBS_SIZE"), Count: count, Validate: true, Verbose: os.Stdout}
	if os.Getenv("VERBS_QUIET") != "" {
		opt.Verbose = nil
	}
	st, err := rping.Client(ctx, guestPD(t), opt)
	if err != nil {
		t.Fatalf("rping client: %v", err)
	}
	if st.Pings != count || st.Validated != count {
		t.Fatalf("rping client: %+v", st)
	}
	t.Logf("VERBS_RPING_CLIENT_OK %+v", st)
}

// TestGuestRpingServer serves one rping client on VERBS_LISTEN; it prints
// VERBS_RPING_READY once it listens.
func TestGuestRpingServer(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	pd := guestPD(t)
	ln, err := pd.Listen(ctx, env(t, "VERBS_LISTEN"), rdma.ListenConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	os.Stdout.WriteString("VERBS_RPING_READY " + ln.Addr().String() + "\n")
	if f := os.Getenv("VERBS_READY_FILE"); f != "" {
		os.WriteFile(f, nil, 0o644)
	}
	count := envInt(t, "VERBS_COUNT")
	st, err := rping.Serve(ctx, pd, ln, rping.Options{Size: envInt(t, "VERBS_SIZE"), Verbose: os.Stdout})
	if err != nil {
		t.Fatalf("rping server: %v", err)
	}
	if st.Pings != count || st.Validated != count {
		t.Fatalf("rping server: %+v", st)
	}
	t.Logf("VERBS_RPING_SERVER_OK %+v", st)
}

// TestGuestKsmbd runs the unmodified go-smb2 client over smbd on this
// provider against Linux ksmbd at VERBS_SMB_ADDR (port 445 on RoCE, 5445
// on iWARP): files inline, then through smb2rdma so that ksmbd RDMA-reads
// WRITE data from our regions and RDMA-writes READ data into them, every
// file checked by SHA-256. ksmbd's Send with Invalidate is not asked for
// (SMB2_CHANNEL_RDMA_V1): rxe and siw refuse to invalidate a region from
// ibv_reg_mr for the peer.
func TestGuestKsmbd(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	addr := env(t, "VERBS_SMB_ADDR")
	cfg := &smbd.Config{Provider: New(Config{Device: env(t, "VERBS_DEVICE")})}
	dial := func() *smbd.Conn {
		t.Helper()
		// ksmbd starts its RDMA listener a moment after ksmbd.mountd
		// returns; a refused connection is retried until then.
		for {
			c, err := smbd.Dial(ctx, addr, cfg)
			if err == nil {
				return c
			}
			if !errors.Is(err, rdma.ErrRejected) || ctx.Err() != nil {
				t.Fatalf("SMB Direct to ksmbd at %s: %v", addr, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	t.Run("inline", func(t *testing.T) {
		conn := dial()
		defer conn.Close()
		t.Logf("negotiated %+v over %s", conn.Info(), cfg.Provider.Name())
		share := testbed.MountShare(ctx, t, conn, addr)
		n := len(testbed.ExerciseShare(t, share, "inline-", []int{0, 1, 1000, 65536, 150_001}))
		t.Logf("VERBS_KSMBD_INLINE_OK %d files", n)
	})
	t.Run("rdma-channel", func(t *testing.T) {
		conn := dial()
		oc := smb2rdma.Wrap(conn, &smb2rdma.Config{NoInvalidate: true})
		defer oc.Close()
		share := testbed.MountShare(ctx, t, oc, addr)
		sizes := []int{0, 1000, 4096, 300_001, 1 << 20, 4<<20 + 5000}
		n := len(testbed.ExerciseShare(t, share, "rdma-", sizes))
		var big uint64
		for _, s := range sizes {
			if s >= 4096 {
				big += uint64(s)
			}
		}
		st := oc.Stats()
		if st.Writes == 0 || st.Reads == 0 || st.BytesFetched != big || st.BytesPlaced < big {
			t.Fatalf("offload %+v: want %d bytes RDMA-read by ksmbd and at least that RDMA-written", st, big)
		}
		t.Logf("VERBS_KSMBD_RDMA_OK %d files; ksmbd RDMA-read %d bytes, RDMA-wrote %d bytes in %d+%d requests", n, st.BytesFetched, st.BytesPlaced, st.Writes, st.Reads)
	})
}

// guestPair connects two endpoints of pd on VERBS_LISTEN's address.
func guestPair(t *testing.T, ctx context.Context, pd rdma.PD, prepost func(srv, cli rdma.Endpoint)) (srv, cli rdma.Endpoint) {
	t.Helper()
	ln, err := pd.Listen(ctx, env(t, "VERBS_LISTEN"), rdma.ListenConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	srv, _ = pd.NewEndpoint(rdma.EndpointConfig{})
	cli, _ = pd.NewEndpoint(rdma.EndpointConfig{})
	t.Cleanup(func() { cli.Close(); srv.Close() })
	if prepost != nil {
		prepost(srv, cli)
	}
	errc := make(chan error, 1)
	go func() {
		req, err := ln.Accept(ctx)
		if err == nil {
			err = req.Accept(ctx, srv, rdma.ConnParams{})
		}
		errc <- err
	}()
	if err := cli.Connect(ctx, ln.Addr().String(), rdma.ConnParams{}); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	return srv, cli
}

// pollErr polls ep until a completion fails or the connection ends, and
// returns that error.
func pollErr(t *testing.T, ctx context.Context, ep rdma.Endpoint) error {
	t.Helper()
	var wc [16]rdma.Completion
	for {
		n, err := ep.Poll(ctx, wc[:])
		if err != nil {
			if e := ep.Err(); e != nil {
				return e
			}
			return err
		}
		for _, c := range wc[:n] {
			if c.Err != nil {
				return c.Err
			}
		}
	}
}

// TestGuestFaults: hostile peers and faults end in clean errors. With
// VERBS_RNR set (RoCE: iWARP has no RNR, a Send without a receive ends the
// connection), a peer that never posts receives fails our Send after the
// RNR retries; an MR deregistered while the peer RDMA-reads it fails the
// peer's Reads with a remote access error.
func TestGuestFaults(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	pd := guestPD(t)
	buf, err := rdma.AllocMemory(1 << 20)
	if err != nil {
		t.Fatal(err)
	}
	defer rdma.FreeMemory(buf)
	t.Run("rnr", func(t *testing.T) {
		if os.Getenv("VERBS_RNR") == "" {
			t.Log("no RNR on iWARP")
			return
		}
		_, cli := guestPair(t, ctx, pd, nil)
		m, err := pd.RegisterMemory(buf[:64], 0)
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		if err := cli.PostSend(&rdma.SendWR{ID: 7, Op: rdma.OpSend, Local: rdma.SGE{MR: m}}); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		err = pollErr(t, ctx, cli)
		var we *rdma.WorkError
		if !errors.Is(err, rdma.ErrRemoteOperation) || !errors.As(err, &we) || we.ID != 7 {
			t.Fatalf("Send to a peer without receives: %v, want the WorkError of Send 7 matching ErrRemoteOperation", err)
		}
		t.Logf("VERBS_FAULT_RNR_OK after %v: %v", time.Since(start).Round(time.Millisecond), err)
	})
	t.Run("mr-deregistered-in-flight", func(t *testing.T) {
		srv, cli := guestPair(t, ctx, pd, nil)
		_ = srv
		region, err := pd.RegisterMemory(buf, rdma.AccessRemoteRead)
		if err != nil {
			t.Fatal(err)
		}
		dst, err := pd.RegisterMemory(make([]byte, 1<<20), rdma.AccessLocalWrite)
		if err != nil {
			t.Fatal(err)
		}
		defer dst.Close()
		const reads = 64
		for i := range reads {
			if err := cli.PostSend(&rdma.SendWR{ID: uint64(i), Op: rdma.OpRead, Local: rdma.SGE{MR: dst},
				RemoteSTag: region.STag(), RemoteAddr: region.Addr()}); err != nil {
				t.Fatal(err)
			}
		}
		if err := region.Close(); err != nil {
			t.Fatalf("deregistering the peer's source: %v", err)
		}
		var wc [16]rdma.Completion
		ok, failed := 0, 0
		var first error
		for ok+failed < reads {
			n, err := cli.Poll(ctx, wc[:])
			if err != nil {
				t.Fatalf("poll after %d ok, %d failed: %v", ok, failed, err)
			}
			for _, c := range wc[:n] {
				if c.Err == nil {
					ok++
					continue
				}
				if first == nil {
					first = c.Err
				}
				failed++
			}
		}
		// siw does not tell user space why the peer terminated: the
		// Reads are flushed as the connection ends.
		want := rdma.ErrRemoteAccess
		if isIWARP(pd) {
			want = rdma.ErrFlushed
		}
		if failed == 0 || !errors.Is(first, want) {
			t.Fatalf("%d Reads ok, %d failed, first error %v: want %v", ok, failed, first, want)
		}
		select {
		case <-cli.Done():
		case <-ctx.Done():
			t.Fatal("the connection did not end")
		}
		if cli.Err() == nil {
			t.Fatal("the connection ended without an error")
		}
		t.Logf("VERBS_FAULT_DEREG_OK %d Reads done before the deregistration, then %v", ok, first)
	})
}

func isIWARP(d rdma.PD) bool { return d.(*pd).iwarp }

// TestGuestAllocs: posting and polling allocate nothing in steady state
// (an RDMA Write and a Send with its receive, completions polled).
func TestGuestAllocs(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	pd := guestPD(t)
	buf, err := rdma.AllocMemory(1 << 16)
	if err != nil {
		t.Fatal(err)
	}
	defer rdma.FreeMemory(buf)
	m, err := pd.RegisterMemory(buf, rdma.AccessLocalWrite|rdma.AccessRemoteWrite)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	srv, cli := guestPair(t, ctx, pd, nil)
	wr := &rdma.SendWR{ID: 1, Op: rdma.OpWrite, Local: rdma.SGE{MR: m, Length: 4096}, RemoteSTag: m.STag(), RemoteAddr: m.Addr() + 8192}
	send := &rdma.SendWR{ID: 2, Op: rdma.OpSend, Local: rdma.SGE{MR: m, Length: 64}}
	recv := &rdma.RecvWR{ID: 3, Local: rdma.SGE{MR: m, Offset: 16384, Length: 64}}
	var wc [4]rdma.Completion
	one := func(ep rdma.Endpoint) {
		for {
			n, err := ep.Poll(context.Background(), wc[:])
			if err != nil {
				t.Fatal(err)
			}
			if n > 0 {
				if wc[0].Err != nil {
					t.Fatal(wc[0].Err)
				}
				return
			}
		}
	}
	round := func() {
		if err := cli.PostSend(wr); err != nil {
			t.Fatal(err)
		}
		one(cli)
		if err := srv.PostRecv(recv); err != nil {
			t.Fatal(err)
		}
		if err := cli.PostSend(send); err != nil {
			t.Fatal(err)
		}
		one(cli)
		one(srv)
	}
	round() // warm up
	if n := testing.AllocsPerRun(200, round); n != 0 {
		t.Fatalf("%v allocations per Write + Send + receive, want 0", n)
	}
	t.Log("VERBS_ALLOCS_OK 0 allocations per Write + Send + receive")
}

// TestGuestDaemon: the daemon (smbdirectd's server package, in this
// process) on this provider, and the unmodified go-smb2 client on the
// stream fd it hands out, against ksmbd at VERBS_SMB_ADDR.
func TestGuestDaemon(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	addr := env(t, "VERBS_SMB_ADDR")
	s, err := server.Listen(server.Config{Socket: filepath.Join(t.TempDir(), "d.sock"),
		SMBD: &smbd.Config{Provider: New(Config{Device: env(t, "VERBS_DEVICE")})}})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(context.Background()) }()
	defer func() {
		s.Close()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	cl, err := client.Dial(ctx, s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	conn, err := cl.Connect(ctx, addr)
	if err != nil {
		t.Fatalf("through the daemon to ksmbd at %s: %v", addr, err)
	}
	defer conn.Close()
	nc, err := conn.NetConn()
	if err != nil {
		t.Fatal(err)
	}
	share := testbed.MountShare(ctx, t, nc, addr)
	n := len(testbed.ExerciseShare(t, share, "daemon-", []int{1, 4096, 100_000, 150_001}))
	t.Logf("VERBS_DAEMON_OK %d files through smbdirectd on %s", n, env(t, "VERBS_DEVICE"))
}
