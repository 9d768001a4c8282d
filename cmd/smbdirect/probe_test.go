package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/smbdirect/smbdirect/internal/testbed"
)

// TestLinuxProbe: smbdirect probe against Linux ksmbd over siw in the VM.
func TestLinuxProbe(t *testing.T) {
	vm := testbed.StartT(t, testbed.Options{
		GuestScript: testbed.KsmbdGuest,
		Forwards:    []testbed.Forward{{GuestPort: 5445}},
	})
	defer os.WriteFile(vm.ShareDir()+"/done", nil, 0o644)
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	if _, err := vm.WaitFor(ctx, "KSMBD_READY"); err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(vm.HostPort(5445)))
	var out, errb bytes.Buffer
	if err := run(ctx, []string{"probe", "--json", addr}, &out, &errb); err != nil {
		t.Fatalf("probe: %v\n%s", err, errb.String())
	}
	var r struct {
		SMBD struct {
			SendCredits int `json:"send_credits"`
			MaxSendSize int `json:"max_send_size"`
		} `json:"smbd"`
		Result  string `json:"result"`
		Dialect string `json:"dialect"`
		SMB2    struct {
			Preauth string `json:"preauth_integrity"`
		} `json:"smb2"`
	}
	// ksmbd picks 3.1.1 when offered with its negotiate contexts.
	if err := json.Unmarshal(out.Bytes(), &r); err != nil || r.Result != "ok" || r.Dialect != "3.1.1" || r.SMB2.Preauth != "SHA-512" ||
		r.SMBD.SendCredits < 1 || r.SMBD.MaxSendSize < 128 {
		t.Fatalf("probe output %s: %+v %v", out.String(), r, err)
	}
	t.Logf("probe: %s", out.String())
	out.Reset()
	if err := run(ctx, []string{"probe", addr}, &out, &errb); err != nil || !bytes.Contains(out.Bytes(), []byte("SMB2 dialect 3.1.1")) {
		t.Fatalf("probe: %v\n%s", err, out.String())
	}
	t.Logf("\n%s", out.String())
}
