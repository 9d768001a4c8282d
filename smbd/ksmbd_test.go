package smbd

// Interop with Linux ksmbd (SMB Direct over siw) in the testbed VM.
// Opt-in with SMBDIRECT_VM=1; fails, never skips, when the VM cannot run.

import (
	"context"
	"encoding/binary"
	"net"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/smbdirect/smbdirect/internal/testbed"
)

// ksmbdGuest brings up siw and ksmbd with one share, prints KSMBD_READY,
// and keeps the VM up until the host is done (it writes /mnt/work/done).
const ksmbdGuest = `rdma link add siw0 type siw netdev eth0 || exit 90
ksmbd.adduser -a tester -p secret >/dev/null || exit 91
mkdir -p /etc/ksmbd /srv/share
printf '[global]\n\tserver min protocol = SMB2_10\n[share]\n\tpath = /srv/share\n\tread only = no\n\tvalid users = tester\n' > /etc/ksmbd/ksmbd.conf
ksmbd.mountd || exit 92
sleep 1
echo KSMBD_READY
i=0; while [ ! -e /mnt/work/done ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); done
`

// smb2Negotiate builds an SMB2 NEGOTIATE request offering 2.0.2 to 3.0.2.
func smb2Negotiate() []byte {
	dialects := []uint16{0x0202, 0x0210, 0x0300, 0x0302}
	b := make([]byte, 64+36+2*len(dialects))
	copy(b, "\xfeSMB")
	binary.LittleEndian.PutUint16(b[4:], 64)  // StructureSize
	binary.LittleEndian.PutUint16(b[12:], 0)  // Command NEGOTIATE
	binary.LittleEndian.PutUint16(b[14:], 1)  // CreditRequest
	binary.LittleEndian.PutUint16(b[64:], 36) // body StructureSize
	binary.LittleEndian.PutUint16(b[66:], uint16(len(dialects)))
	binary.LittleEndian.PutUint16(b[68:], 1) // SecurityMode: signing enabled
	copy(b[76:92], "smbdirect-test!!")       // ClientGuid
	for i, d := range dialects {
		binary.LittleEndian.PutUint16(b[100+2*i:], d)
	}
	return b
}

func TestLinuxKsmbdNegotiate(t *testing.T) {
	vm := testbed.StartT(t, testbed.Options{
		GuestScript: ksmbdGuest,
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
	if err := c.WriteMessage(smb2Negotiate()); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<16)
	n, err := c.ReadMessage(buf)
	if err != nil {
		t.Fatalf("reading the NEGOTIATE response: %v", err)
	}
	r := buf[:n]
	if n < 64+8 || string(r[:4]) != "\xfeSMB" || binary.LittleEndian.Uint16(r[12:]) != 0 {
		t.Fatalf("not an SMB2 NEGOTIATE response: % x", r[:min(n, 80)])
	}
	if st := binary.LittleEndian.Uint32(r[8:]); st != 0 {
		t.Fatalf("NEGOTIATE status 0x%08x", st)
	}
	dialect := binary.LittleEndian.Uint16(r[64+4:])
	if dialect != 0x0302 {
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
