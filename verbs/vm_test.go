//go:build !verbs

package verbs

// TestVMVerbs builds this package's test binary with cgo and -tags verbs
// and runs its guest tests (guest_test.go) inside the testbed VM, in one
// boot, against Linux's own RDMA tools. Opt-in with SMBDIRECT_VM=1
// (scripts/test.sh sets it); it fails, never skips, when it cannot run.

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/smbdirect/smbdirect/internal/rping"
	"github.com/smbdirect/smbdirect/internal/testbed"
	"github.com/smbdirect/smbdirect/iwarp"
	"github.com/smbdirect/smbdirect/rdma"
)

// buildGuestTests builds the verbs test binary into dir.
func buildGuestTests(t *testing.T, dir string) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), "go", "test", "-c", "-tags", "verbs", "-o", filepath.Join(dir, "verbs.test"), ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the verbs tests (needs libibverbs-dev and librdmacm-dev): %v\n%s", err, out)
	}
}

// rxeGuest: (a) on soft-RoCE, our verbs provider against rdma-core's
// rping, both ways, in the guest (RoCE does not reach the host).
const rxeGuest = `
cd /mnt/work
RXE_CONFORMANCE='^TestGuestConformance$/^(ConnectParams|RemoteAccess|QueueFullAndUnsignaled|LocalProtection|DisconnectFlushes|CloseFlushes|ConnectErrors|PeerSendRecv)$'
SIW_CONFORMANCE='^TestGuestConformance$/^(ConnectParams|QueueFullAndUnsignaled|LocalProtection|DisconnectFlushes|CloseFlushes|ConnectErrors|PeerSendRecv)$' 
step() { echo "VERBS_STEP $1"; }
rdma link add rxe0 type rxe netdev eth0 || exit 90
export VERBS_DEVICE=rxe0
step rxe-rping-linux-server
rping -s -a 10.0.2.15 -p 7174 -S 4000 -V & pid=$!
sleep 1
VERBS_ADDR=10.0.2.15:7174 VERBS_COUNT=20 VERBS_SIZE=4000 VERBS_QUIET=1 ./verbs.test -test.v -test.timeout 4m -test.run '^TestGuestRpingClient$' || exit 91
wait $pid || exit 92
step rxe-rping-linux-client
rm -f /tmp/ready
VERBS_LISTEN=10.0.2.15:7175 VERBS_COUNT=20 VERBS_SIZE=1000 VERBS_READY_FILE=/tmp/ready ./verbs.test -test.v -test.timeout 4m -test.run '^TestGuestRpingServer$' & pid=$!
i=0; while [ ! -e /tmp/ready ]; do [ $i -lt 600 ] || exit 93; sleep 0.1; i=$((i+1)); done
rping -c -a 10.0.2.15 -p 7175 -C 20 -S 1000 -V -v || exit 94
wait $pid || exit 95
step rxe-conformance
VERBS_LISTEN=10.0.2.15:0 ./verbs.test -test.v -test.timeout 4m -test.run "$RXE_CONFORMANCE" || exit 96
step rxe-faults
VERBS_RNR=1 VERBS_LISTEN=10.0.2.15:0 ./verbs.test -test.v -test.timeout 4m -test.run '^TestGuestFaults$' || exit 120
VERBS_LISTEN=10.0.2.15:0 ./verbs.test -test.v -test.timeout 4m -test.run '^TestGuestAllocs$' || exit 126
step rxe-ksmbd
ksmbd.adduser -a tester -p secret >/dev/null || exit 110
mkdir -p /etc/ksmbd /srv/share && chmod 1777 /srv/share
printf '[global]\n\tserver min protocol = SMB2_10\n[share]\n\tpath = /srv/share\n\tread only = no\n\tvalid users = tester\n' > /etc/ksmbd/ksmbd.conf
ksmbd.mountd || exit 111
VERBS_SMB_ADDR=10.0.2.15:445 ./verbs.test -test.v -test.timeout 4m -test.run '^TestGuestKsmbd$' || exit 112
step rxe-daemon
VERBS_SMB_ADDR=10.0.2.15:445 ./verbs.test -test.v -test.timeout 4m -test.run '^TestGuestDaemon$' || exit 117
ksmbd.control -s || exit 113
rdma link delete rxe0 || exit 97
rdma link add siw0 type siw netdev eth0 || exit 98
export VERBS_DEVICE=siw0
step siw-conformance
VERBS_LISTEN=10.0.2.15:0 ./verbs.test -test.v -test.timeout 4m -test.run "$SIW_CONFORMANCE" || exit 99
step siw-to-host-iwarp
VERBS_ADDR=10.0.2.2:$HOST_PORT_NOCRC VERBS_COUNT=20 VERBS_SIZE=4000 VERBS_QUIET=1 ./verbs.test -test.v -test.timeout 4m -test.run '^TestGuestRpingClient$' || exit 100
VERBS_ADDR=10.0.2.2:$HOST_PORT_CRC VERBS_COUNT=20 VERBS_SIZE=4000 VERBS_QUIET=1 ./verbs.test -test.v -test.timeout 4m -test.run '^TestGuestRpingClient$' || exit 101
step host-iwarp-to-siw
VERBS_LISTEN=10.0.2.15:7176 VERBS_COUNT=20 VERBS_SIZE=4000 ./verbs.test -test.v -test.timeout 4m -test.run '^TestGuestRpingServer$' || exit 102
VERBS_LISTEN=10.0.2.15:7177 VERBS_COUNT=20 VERBS_SIZE=4000 ./verbs.test -test.v -test.timeout 4m -test.run '^TestGuestRpingServer$' || exit 103
step siw-ksmbd
rm -rf /srv/share/*
ksmbd.mountd || exit 114
i=0; while ! grep -q '^ *[0-9]*: [0-9A-F]*:1545 00000000:0000 0A ' /proc/net/tcp; do
  [ $i -lt 600 ] || { echo "ksmbd is not listening on 5445 after 60 s"; dmesg | tail -n 20; exit 115; }
  sleep 0.1; i=$((i+1))
done
VERBS_SMB_ADDR=10.0.2.15:5445 ./verbs.test -test.v -test.timeout 4m -test.run '^TestGuestKsmbd$' || exit 116
step siw-faults
VERBS_LISTEN=10.0.2.15:0 ./verbs.test -test.v -test.timeout 4m -test.run '^TestGuestFaults$' || exit 121
step done
`

