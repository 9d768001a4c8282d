//go:build linux && cgo && verbs

package verbs

// These tests run inside the testbed VM on a kernel RDMA device (rxe or
// siw): TestVMVerbs (vm_test.go) builds this package's test binary with
// -tags verbs and runs them there, one at a time, with the device and
// addresses in the environment. They fail, never skip, without a device.

import (
	"context"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/smbdirect/smbdirect/internal/rping"
	"github.com/smbdirect/smbdirect/rdma"
	"github.com/smbdirect/smbdirect/rdma/rdmatest"
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
