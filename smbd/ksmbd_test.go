package smbd

// Interop with Linux ksmbd (SMB Direct over siw) in the testbed VM.
// Opt-in with SMBDIRECT_VM=1; fails, never skips, when the VM cannot run.

import (
	"context"
	"net"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/smbdirect/smbdirect/internal/smb2"
	"github.com/smbdirect/smbdirect/internal/testbed"
)

func TestLinuxKsmbdNegotiate(t *testing.T) {
	vm := testbed.StartT(t, testbed.Options{
		GuestScript: testbed.KsmbdGuest,
		Forwards:    []testbed.Forward{{GuestPort: 5445}},
	})
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	defer func() { writeDone(t, vm) }()
	if _, err := vm.WaitFor(ctx, "KSMBD_READY"); err != nil {
		t.Fatalf("ksmbd did not start: %v", err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(vm.HostPort(5445)))
	c, err := Dial(ctx, addr, nil)
	if err != nil {
		t.Fatalf("SMB Direct to ksmbd: %v", err)
	}
	defer c.Close()
	info := c.Info()
	t.Logf("negotiated with ksmbd: %+v", info)
	if info.MaxSendSize < 128 || info.MaxFragmentedSend < 131072 || info.SendCredits < 1 {
		t.Fatalf("negotiated values: %+v", info)
	}
	c.SetDeadline(time.Now().Add(60 * time.Second))
	var guid [16]byte
	copy(guid[:], "smbdirect-test")
	req := smb2.AppendNegotiateRequest(nil, 0, guid, []uint16{smb2.Dialect202, smb2.Dialect210, smb2.Dialect300, smb2.Dialect302})
	if err := c.WriteMessage(req); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<16)
	n, err := c.ReadMessage(buf)
	if err != nil {
		t.Fatalf("reading the NEGOTIATE response: %v", err)
	}
	neg, err := smb2.ParseNegotiateResponse(buf[:n])
	if err != nil || neg.Status != 0 {
		t.Fatalf("NEGOTIATE response %+v, %v: % x", neg, err, buf[:min(n, 80)])
	}
	dialect := neg.Dialect
	if dialect != smb2.Dialect302 {
		t.Fatalf("ksmbd chose dialect 0x%04x, want 0x0302", dialect)
	}
	t.Logf("ksmbd chose SMB dialect 0x%04x over SMB Direct", dialect)
}

func writeDone(t *testing.T, vm *testbed.VM) {
	t.Helper()
	if err := os.WriteFile(vm.ShareDir()+"/done", nil, 0o644); err != nil {
		t.Log(err)
	}
}
