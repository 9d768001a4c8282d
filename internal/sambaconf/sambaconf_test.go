package sambaconf

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWriteClient(t *testing.T) {
	dir := t.TempDir()
	conf, err := WriteClient(dir, "client smb transports = rdma")
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	want := "[global]\n\tclient min protocol = SMB3\n\tdisable netbios = yes\n" +
		"\tlock directory = " + filepath.Join(dir, "lock") + "\n" +
		"\tstate directory = " + filepath.Join(dir, "state") + "\n" +
		"\tcache directory = " + filepath.Join(dir, "cache") + "\n" +
		"\tprivate dir = " + filepath.Join(dir, "private") + "\n" +
		"\tpid directory = " + filepath.Join(dir, "pid") + "\n" +
		"\tncalrpc dir = " + filepath.Join(dir, "ncalrpc") + "\n" +
		"\tclient smb transports = rdma\n"
	if string(b) != want {
		t.Fatalf("client.conf:\n%s\nwant:\n%s", b, want)
	}
	for _, d := range stateDirs {
		if st, err := os.Stat(filepath.Join(dir, d)); err != nil || !st.IsDir() {
			t.Errorf("%s: %v", d, err)
		}
	}
}

// TestWrite runs the real pdbedit (Samba is a dependency of the suite).
func TestWrite(t *testing.T) {
	for _, port := range []int{0, 4455} {
		dir := t.TempDir()
		conf, err := Write(t.Context(), Server{Dir: dir, Port: port, Global: []string{"smb2 max read = 65536"},
			Share: []string{"strict sync = no"}})
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(conf)
		if err != nil {
			t.Fatal(err)
		}
		text := string(b)
		wants := []string{"\tpassdb backend = tdbsam:" + filepath.Join(dir, "private/passdb.tdb") + "\n",
			"\tsmb2 max read = 65536\n[share]\n\tpath = " + filepath.Join(dir, "share") + "\n",
			"\tvalid users = root\n", "\tstrict sync = no\n", "\tchange notify = no\n"}
		if port == 0 {
			wants = append(wants, "\tsmb ports = 1\n")
		} else {
			wants = append(wants, "\tsmb ports = 4455\n", "\tinterfaces = 127.0.0.1\n\tbind interfaces only = yes\n")
		}
		for _, w := range wants {
			if !strings.Contains(text, w) {
				t.Errorf("port %d: smb.conf lacks %q:\n%s", port, w, text)
			}
		}
		if _, err := os.Stat(filepath.Join(dir, "private/passdb.tdb")); err != nil {
			t.Errorf("port %d: no passdb: %v", port, err)
		}
	}
}
