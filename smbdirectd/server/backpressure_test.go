//go:build linux

package server_test

import (
	"bytes"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// A client that stops reading: the daemon stops reading from the SMB
// Direct connection, the peer runs out of credits and its writes wait;
// memory stays bounded; when the client reads again, everything arrives
// in order.
func TestClientStopsReading(t *testing.T) {
	s := startDaemon(t, nil)
	p := startPeer(t, false)
	_, conn := through(t, s, p.l.Addr().String())
	srv := <-p.conns
	defer srv.Close()
	runtime.GC()
	var m0 runtime.MemStats
	runtime.ReadMemStats(&m0)
	const total = 64 // MiB the peer wants to send
	var sent atomic.Int64
	werr := make(chan error, 1)
	go func() {
		pdu := bytes.Repeat([]byte{0xab}, 1<<20)
		for i := range total {
			pdu[0] = byte(i)
			if err := srv.WriteMessage(pdu); err != nil {
				werr <- err
				return
			}
			sent.Add(1)
		}
		werr <- nil
	}()
	// Wait until the peer's writes stop making progress.
	last, still := int64(-1), 0
	for still < 10 {
		time.Sleep(100 * time.Millisecond)
		if n := sent.Load(); n == last {
			still++
		} else {
			last, still = n, 0
		}
		if last == total {
			t.Fatalf("the peer sent all %d MiB while the client read nothing: no back-pressure", total)
		}
	}
	runtime.GC()
	var m1 runtime.MemStats
	runtime.ReadMemStats(&m1)
	grew := int64(m1.HeapAlloc) - int64(m0.HeapAlloc)
	t.Logf("the peer's writes stopped after %d MiB; heap grew %d KiB", last, grew>>10)
	if last > 40 || grew > 16<<20 {
		t.Fatalf("not bounded: %d MiB accepted, heap grew %d KiB", last, grew>>10)
	}
	// The client reads again: every PDU arrives, in order.
	conn.Stream.SetReadDeadline(time.Now().Add(30 * time.Second))
	for i := range total {
		got, err := readPDU(conn.Stream)
		if err != nil || len(got) != 1<<20 || got[0] != byte(i) {
			t.Fatalf("PDU %d: %d bytes, %v", i, len(got), err)
		}
	}
	if err := <-werr; err != nil {
		t.Fatal(err)
	}
}
