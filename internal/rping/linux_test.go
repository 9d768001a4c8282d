package rping

// Interop with Linux: rdma-core's rping on the kernel's soft-iWARP (siw) in
// the testbed VM, against our rping on our soft-iWARP, in both roles, with
// and without MPA CRC. Opt-in with SMBDIRECT_VM=1 (scripts/test.sh sets it);
// they fail, never skip, when the VM cannot run.

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/smbdirect/smbdirect/internal/testbed"
	"github.com/smbdirect/smbdirect/iwarp"
	"github.com/smbdirect/smbdirect/rdma"
)

const siwUp = "rdma link add siw0 type siw netdev eth0 || exit 90\n"

// linuxClientToUs runs Linux's rping client in the guest against our server
// on the host and returns both sides' verbose output and our stats.
func linuxClientToUs(t *testing.T, crc bool, size, count int, verbose bool) (Stats, string, string) {
	port, err := testbed.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	pd, _ := iwarp.New(iwarp.Config{CRC: crc}).NewPD()
	ln, err := pd.Listen(ctx, net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), rdma.ListenConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	v := ""
	if verbose {
		v = "-v"
	}
	vm := testbed.StartT(t, testbed.Options{
		Timeout: 10 * time.Minute,
		GuestScript: siwUp + fmt.Sprintf("rping -c -a %s -p %d -C %d -S %d -V %s\n",
			testbed.HostIP, port, count, size, v),
	})
	var ours bytes.Buffer
	opt := Options{Size: size}
	if verbose {
		opt.Verbose = &ours
	}
	st, err := Serve(ctx, pd, ln, opt)
	if err != nil {
		t.Fatalf("our server: %v", err)
	}
	res, err := vm.Wait()
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("Linux rping client: exit %d, %v:\n%s", res.ExitCode, err, res.Output)
	}
	return st, ours.String(), res.Output
}

// usToLinuxServer runs our client on the host against Linux's rping server.
func usToLinuxServer(t *testing.T, crc bool, size, count int, verbose bool) (Stats, string, string) {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	v := ""
	if verbose {
		v = "-v"
	}
	vm := testbed.StartT(t, testbed.Options{
		Timeout:  10 * time.Minute,
		Forwards: []testbed.Forward{{GuestPort: DefaultPort}},
		GuestScript: siwUp + fmt.Sprintf("rping -s -a %s -p %d -S %d %s &\npid=$!\nsleep 1\necho RPING_READY\nwait $pid\n",
			testbed.GuestIP, DefaultPort, size, v),
	})
	if _, err := vm.WaitFor(ctx, "RPING_READY"); err != nil {
		t.Fatalf("guest rping server did not start: %v", err)
	}
	pd, _ := iwarp.New(iwarp.Config{CRC: crc}).NewPD()
	var ours bytes.Buffer
	opt := Options{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(vm.HostPort(DefaultPort))),
		Size: size, Count: count, Validate: true}
	if verbose {
		opt.Verbose = &ours
	}
	st, err := Client(ctx, pd, opt)
	if err != nil {
		t.Fatalf("our client: %v\nguest:\n%s", err, vm.Output())
	}
	res, err := vm.Wait()
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("Linux rping server: exit %d, %v:\n%s", res.ExitCode, err, res.Output)
	}
	return st, ours.String(), res.Output
}

var crcModes = []struct {
	name string
	crc  bool
}{{"nocrc", false}, {"crc", true}}

// TestLinuxRpingClient: Linux rping -c (siw) against our rping server.
func TestLinuxRpingClient(t *testing.T) {
	for _, m := range crcModes {
		t.Run(m.name, func(t *testing.T) {
			const count, size = 20, 1000
			st, ours, guest := linuxClientToUs(t, m.crc, size, count, true)
			if st.Pings != count || st.Validated != count || st.CRC != m.crc {
				t.Fatalf("our server: %+v", st)
			}
			// Both sides printed the same ping data.
			for i := 0; i < count; i++ {
				b := make([]byte, size)
				Fill(b, i)
				line := string(cstring(b))
				if !strings.Contains(ours, "server ping data: "+line+"\n") {
					t.Fatalf("our server did not print ping %d", i)
				}
				if !strings.Contains(guest, "ping data: "+line) {
					t.Fatalf("Linux rping did not print ping %d:\n%s", i, guest)
				}
			}
		})
	}
}

// TestLinuxRpingServer: our rping client against Linux rping -s (siw).
func TestLinuxRpingServer(t *testing.T) {
	for _, m := range crcModes {
		t.Run(m.name, func(t *testing.T) {
			const count, size = 20, 4000 // a 4000-byte ping crosses as several FPDUs from siw
			st, ours, guest := usToLinuxServer(t, m.crc, size, count, true)
			if st.Pings != count || st.Validated != count || st.CRC != m.crc {
				t.Fatalf("our client: %+v", st)
			}
			if !strings.Contains(guest, "server ping data: rdma-ping-19: ") || !strings.Contains(ours, "ping data: rdma-ping-19: ") {
				t.Fatalf("ping data missing:\nours:\n%.300s\nguest:\n%s", ours, guest)
			}
		})
	}
}

// TestLinuxRpingBulk moves more than 64 MiB each way in 64 KiB pings, every
// byte checked: Linux client to our server (our server checks each ping's
// pattern, rping -V checks what we wrote back), and our client to Linux's
// server with CRC (our -V).
func TestLinuxRpingBulk(t *testing.T) {
	const size, count = MaxSize, 1100 // 1100 * 65535 B = 68.8 MiB each way
	t.Run("linux-client", func(t *testing.T) {
		start := time.Now()
		st, _, _ := linuxClientToUs(t, false, size, count, false)
		if st.Pings != count || st.Validated != count || st.BytesRead < 64<<20 || st.BytesWritten < 64<<20 {
			t.Fatalf("our server: %+v", st)
		}
		t.Logf("%d MiB read and %d MiB written, checked, in %v", st.BytesRead>>20, st.BytesWritten>>20, time.Since(start).Round(time.Millisecond))
	})
	t.Run("linux-server-crc", func(t *testing.T) {
		start := time.Now()
		st, _, _ := usToLinuxServer(t, true, size, count, false)
		if st.Pings != count || st.Validated != count || st.BytesRead < 64<<20 || !st.CRC {
			t.Fatalf("our client: %+v", st)
		}
		t.Logf("%d MiB each way with CRC, checked, in %v", st.BytesRead>>20, time.Since(start).Round(time.Millisecond))
	})
}
