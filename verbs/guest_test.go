//go:build linux && cgo && verbs

package verbs

// These tests run inside the testbed VM on a kernel RDMA device (rxe or
// siw): TestVMVerbs (vm_test.go) builds this package's test binary with
// -tags verbs and runs them there, one at a time, with the device and
// addresses in the environment. They fail, never skip, without a device.

import (
	"context"
	"crypto/sha256"
	"errors"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
	"time"

	gosmb2 "github.com/cloudsoda/go-smb2"

	"github.com/smbdirect/smbdirect/internal/rping"
	"github.com/smbdirect/smbdirect/internal/testbed"
	"github.com/smbdirect/smbdirect/rdma"
	"github.com/smbdirect/smbdirect/rdma/rdmatest"
	"github.com/smbdirect/smbdirect/smb2rdma"
	"github.com/smbdirect/smbdirect/smbd"
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
		n := exerciseShare(t, share, "inline-", []int{0, 1, 1000, 65536, 150_001})
		t.Logf("VERBS_KSMBD_INLINE_OK %d files", n)
	})
	t.Run("rdma-channel", func(t *testing.T) {
		conn := dial()
		oc := smb2rdma.Wrap(conn, &smb2rdma.Config{NoInvalidate: true})
		defer oc.Close()
		share := testbed.MountShare(ctx, t, oc, addr)
		sizes := []int{0, 1000, 4096, 300_001, 1 << 20, 4<<20 + 5000}
		n := exerciseShare(t, share, "rdma-", sizes)
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

// exerciseShare writes a file of each size, reads each back, lists them,
// checking contents by SHA-256, and returns how many it checked.
func exerciseShare(t *testing.T, share *gosmb2.Share, prefix string, sizes []int) int {
	t.Helper()
	files := map[string][]byte{}
	for i, n := range sizes {
		b := make([]byte, n)
		rand.NewChaCha8([32]byte{byte(i), byte(n)}).Read(b)
		name := prefix + strconv.Itoa(n) + ".bin"
		files[name] = b
		if err := share.WriteFile(name, b, 0o644); err != nil {
			t.Fatalf("write %s: %v", name, err)
		}
	}
	for name, want := range files {
		got, err := share.ReadFile(name)
		if err != nil {
			t.Fatalf("read %s: %v", name, err)
		}
		if sha256.Sum256(got) != sha256.Sum256(want) {
			t.Fatalf("%s: read back %d bytes, sha256 %x; wrote %d bytes, sha256 %x", name, len(got), sha256.Sum256(got), len(want), sha256.Sum256(want))
		}
	}
	infos, err := share.ReadDir(".")
	if err != nil {
		t.Fatalf("list: %v", err)
	}
	listed := 0
	for _, fi := range infos {
		if want, ok := files[fi.Name()]; ok {
			if fi.Size() != int64(len(want)) {
				t.Fatalf("%s listed with size %d, want %d", fi.Name(), fi.Size(), len(want))
			}
			listed++
		}
	}
	if listed != len(files) {
		t.Fatalf("%d of %d files listed", listed, len(files))
	}
	return len(files)
}
