//go:build !verbs

package verbs

// TestVMVerbs builds this package's test binary with cgo and -tags verbs
// and runs its guest tests (guest_test.go) inside the testbed VM, in one
// boot, against Linux's own RDMA tools. Opt-in with SMBDIRECT_VM=1
// (scripts/test.sh sets it); it fails, never skips, when it cannot run.

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/smbdirect/smbdirect/internal/testbed"
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
step() { echo "VERBS_STEP $1"; }
rdma link add rxe0 type rxe netdev eth0 || exit 90
export VERBS_DEVICE=rxe0
step rxe-rping-linux-server
rping -s -a 10.0.2.15 -p 7174 -S 4000 -v & pid=$!
sleep 1
VERBS_ADDR=10.0.2.15:7174 VERBS_COUNT=20 VERBS_SIZE=4000 ./verbs.test -test.v -test.run '^TestGuestRpingClient$' || exit 91
wait $pid || exit 92
step rxe-rping-linux-client
rm -f /tmp/ready
VERBS_LISTEN=10.0.2.15:7175 VERBS_COUNT=20 VERBS_SIZE=1000 VERBS_READY_FILE=/tmp/ready ./verbs.test -test.v -test.run '^TestGuestRpingServer$' & pid=$!
i=0; while [ ! -e /tmp/ready ]; do [ $i -lt 600 ] || exit 93; sleep 0.1; i=$((i+1)); done
rping -c -a 10.0.2.15 -p 7175 -C 20 -S 1000 -V -v || exit 94
wait $pid || exit 95
step rxe-conformance
VERBS_LISTEN=10.0.2.15:0 ./verbs.test -test.v -test.run '^TestGuestConformance$' || exit 96
step done
`

var passRE = regexp.MustCompile(`(?m)^--- PASS: (TestGuest\w+)`)

func TestVMVerbs(t *testing.T) {
	testbed.Require(t)
	share := t.TempDir()
	buildGuestTests(t, share)
	vm := testbed.StartT(t, testbed.Options{ShareDir: share, Timeout: 15 * time.Minute, GuestScript: rxeGuest})
	res, err := vm.Wait()
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("guest: exit %d, %v:\n%s", res.ExitCode, err, res.Output)
	}
	passed := map[string]int{}
	for _, m := range passRE.FindAllStringSubmatch(res.Output, -1) {
		passed[m[1]]++
	}
	if passed["TestGuestRpingClient"] != 1 || passed["TestGuestRpingServer"] != 1 || passed["TestGuestConformance"] != 1 {
		t.Fatalf("guest tests passed: %v\n%s", passed, res.Output)
	}
	// Linux's rping printed every ping it exchanged with ours.
	if !strings.Contains(res.Output, "rdma-ping-19: ") {
		t.Fatalf("no rping data in the output:\n%s", res.Output)
	}
	t.Logf("guest:\n%s", res.Output)
}
