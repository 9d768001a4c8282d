//go:build !verbs

package verbs

// TestFiguresVerbs measures, in one boot of the testbed VM, smbdirect
// bench rdma on the verbs provider (rxe and siw) next to the pure-Go
// provider and TCP, and rdma-core's perftest on the same devices. It is
// run by hand for docs/verbs.md (its name keeps it out of CI's VM step):
//
//	SMBDIRECT_VM=1 go test -run TestFiguresVerbs -v ./verbs
//
// perftest reads its clock from the TSC, which reads 0 under qemu's TCG:
// its runs are timed here by the host's wall clock, between markers the
// guest prints around each.

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/smbdirect/smbdirect/internal/testbed"
)

const figuresGuest = `
cd /mnt/work
mark() { echo "FIG_MARK $1 $(cut -d' ' -f1 /proc/uptime)"; }
bench() { ./smbdirect bench rdma --sizes 1048576 --duration 3s --depth 8 "$@" 2>&1 | sed 's/^/BENCH /'; }
perf() { # device, tool, extra flags
  $2 -d $1 -s 1048576 -n $N $3 >/dev/null 2>&1 & s=$!
  sleep 2
  mark "start $1 $2 $3"
  $2 -d $1 -s 1048576 -n $N $3 10.0.2.15 >/tmp/perf.out 2>&1; st=$?
  mark "end $1 $2 $3"
  wait $s
  # Under TCG perftest's clock reads 0: it moves the data, then says
  # "Can't produce a report" and exits 1. The data moved if it got to its
  # table's header.
  grep -q '#bytes' /tmp/perf.out || { echo "perftest status $st:"; cat /tmp/perf.out; exit 20; }
}
N=200
echo "PERF_BYTES $((N*1048576))"
echo "== pure-Go iwarp over the guest's loopback"
bench
rdma link add rxe0 type rxe netdev eth0 || exit 10
echo "== verbs rxe0"
bench --provider verbs --device rxe0 --local 10.0.2.15
perf rxe0 ib_write_bw ""
perf rxe0 ib_read_bw ""
rdma link delete rxe0 || exit 11
rdma link add siw0 type siw netdev eth0 || exit 12
echo "== verbs siw0"
bench --provider verbs --device siw0 --local 10.0.2.15
perf siw0 ib_write_bw "-R"
perf siw0 ib_read_bw "-R"
echo FIG_DONE
`

func TestFiguresVerbs(t *testing.T) {
	testbed.Require(t)
	share := t.TempDir()
	build := exec.CommandContext(t.Context(), "go", "build", "-tags", "verbs", "-o", filepath.Join(share, "smbdirect"), "../cmd/smbdirect")
	build.Env = append(os.Environ(), "CGO_ENABLED=1")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building smbdirect with -tags verbs: %v\n%s", err, out)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	// Console lines with the host's time of arrival.
	type line struct {
		at   time.Time
		text string
	}
	lines := make(chan line, 1024)
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			lines <- line{time.Now(), sc.Text()}
		}
		close(lines)
	}()
	vm := testbed.StartT(t, testbed.Options{ShareDir: share, Timeout: 30 * time.Minute, GuestScript: figuresGuest, Log: w})
	res, err := vm.Wait()
	w.Close()
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("guest: exit %d, %v\n%s", res.ExitCode, err, res.Output)
	}
	var bytes float64
	start := map[string]line{}
	for l := range lines {
		f := strings.Fields(l.text)
		switch {
		case len(f) == 2 && f[0] == "PERF_BYTES":
			fmt.Sscan(f[1], &bytes)
		case strings.HasPrefix(l.text, "== ") || strings.HasPrefix(l.text, "BENCH "):
			t.Log(l.text)
		case len(f) >= 4 && f[0] == "FIG_MARK":
			name := strings.Join(f[2:len(f)-1], " ")
			var up float64
			fmt.Sscan(f[len(f)-1], &up)
			if f[1] == "start" {
				start[name] = l
				continue
			}
			s := start[name]
			var up0 float64
			sf := strings.Fields(s.text)
			fmt.Sscan(sf[len(sf)-1], &up0)
			wall := l.at.Sub(s.at).Seconds()
			t.Logf("perftest %-28s %7.1f MiB/s by the host's wall clock (%.2f s; the guest's clock said %.2f s)",
				name, bytes/(1<<20)/wall, wall, up-up0)
		}
	}
}