var passRE = regexp.MustCompile(`(?m)^--- PASS: (TestGuest\w+)`)

func TestVMVerbs(t *testing.T) {
	testbed.Require(t)
	share := t.TempDir()
	buildGuestTests(t, share)
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Minute)
	defer cancel()
	// (b) our pure-Go iwarp on the host against verbs on the guest's
	// kernel siw: the host serves the guest's client without and with
	// MPA CRC, then dials the guest's server both ways.
	const count, size = 20, 4000
	type served struct {
		st  rping.Stats
		err error
	}
	serve := func(crc bool) (int, chan served) {
		pd, _ := iwarp.New(iwarp.Config{CRC: crc}).NewPD()
		ln, err := pd.Listen(ctx, "127.0.0.1:0", rdma.ListenConfig{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		ch := make(chan served, 1)
		go func() {
			st, err := rping.Serve(ctx, pd, ln, rping.Options{Size: size})
			ch <- served{st, err}
		}()
		return ln.Addr().(*net.TCPAddr).Port, ch
	}
	pNo, servedNo := serve(false)
	pCRC, servedCRC := serve(true)
	script := fmt.Sprintf("HOST_PORT_NOCRC=%d\nHOST_PORT_CRC=%d\n", pNo, pCRC) + rxeGuest
	opts := testbed.Options{ShareDir: share, Timeout: 15 * time.Minute, GuestScript: script,
		Forwards: []testbed.Forward{{GuestPort: 7176}, {GuestPort: 7177}}}
	if f := os.Getenv("VERBS_VM_LOG"); f != "" {
		// The console as it comes, for watching a run by hand.
		lf, err := os.Create(f)
		if err != nil {
			t.Fatal(err)
		}
		defer lf.Close()
		opts.Log = lf
	}
	vm := testbed.StartT(t, opts)
	var res testbed.Result
	var vmErr error
	ended := make(chan struct{})
	go func() {
		res, vmErr = vm.Wait()
		close(ended)
	}()
	for _, s := range []struct {
		name string
		ch   chan served
		crc  bool
	}{{"nocrc", servedNo, false}, {"crc", servedCRC, true}} {
		select {
		case r := <-s.ch:
			if r.err != nil || r.st.Pings != count || r.st.Validated != count || r.st.CRC != s.crc {
				t.Fatalf("host iwarp rping server (%s) for the guest's verbs client on siw: %+v, %v\n%s", s.name, r.st, r.err, vm.Output())
			}
		case <-ctx.Done():
			t.Fatalf("host iwarp rping server (%s): %v\n%s", s.name, ctx.Err(), vm.Output())
		case <-ended:
			t.Fatalf("the guest ended before connecting to the host iwarp rping server (%s): exit %d, %v\n%s", s.name, res.ExitCode, vmErr, res.Output)
		}
	}
	for _, c := range []struct {
		port int
		crc  bool
	}{{7176, false}, {7177, true}} {
		if _, err := vm.WaitFor(ctx, fmt.Sprintf("VERBS_RPING_READY 10.0.2.15:%d", c.port)); err != nil {
			t.Fatal(err)
		}
		pd, _ := iwarp.New(iwarp.Config{CRC: c.crc}).NewPD()
		st, err := rping.Client(ctx, pd, rping.Options{Addr: fmt.Sprintf("127.0.0.1:%d", vm.HostPort(c.port)),
			Size: size, Count: count, Validate: true})
		if err != nil || st.Pings != count || st.Validated != count || st.CRC != c.crc {
			t.Fatalf("host iwarp rping client (crc %v) to the guest's verbs server on siw: %+v, %v\n%s", c.crc, st, err, vm.Output())
		}
	}
	<-ended
	if vmErr != nil || res.ExitCode != 0 {
		t.Fatalf("guest: exit %d, %v:\n%s", res.ExitCode, vmErr, res.Output)
	}
	passed := map[string]int{}
	for _, m := range passRE.FindAllStringSubmatch(res.Output, -1) {
		passed[m[1]]++
	}
	if passed["TestGuestRpingClient"] != 3 || passed["TestGuestRpingServer"] != 3 || passed["TestGuestConformance"] != 2 || passed["TestGuestKsmbd"] != 2 ||
		passed["TestGuestFaults"] != 2 || passed["TestGuestAllocs"] != 1 || passed["TestGuestDaemon"] != 1 {
		t.Fatalf("guest tests passed: %v\n%s", passed, res.Output)
	}
	// Linux's rping printed every ping it exchanged with ours.
	if !strings.Contains(res.Output, "rdma-ping-19: ") {
		t.Fatalf("no rping data in the output:\n%s", res.Output)
	}
	for _, l := range strings.Split(res.Output, "\n") {
		if strings.Contains(l, "VERBS_") {
			t.Log(strings.TrimSpace(l))
		}
	}
}
