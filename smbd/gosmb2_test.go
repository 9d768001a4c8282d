package smbd_test

// An unmodified third-party SMB2 client, github.com/cloudsoda/go-smb2,
// running over our Conn against Linux ksmbd in the testbed VM: the proof
// that SMB2 code written for TCP runs on SMB Direct unchanged.
// Opt-in with SMBDIRECT_VM=1; fails, never skips, when the VM cannot run.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	gosmb2 "github.com/cloudsoda/go-smb2"

	"github.com/smbdirect/smbdirect/internal/testbed"
	"github.com/smbdirect/smbdirect/smbd"
)

func TestLinuxGoSMB2(t *testing.T) {
	vm := testbed.StartT(t, testbed.Options{
		GuestScript: testbed.KsmbdGuest,
		Forwards:    []testbed.Forward{{GuestPort: 5445}},
	})
	ctx, cancel := context.WithTimeout(t.Context(), 150*time.Second)
	defer cancel()
	defer os.WriteFile(vm.ShareDir()+"/done", nil, 0o644)
	if _, err := vm.WaitFor(ctx, "KSMBD_READY"); err != nil {
		t.Fatalf("ksmbd did not start: %v", err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(vm.HostPort(5445)))
	conn, err := smbd.Dial(ctx, addr, &smbd.Config{})
	if err != nil {
		t.Fatalf("SMB Direct to ksmbd: %v", err)
	}
	defer conn.Close()
	t.Logf("SMB Direct negotiated: %+v", conn.Info())

	d := &gosmb2.Dialer{Initiator: &gosmb2.NTLMInitiator{User: "tester", Password: "secret"}}
	s, err := d.DialConn(ctx, conn, addr)
	if err != nil {
		t.Fatalf("go-smb2 session over SMB Direct: %v", err)
	}
	defer s.Logoff()
	share, err := s.Mount(`\\10.0.2.15\share`)
	if err != nil {
		t.Fatalf("mount: %v", err)
	}
	defer share.Umount()

	// Sizes cover one fragment, many fragments, and more than one
	// MaxFragmentedSize, so go-smb2 splits its READs and WRITEs.
	files := map[string][]byte{}
	for i, n := range []int{0, 1, 1000, 1364, 65536, 300_001, 3 << 20} {
		b := make([]byte, n)
		r := rand.NewChaCha8([32]byte{byte(i)})
		r.Read(b)
		name := "f" + strconv.Itoa(n) + ".bin"
		files[name] = b
		if err := share.WriteFile(name, b, 0o644); err != nil {
			t.Fatalf("write %s: %v", name, err)
		}
	}
	for name, want := range files {
		got, err := share.ReadFile(name)
		if err != nil {
			t.Fatalf("read %s: %v", name, err)
		}
		if sha256.Sum256(got) != sha256.Sum256(want) || !bytes.Equal(got, want) {
			t.Fatalf("%s: read back %d bytes, sha256 %x; wrote %d bytes, sha256 %x",
				name, len(got), sha256.Sum256(got), len(want), sha256.Sum256(want))
		}
	}
	// A partial read at an offset through the File API.
	f, err := share.Open("f300001.bin")
	if err != nil {
		t.Fatal(err)
	}
	part := make([]byte, 5000)
	if _, err := f.ReadAt(part, 123_456); err != nil && err != io.EOF {
		t.Fatal(err)
	}
	f.Close()
	if !bytes.Equal(part, files["f300001.bin"][123_456:128_456]) {
		t.Fatal("ReadAt at an offset returned different bytes")
	}

	infos, err := share.ReadDir(".")
	if err != nil {
		t.Fatalf("list: %v", err)
	}
	var names []string
	for _, fi := range infos {
		names = append(names, fi.Name())
		if want, ok := files[fi.Name()]; ok && fi.Size() != int64(len(want)) {
			t.Fatalf("%s listed with size %d, want %d", fi.Name(), fi.Size(), len(want))
		}
	}
	for name := range files {
		if !slices.Contains(names, name) {
			t.Fatalf("%s missing from the listing %v", name, names)
		}
	}
	if err := share.Remove("f0.bin"); err != nil {
		t.Fatal(err)
	}
	if _, err := share.Stat("f0.bin"); err == nil {
		t.Fatal("f0.bin still there after Remove")
	}
	t.Logf("go-smb2 over SMB Direct: wrote, read back and listed %d files (%d bytes), checksums equal", len(files), 3<<20+367_902)
}
