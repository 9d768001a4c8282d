//go:build linux

package server_test

// End to end against Linux ksmbd in the testbed VM, through the daemon:
// the C example (SMB2 NEGOTIATE, then ECHO from a forked child and from
// the parent on the same connection) and the unmodified go-smb2 client on
// the daemon's stream fd. Opt-in with SMBDIRECT_VM=1; fails, never skips,
// when the VM cannot run.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/smbdirect/smbdirect/internal/testbed"
	"github.com/smbdirect/smbdirect/smb2rdma"
	"github.com/smbdirect/smbdirect/smbd"
	"github.com/smbdirect/smbdirect/smbdirectd/server"
)

func TestLinuxDaemonKsmbd(t *testing.T) {
	example := buildC(t, "smbdirect_example", "example.c", "smbdirect.c")
	vm := testbed.StartT(t, testbed.Options{
		GuestScript: testbed.KsmbdGuest,
		Forwards:    []testbed.Forward{{GuestPort: 5445}},
	})
	ctx, cancel := context.WithTimeout(t.Context(), 150*time.Second)
	defer cancel()
	defer os.WriteFile(vm.ShareDir()+"/done", nil, 0o644)
	if _, err := vm.WaitFor(ctx, "KSMBD_READY"); err != nil {
		t.Fatalf("ksmbd did not start: %v", err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(vm.HostPort(5445)))
	// The default provider settings: against Linux siw the first send
	// waits out its accept race (docs/iwarp.md).
	s := startDaemon(t, func(c *server.Config) { c.SMBD = &smbd.Config{} })

	t.Run("c-example", func(t *testing.T) {
		cmd := exec.CommandContext(ctx, example, "-s", s.Addr(), addr)
		out, err := cmd.CombinedOutput()
		t.Logf("C example:\n%s", out)
		if err != nil || !bytes.Contains(out, []byte("EXAMPLE_OK")) {
			t.Fatalf("C example failed: %v", err)
		}
		for _, want := range []string{"SMB2 NEGOTIATE answered: dialect 3.0.2", "child (pid", "parent (pid"} {
			if !strings.Contains(string(out), want) {
				t.Fatalf("output lacks %q", want)
			}
		}
	})

	t.Run("go-smb2", func(t *testing.T) {
		_, conn := through(t, s, addr)
		nc, err := conn.NetConn()
		if err != nil {
			t.Fatal(err)
		}
		share := testbed.MountShare(ctx, t, nc, addr)
		for i, n := range []int{1, 4096, 100_000, 150_001} {
			b := make([]byte, n)
			rand.NewChaCha8([32]byte{byte(i), 9}).Read(b)
			name := "daemon-" + strconv.Itoa(n)
			if err := share.WriteFile(name, b, 0o644); err != nil {
				t.Fatal(err)
			}
			got, err := share.ReadFile(name)
			if err != nil || sha256.Sum256(got) != sha256.Sum256(b) {
				t.Fatalf("%s: read back %d bytes, %v", name, len(got), err)
			}
		}
		st := s.Stats()
		t.Logf("go-smb2 through smbdirectd against ksmbd: files written and read back, checksums equal; daemon %+v", st)
		if st.BytesSent < 250_000 || st.BytesReceived < 250_000 {
			t.Fatalf("daemon counters %+v", st)
		}
	})

	t.Run("rdma-channel", func(t *testing.T) {
		// go-smb2 through smb2rdma on the daemon's connection: its READs
		// and WRITEs go by RDMA; each registration is a file in dir that
		// the daemon maps, so ksmbd RDMA-writes READ data into a file
		// range and RDMA-reads WRITE data from one.
		cl, conn := through(t, s, addr)
		ch, err := cl.Channel(conn)
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		var backing atomic.Int64
		ch.Backing = func(n int) (*os.File, error) {
			backing.Add(1)
			f, err := os.CreateTemp(dir, "registration-*")
			if err == nil {
				err = f.Truncate(int64(n))
			}
			return f, err
		}
		oc := smb2rdma.WrapChannel(ch, nil)
		defer oc.Close()
		share := testbed.MountShare(ctx, t, oc, addr)
		before := s.Stats()
		sizes := []int{65536, 1 << 20, 3<<20 + 4096}
		var total uint64
		for i, n := range sizes {
			total += uint64(n)
			b := make([]byte, n)
			rand.NewChaCha8([32]byte{byte(i), 77}).Read(b)
			name := "daemon-rdma-" + strconv.Itoa(n)
			if err := share.WriteFile(name, b, 0o644); err != nil {
				t.Fatal(err)
			}
			got, err := share.ReadFile(name)
			if err != nil || sha256.Sum256(got) != sha256.Sum256(b) {
				t.Fatalf("%s: read back %d bytes, %v", name, len(got), err)
			}
		}
		st := oc.Stats()
		t.Logf("go-smb2 -> smb2rdma -> smbdirectd -> ksmbd: %+v; %d registrations backed by files; daemon %+v", st, backing.Load(), s.Stats())
		if st.BytesFetched != total || st.BytesPlaced < total || st.PeerInvalidated != st.Reads+st.Writes || backing.Load() < int64(st.Reads+st.Writes) {
			t.Fatalf("offload through the daemon: %+v, want %d bytes each way, all invalidated by ksmbd", st, total)
		}
		if after := s.Stats(); after.Registered != 0 || after.Errors != before.Errors {
			t.Fatalf("daemon after: %+v", after)
		}
	})
}
