package iwarp

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/smbdirect/smbdirect/rdma"
)

// TestPortablePaths runs the endpoint as on the systems without the Linux
// (or unix) socket paths: no inline writev, no raw reads in the read
// callback (so Drive declines), no sendfile. Sends, RDMA Writes and Reads,
// and a Send from a file still arrive intact.
func TestPortablePaths(t *testing.T) {
	defer func(r, w, s bool) { rawReads, rawWrites, useSendfile = r, w, s }(rawReads, rawWrites, useSendfile)
	rawReads, rawWrites, useSendfile = false, false, false

	p := newPair(t, Config{FirstSendDelay: -1}, nil)
	for _, ep := range []rdma.Endpoint{p.cli, p.srv} {
		e := ep.(*endpoint)
		if e.raw != nil || e.driver().rc != nil {
			t.Fatalf("raw writer %v, raw reads %v", e.raw != nil, e.driver().rc != nil)
		}
		if ep.(rdma.Driver).Drive(nil) {
			t.Fatal("Drive ran the receive path without raw reads")
		}
	}
	const size = 300_001
	recv := mustMR(t, p.pd, make([]byte, size), rdma.AccessLocalWrite)
	// Small messages, which would go inline on Linux, then a large one.
	for i, n := range []int{1, 64, 4000, size} {
		if err := p.srv.PostRecv(&rdma.RecvWR{ID: uint64(i), Local: rdma.SGE{MR: recv}}); err != nil {
			t.Fatal(err)
		}
		src := mustMR(t, p.pd, pattern(n, byte(i)), 0)
		if err := p.cli.PostSend(&rdma.SendWR{ID: uint64(i), Op: rdma.OpSend, Local: rdma.SGE{MR: src}}); err != nil {
			t.Fatal(err)
		}
		if c := poll1(t, p.cli); c.Err != nil || c.ID != uint64(i) {
			t.Fatalf("send completion %+v", c)
		}
		if c := poll1(t, p.srv); c.Err != nil || c.ID != uint64(i) || c.Bytes != n {
			t.Fatalf("recv completion %+v", c)
		}
		if !bytes.Equal(recv.Bytes()[:n], src.Bytes()) {
			t.Fatalf("send of %d bytes: data differs", n)
		}
	}
	src := mustMR(t, p.pd, pattern(size, 7), 0)
	sink := mustMR(t, p.pd, make([]byte, size), rdma.AccessLocalWrite|rdma.AccessRemoteWrite|rdma.AccessRemoteRead)
	if err := p.cli.PostSend(&rdma.SendWR{ID: 10, Op: rdma.OpWrite, Local: rdma.SGE{MR: src}, RemoteSTag: sink.STag(), RemoteAddr: sink.Addr()}); err != nil {
		t.Fatal(err)
	}
	dst := mustMR(t, p.pd, make([]byte, size), rdma.AccessLocalWrite)
	if err := p.cli.PostSend(&rdma.SendWR{ID: 11, Op: rdma.OpRead, Local: rdma.SGE{MR: dst}, RemoteSTag: sink.STag(), RemoteAddr: sink.Addr()}); err != nil {
		t.Fatal(err)
	}
	for id := uint64(10); id <= 11; id++ {
		if c := poll1(t, p.cli); c.Err != nil || c.ID != id || c.Bytes != size {
			t.Fatalf("completion %+v, want ID %d", c, id)
		}
	}
	// (The sink is the server's memory: reading it here would race with
	// its receive path as far as the race detector can tell.)
	if !bytes.Equal(dst.Bytes(), src.Bytes()) {
		t.Fatal("RDMA Write/Read data differs")
	}

	path := filepath.Join(t.TempDir(), "src")
	data := pattern(size+99, 3)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := p.srv.PostRecv(&rdma.RecvWR{ID: 20, Local: rdma.SGE{MR: recv}}); err != nil {
		t.Fatal(err)
	}
	if err := p.cli.PostSend(&rdma.SendWR{ID: 20, Op: rdma.OpSend, File: &rdma.FileRange{File: f, Offset: 99, Length: size}}); err != nil {
		t.Fatal(err)
	}
	if c := poll1(t, p.cli); c.Err != nil || c.ID != 20 {
		t.Fatalf("send from file: completion %+v", c)
	}
	if c := poll1(t, p.srv); c.Err != nil || c.ID != 20 || c.Bytes != size {
		t.Fatalf("recv from file: completion %+v", c)
	}
	if !bytes.Equal(recv.Bytes(), data[99:]) {
		t.Fatal("send from file: data differs")
	}
}
