package iwarp

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/smbdirect/smbdirect/rdma"
)

// TestWriteFromFile sends a file range as an RDMA Write (sendfile without
// CRC, read-and-checksum with CRC, read-and-copy without CRC as on the
// systems without sendfile) and as a Send, and checks the bytes.
func TestWriteFromFile(t *testing.T) {
	data := pattern(3<<20+77, 9)
	path := filepath.Join(t.TempDir(), "src")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		crc      bool
		sendfile bool
	}{{"sendfile", false, true}, {"copied", false, false}, {"crc", true, true}} {
		crc := tc.crc
		t.Run(tc.name, func(t *testing.T) {
			defer func(v bool) { useSendfile = v }(useSendfile)
			useSendfile = tc.sendfile
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			p := newPair(t, Config{CRC: crc}, nil)
			const off, n = 12345, 2<<20 + 5
			sink := mustMR(t, p.pd, make([]byte, n), rdma.AccessLocalWrite|rdma.AccessRemoteWrite)
			if err := p.cli.PostSend(&rdma.SendWR{ID: 1, Op: rdma.OpWrite, File: &rdma.FileRange{File: f, Offset: off, Length: n},
				RemoteSTag: sink.STag(), RemoteAddr: sink.Addr()}); err != nil {
				t.Fatal(err)
			}
			recv := mustMR(t, p.pd, make([]byte, 100000), rdma.AccessLocalWrite)
			if err := p.srv.PostRecv(&rdma.RecvWR{ID: 5, Local: rdma.SGE{MR: recv}}); err != nil {
				t.Fatal(err)
			}
			// A Send from the file after the Write: when it arrives, the
			// Write has been placed (RDMAP ordering).
			if err := p.cli.PostSend(&rdma.SendWR{ID: 2, Op: rdma.OpSend, File: &rdma.FileRange{File: f, Offset: 7, Length: 99999}}); err != nil {
				t.Fatal(err)
			}
			for id := uint64(1); id <= 2; id++ {
				if c := poll1(t, p.cli); c.Err != nil || c.ID != id {
					t.Fatalf("completion %+v", c)
				}
			}
			c := poll1(t, p.srv)
			if c.Err != nil || c.Bytes != 99999 {
				t.Fatalf("recv %+v", c)
			}
			if !bytes.Equal(recv.Bytes()[:99999], data[7:7+99999]) {
				t.Fatal("send from file: data differs")
			}
			if !bytes.Equal(sink.Bytes(), data[off:off+n]) {
				t.Fatal("write from file: data differs")
			}
		})
	}
}

// TestFileShort: a range past the end of the file fails the connection
// rather than sending garbage.
func TestFileShort(t *testing.T) {
	for _, sendfile := range []bool{true, false} {
		t.Run(map[bool]string{true: "sendfile", false: "copied"}[sendfile], func(t *testing.T) {
			defer func(v bool) { useSendfile = v }(useSendfile)
			useSendfile = sendfile
			testFileShort(t)
		})
	}
}

func testFileShort(t *testing.T) {
	path := filepath.Join(t.TempDir(), "small")
	os.WriteFile(path, []byte("tiny"), 0o600)
	f, _ := os.Open(path)
	defer f.Close()
	p := newPair(t, Config{}, nil)
	sink := mustMR(t, p.pd, make([]byte, 1<<20), rdma.AccessLocalWrite|rdma.AccessRemoteWrite)
	if err := p.cli.PostSend(&rdma.SendWR{ID: 1, Op: rdma.OpWrite, File: &rdma.FileRange{File: f, Length: 1000},
		RemoteSTag: sink.STag(), RemoteAddr: sink.Addr()}); err != nil {
		t.Fatal(err)
	}
	c := poll1(t, p.cli)
	if !errors.Is(c.Err, errFileShort) {
		t.Fatalf("short file range: completion %+v, want errFileShort", c)
	}
}
