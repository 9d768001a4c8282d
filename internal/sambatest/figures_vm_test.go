//go:build linux

package sambatest

// TestVMFigures: cifs.ko reading and writing a 64 MiB file, timed by wall clock in the guest, against the
// host's Samba over TCP and against the guest's own ksmbd over TCP and over siw, all in one boot. The
// guest is emulated (TCG) on a shared machine, so only ratios mean anything; the table gives each
// server's time relative to ksmbd over TCP, and Samba over SMB Direct (under smbdirect exec) against Samba
// over TCP as a throughput ratio. To add a row, add a mount to figureTargets.
//
//	SMBDIRECT_VM=1 go test -count=1 -v -run TestVMFigures ./internal/sambatest
//
// SMBDIRECT_FIGURES_REPS sets the repetitions (default 3; the median counts).

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/smbdirect/smbdirect/internal/testbed"
)

// A figureTarget is a mount to time: label, the UNC path and mount options (cache=none is added).
type figureTarget struct {
	label, unc, opts string
}

// figureTargets are the mounts to time; direct is Samba under smbdirect exec .
func figureTargets(samba *Server, direct *directServer) []figureTarget {
	cred := func(u, p string) string { return "username=" + u + ",password=" + p + ",cache=none" }
	t := []figureTarget{
		// The baseline first: the ratios are against it.
		{"ksmbd-tcp", "//" + testbed.GuestIP + "/share", "vers=3.1.1," + cred("tester", "secret")},
		{"ksmbd-siw", "//" + testbed.GuestIP + "/share", "vers=3.1.1,rdma," + cred("tester", "secret")},
		{"samba-tcp", "//" + testbed.HostIP + "/share", fmt.Sprintf("vers=3.1.1,port=%d,", samba.Port()) + cred(samba.User(), samba.Password())},
	}
	if direct != nil {
		// Samba under smbdirect exec, the daemon doing the RDMA: cifs.ko over siw to the host's 5445.
		t = append(t, figureTarget{"samba-rdma", "//" + testbed.HostIP + "/share", "vers=3.1.1,rdma,port=5445," + cred(direct.samba.User(), direct.samba.Password())})
	}
	return t
}

// figuresGuest times, per target and repetition, dd writing 64 MiB with conv=fsync and dd reading it back
// (cache=none: every byte crosses the wire), printing "FIG <label> write|read <rep> <seconds>" from
// /proc/uptime (10 ms steps; a transfer takes seconds).
func figuresGuest(targets []figureTarget, reps int) string {
	var b strings.Builder
	// KsmbdGuest leaves the VM up until /mnt/work/done, which the test creates before the boot.
	b.WriteString(testbed.KsmbdGuest)
	// ksmbd's TCP listener (445) is an IPv6 socket taking IPv4 too.
	b.WriteString(`i=0; while ! grep -q '^ *[0-9]*: [0-9A-F]*:01BD [0:]* 0A ' /proc/net/tcp /proc/net/tcp6; do
  [ $i -lt 600 ] || { echo "ksmbd is not listening on 445"; cat /proc/net/tcp /proc/net/tcp6; exit 94; }
  sleep 0.1; i=$((i+1))
done
head -c 67108864 /dev/urandom > /tmp/fig.src || exit 95
now() { cut -d' ' -f1 /proc/uptime; }
# The guest's CPU time by kind, in ticks: user+nice, system, irq+softirq, idle+iowait.
cpu() { head -n1 /proc/stat | awk '{print $2+$3, $4, $7+$8, $5+$6}'; }
# cpudelta LABEL DIR REP BEFORE: prints "CPU <label> <dir> <rep> user sys irq idle" (ticks since BEFORE).
cpudelta() { echo "$4 $(cpu)" | awk -v l="$1 $2 $3" '{print "CPU", l, $5-$1, $6-$2, $7-$3, $8-$4}'; }
# fig LABEL UNC OPTIONS REPS
fig() {
  mkdir -p /mnt/fig
  timeout -s KILL 120 mount -t cifs $2 /mnt/fig -o "$3" || { echo "FIG $1 mount failed"; return 1; }
  r=1; while [ $r -le $4 ]; do
    c0=$(cpu); t0=$(now); dd if=/tmp/fig.src of=/mnt/fig/fig.bin bs=1M conv=fsync 2>/dev/null || return 1; t1=$(now)
    echo "FIG $1 write $r $(awk "BEGIN {print $t1 - $t0}")"; cpudelta $1 write $r "$c0"
    c0=$(cpu); t0=$(now); dd if=/mnt/fig/fig.bin of=/dev/null bs=1M 2>/dev/null || return 1; t1=$(now)
    echo "FIG $1 read $r $(awk "BEGIN {print $t1 - $t0}")"; cpudelta $1 read $r "$c0"
    rm /mnt/fig/fig.bin || return 1
    r=$((r+1))
  done
  grep -A3 SMBDirect /proc/fs/cifs/DebugData
  umount /mnt/fig
}
`)
	for _, t := range targets {
		fmt.Fprintf(&b, "fig %s %s '%s' %d || exit 1\n", t.label, t.unc, t.opts, reps)
	}
	return b.String()
}

