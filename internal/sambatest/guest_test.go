//go:build linux

package sambatest

import (
	"crypto/sha256"
	"encoding/hex"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestCifsGuestScript: the generated script is valid sh and runs the cases in order with their options.
func TestCifsGuestScript(t *testing.T) {
	s := CifsGuest([]GuestCase{
		{Name: "a", Options: "port=1,vers=3.0"},
		{Name: "b", Options: "port=2,rdma", Mounts: 2},
		{Name: "c", Options: "port=3", MountFails: true},
	})
	f := filepath.Join(t.TempDir(), "guest.sh")
	if err := os.WriteFile(f, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("sh", "-n", f).CombinedOutput(); err != nil {
		t.Fatalf("sh -n: %v\n%s", err, out)
	}
	want := "run_case a 'port=1,vers=3.0' 1 0 || exit 1\nrun_case b 'port=2,rdma' 2 0 || exit 1\nrun_case c 'port=3' 1 1 || exit 1\n"
	if !strings.HasSuffix(s, want) {
		t.Fatalf("script ends with\n%s\nwant\n%s", s[strings.LastIndex(s, "}\n")+2:], want)
	}
	if !strings.Contains(s, "for s in 0 1 4095 4096 1048577 67108864; do") {
		t.Fatal("script does not make FileSizes")
	}
}

func TestSameFiles(t *testing.T) {
	dir := t.TempDir()
	var sums strings.Builder
	for _, n := range FileSizes {
		b := []byte(strings.Repeat("x", n%5000))
		name := "f" + strconv.Itoa(n)
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
		h := sha256.Sum256(b)
		sums.WriteString(hex.EncodeToString(h[:]) + "  " + name + "\n")
	}
	sf := filepath.Join(t.TempDir(), "src.sums")
	os.WriteFile(sf, []byte(sums.String()), 0o644)
	if err := sameFiles(sf, dir); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "f1"), []byte("y"), 0o644)
	if err := sameFiles(sf, dir); err == nil || !strings.Contains(err.Error(), "f1 on the host") {
		t.Fatalf("changed f1: %v", err)
	}
	os.Remove(filepath.Join(dir, "f1"))
	if err := sameFiles(sf, dir); err == nil || !strings.Contains(err.Error(), "5 files") {
		t.Fatalf("missing f1: %v", err)
	}
}

func TestTCPListening(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := tcpListening("0100007F", port); err != nil {
		t.Fatal(err)
	}
	l.Close()
	if err := tcpListening("0100007F", port); err == nil {
		t.Fatal("closed listener still found")
	}
}
