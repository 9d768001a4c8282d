package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/smbdirect/smbdirect/internal/syncbuf"
	"github.com/smbdirect/smbdirect/internal/testbed"
)

// TestLinuxCifsConnects: Linux cifs.ko (mount -t cifs -o rdma) in the VM
// connects over siw to our `smbdirect listen` on the host: it must
// negotiate SMB Direct with us and its SMB2 NEGOTIATE must arrive intact.
// The mount itself fails: nothing here answers SMB2.
func TestLinuxCifsConnects(t *testing.T) {
	testbed.Require(t)
	// cifs.ko always dials port 5445 for SMB Direct first: a fixed port, which a
	// run of this test elsewhere on the machine must not hold at the same time.
	// The test's time starts once it holds the port (the wait may be minutes).
	testbed.LockHostPort(t, 5445)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	out := &syncbuf.Buffer{}
	errb := &syncbuf.Buffer{}
	lctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- run(lctx, []string{"listen", "--dump", "127.0.0.1:5445"}, out, errb) }()
	for !strings.Contains(errb.String(), "listening") {
		select {
		case err := <-done:
			t.Fatalf("listen: %v\n%s", err, errb.String())
		case <-time.After(10 * time.Millisecond):
		}
	}
	vm := testbed.StartT(t, testbed.Options{
		Timeout: 2 * time.Minute,
		GuestScript: `rdma link add siw0 type siw netdev eth0 || exit 90
mkdir -p /mnt/c
timeout -s KILL 60 mount -t cifs //10.0.2.2/share /mnt/c -o rdma,vers=3.0,username=tester,password=secret,ip=10.0.2.2
echo MOUNT_EXIT=$?
`,
	})
	deadline := time.After(90 * time.Second)
	for !strings.Contains(out.String(), "NEGOTIATE") {
		select {
		case <-deadline:
			t.Fatalf("no SMB2 NEGOTIATE from cifs.ko; listen output:\n%s\n%s\nguest:\n%s", out.String(), errb.String(), vm.Output())
		case <-time.After(50 * time.Millisecond):
		}
	}
	stop()
	if err := <-done; err != nil {
		t.Fatalf("listen: %v", err)
	}
	got := out.String()
	if !strings.Contains(got, "SMB Direct negotiated") || !strings.Contains(got, "dialects") || !strings.Contains(got, "3.0") {
		t.Fatalf("listen output:\n%s", got)
	}
	t.Logf("cifs.ko over siw to our listener:\n%s", got)
}