var (
	figRE = regexp.MustCompile(`(?m)^FIG (\S+) (write|read) (\d+) ([0-9.]+)$`)
	cpuRE = regexp.MustCompile(`(?m)^CPU \S+ (write|read) \d+ .*$`)
)

func TestVMFigures(t *testing.T) {
	testbed.Require(t)
	reps := 3
	if v := os.Getenv("SMBDIRECT_FIGURES_REPS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("SMBDIRECT_FIGURES_REPS=%q", v)
		}
		reps = n
	}
	samba := StartT(t, Options{})
	share := t.TempDir()
	if err := os.WriteFile(filepath.Join(share, "done"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	direct := startDirect(t, samba.User(), samba.Password())
	targets := figureTargets(samba, direct)
	vm := testbed.StartT(t, testbed.Options{GuestScript: figuresGuest(targets, reps), ShareDir: share,
		Timeout: 10 * time.Minute, Mem: 1024})
	res, err := vm.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if res.ExitCode != 0 {
		t.Fatalf("GUEST_EXIT=%d:\n%s", res.ExitCode, res.Output)
	}
	secs := map[string][]float64{} // label + " " + direction
	for _, m := range figRE.FindAllStringSubmatch(res.Output, -1) {
		v, err := strconv.ParseFloat(m[4], 64)
		if err != nil || v <= 0 {
			t.Fatalf("bad figure %q", m[0])
		}
		secs[m[1]+" "+m[2]] = append(secs[m[1]+" "+m[2]], v)
	}
	median := func(k string) float64 {
		v := slices.Clone(secs[k])
		if len(v) != reps {
			t.Fatalf("%s: %d figures, want %d", k, len(v), reps)
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	base := targets[0].label
	var tab strings.Builder
	fmt.Fprintf(&tab, "cifs.ko, 64 MiB, cache=none, median of %d, time relative to %s (lower is faster)\n", reps, base)
	fmt.Fprintf(&tab, "%-12s %8s %8s\n", "server", "write", "read")
	for _, tg := range targets {
		w, r := median(tg.label+" write"), median(tg.label+" read")
		fmt.Fprintf(&tab, "%-12s %8.2f %8.2f\n", tg.label, w/median(base+" write"), r/median(base+" read"))
	}
	if direct != nil {
		// The question: Samba over SMB Direct against the same Samba over TCP, as throughput.
		for _, dir := range []string{"write", "read"} {
			fmt.Fprintf(&tab, "samba-rdma / samba-tcp throughput, %s: %.2fx\n", dir, median("samba-tcp "+dir)/median("samba-rdma "+dir))
		}
	}
	for _, tg := range targets {
		t.Logf("%s seconds: write %v, read %v", tg.label, secs[tg.label+" write"], secs[tg.label+" read"])
	}
	// Where the time goes: the guest's CPU ticks (100/s per vCPU) by kind during each transfer, and the
	// host daemon's CPU time. The guest's vCPUs and the host's processes share the same host cores.
	for _, m := range cpuRE.FindAllString(res.Output, -1) {
		t.Log(m)
	}
	if direct != nil {
		if cs, err := cpuSeconds(direct.pid); err == nil {
			var wall float64
			for _, v := range append(secs["samba-rdma write"], secs["samba-rdma read"]...) {
				wall += v
			}
			t.Logf("smbdirectd used %.2f s of CPU in all (samba-rdma transfers took %.1f s of guest wall time)", cs, wall)
		}
	}
	t.Logf("\n%s", tab.String())
}
