package smbd_test

// An unmodified third-party SMB2 client, github.com/cloudsoda/go-smb2,
// running over our Conn against Linux ksmbd in the testbed VM: the proof
// that SMB2 code written for TCP runs on SMB Direct unchanged; then the
// same client through smb2rdma, so that ksmbd RDMA-writes READ data into
// our registered memory and RDMA-reads WRITE data from it.
// Opt-in with SMBDIRECT_VM=1; fails, never skips, when the VM cannot run.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	gosmb2 "github.com/cloudsoda/go-smb2"

	"github.com/smbdirect/smbdirect/internal/cputime"
	"github.com/smbdirect/smbdirect/internal/testbed"
	"github.com/smbdirect/smbdirect/smb2rdma"
	"github.com/smbdirect/smbdirect/smbd"
)

func TestLinuxGoSMB2(t *testing.T) {
	vm := testbed.StartT(t, testbed.Options{
		GuestScript: testbed.KsmbdGuest,
		// 445: ksmbd's SMB2 over TCP, the baseline of the cpu subtest.
		Forwards: []testbed.Forward{{GuestPort: 5445}, {GuestPort: 445}},
		Timeout:  360 * time.Second,
	})
	ctx, cancel := context.WithTimeout(t.Context(), 330*time.Second)
	defer cancel()
	defer os.WriteFile(vm.ShareDir()+"/done", nil, 0o644)
	if _, err := vm.WaitFor(ctx, "KSMBD_READY"); err != nil {
		t.Fatalf("ksmbd did not start: %v", err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(vm.HostPort(5445)))

	t.Run("plain", func(t *testing.T) {
		conn, err := smbd.Dial(ctx, addr, &smbd.Config{})
		if err != nil {
			t.Fatalf("SMB Direct to ksmbd: %v", err)
		}
		defer conn.Close()
		info := conn.Info()
		t.Logf("SMB Direct negotiated: %+v", info)
		share := testbed.MountShare(ctx, t, conn, addr)
		// Inline READ/WRITE: every PDU must fit ksmbd's MaxFragmentedSize
		// (173910 bytes; go-smb2 knows nothing of it).
		files := testbed.ExerciseShare(t, share, "plain-", []int{0, 1, 1000, 1364, 65536, 150_001})
		// A larger write does not fit: a clear error, not a hang.
		err = share.WriteFile("too-big.bin", make([]byte, 300_000), 0o644)
		// go-smb2 flattens the error to text, so check that.
		if err == nil || !strings.Contains(err.Error(), smbd.ErrMessageTooLarge.Error()) {
			t.Fatalf("300000-byte inline WRITE: %v, want smbd.ErrMessageTooLarge", err)
		}
		t.Logf("go-smb2 over SMB Direct: %d files written, read back and listed, checksums equal; a 300000-byte inline WRITE fails with %v", len(files), err)
	})

	t.Run("rdma-channel", func(t *testing.T) {
		conn, err := smbd.Dial(ctx, addr, &smbd.Config{})
		if err != nil {
			t.Fatalf("SMB Direct to ksmbd: %v", err)
		}
		oc := smb2rdma.Wrap(conn, nil)
		defer oc.Close()
		share := testbed.MountShare(ctx, t, oc, addr)
		sizes := []int{0, 1000, 4096, 300_001, 1 << 20, 4<<20 + 5000}
		files := testbed.ExerciseShare(t, share, "rdma-", sizes)
		st := oc.Stats()
		t.Logf("offload: %+v", st)
		// Each byte was written once and read back at least once by RDMA
		// (sizes >= 4096; go-smb2 splits at 1 MiB and no piece is below
		// 4096).
		var big uint64
		for _, n := range sizes {
			if n >= 4096 {
				big += uint64(n)
			}
		}
		if st.Writes == 0 || st.Reads == 0 || st.BytesFetched != big || st.BytesPlaced < big || st.PeerInvalidated != st.Reads+st.Writes {
			t.Fatalf("offload stats %+v: want %d bytes RDMA-read by ksmbd and at least that RDMA-written, every registration invalidated by ksmbd", st, big)
		}
		t.Logf("go-smb2 through smb2rdma: %d files; ksmbd RDMA-read %d bytes from us (SMB2 WRITE) and RDMA-wrote %d bytes into us (SMB2 READ) in %d+%d requests, each registration invalidated by ksmbd's Send with Invalidate; checksums equal",
			len(files), st.BytesFetched, st.BytesPlaced, st.Writes, st.Reads)
	})

	t.Run("cpu", func(t *testing.T) {
		cpuPerByte(ctx, t, addr, net.JoinHostPort("127.0.0.1", strconv.Itoa(vm.HostPort(445))))
	})
}

// cpuPerByte reads the same 64 MiB file from ksmbd with go-smb2 over TCP
// and through smb2rdma (ksmbd RDMA-writes the data into us over siw), in
// turns, and compares what each read cost this process in CPU time (user
// plus system, getrusage RUSAGE_SELF: qemu, which runs the guest and its
// siw, is a child process and not counted). Issue 11's target is a ratio
// of at most 1.3. This is a measurement, not a timed assertion: the
// machine running the tests is shared and its load moves single figures
// by 2x, so the test asserts what is behaviour (the data, and that it
// came by RDMA) and logs the figures for the record.
func cpuPerByte(ctx context.Context, t *testing.T, smbdAddr, tcpAddr string) {
	if _, ok := cputime.Process(); !ok {
		t.Fatal("no getrusage on this platform")
	}
	const size = 64 << 20
	tcpConn, err := (&net.Dialer{}).DialContext(ctx, "tcp", tcpAddr)
	if err != nil {
		t.Fatalf("TCP to ksmbd: %v", err)
	}
	tcpShare := testbed.MountShare(ctx, t, tcpConn, tcpAddr)
	conn, err := smbd.Dial(ctx, smbdAddr, &smbd.Config{})
	if err != nil {
		t.Fatalf("SMB Direct to ksmbd: %v", err)
	}
	oc := smb2rdma.Wrap(conn, nil)
	defer oc.Close()
	rdmaShare := testbed.MountShare(ctx, t, oc, smbdAddr)

	want := make([]byte, size)
	rand.NewChaCha8([32]byte{'c', 'p', 'u'}).Read(want)
	if err := tcpShare.WriteFile("cpu.bin", want, 0o644); err != nil {
		t.Fatalf("write cpu.bin: %v", err)
	}
	got := make([]byte, size)
	read := func(share *gosmb2.Share) (cpu, wall time.Duration, reads string) {
		clear(got)
		f, err := share.Open("cpu.bin")
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		c0, _ := cputime.Process()
		r0, b0 := cputime.Reads()
		start := time.Now()
		if _, err := io.ReadFull(f, got); err != nil {
			t.Fatalf("read cpu.bin: %v", err)
		}
		wall = time.Since(start)
		c1, _ := cputime.Process()
		r1, b1 := cputime.Reads()
		// How many read system calls it took: a receiver woken per
		// segment makes many small ones.
		reads = fmt.Sprintf("%d read calls, %d bytes each on average", r1-r0, (b1-b0)/max(r1-r0, 1))
		if !bytes.Equal(got, want) {
			t.Fatal("cpu.bin read back different")
		}
		return c1 - c0, wall, reads
	}
	before := oc.Stats().BytesPlaced
	// Turns, so that a change of the machine's load hits both alike.
	const rounds = 3
	var tcpCPU, rdmaCPU []time.Duration
	for i := range rounds {
		for j := range 2 {
			if (i+j)%2 == 0 {
				c, w, r := read(tcpShare)
				tcpCPU = append(tcpCPU, c)
				t.Logf("round %d: TCP  %v CPU, %v wall, %s", i, c, w.Round(time.Millisecond), r)
			} else {
				c, w, r := read(rdmaShare)
				rdmaCPU = append(rdmaCPU, c)
				t.Logf("round %d: RDMA %v CPU, %v wall, %s", i, c, w.Round(time.Millisecond), r)
			}
		}
	}
	if placed := oc.Stats().BytesPlaced - before; placed < rounds*size {
		t.Fatalf("ksmbd RDMA-wrote %d bytes into us, want at least %d: the reads did not go by RDMA", placed, rounds*size)
	}
	slices.Sort(tcpCPU)
	slices.Sort(rdmaCPU)
	tc, rc := tcpCPU[rounds/2], rdmaCPU[rounds/2]
	mbps := func(d time.Duration) float64 { return size / d.Seconds() / 1e6 }
	ratio := rc.Seconds() / tc.Seconds()
	t.Logf("CPU per byte, go-smb2 reading 64 MiB from ksmbd (median of %d): TCP %v (%.0f MB per CPU-second), RDMA channel %v (%.0f MB per CPU-second): RDMA/TCP = %.2f (target <= 1.3)",
		rounds, tc, mbps(tc), rc, mbps(rc), ratio)
}
