//go:build linux

package main

import (
	"context"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/smbdirect/smbdirect/internal/syncbuf"
	"github.com/smbdirect/smbdirect/smbdirectd/client"
)

// TestEnsureDaemonConcurrent: several "smbdirect exec" starting at once
// with no daemon running end up with one daemon, which all of them use;
// the one that runs it keeps serving the others' clients after its own
// program has ended.
func TestEnsureDaemonConcurrent(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "d.sock")
	const n = 4
	var (
		wg    sync.WaitGroup
		outs  [n]syncbuf.Buffer
		stops [n]func()
	)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stop, err := ensureDaemon(t.Context(), sock, "prog", &outs[i])
			if err != nil {
				t.Errorf("ensureDaemon %d: %v", i, err)
				return
			}
			stops[i] = stop
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	owners := 0
	for i := range n {
		if strings.Contains(outs[i].String(), "running one in this process") {
			owners++
		}
	}
	if owners != 1 {
		t.Fatalf("%d of %d ran a daemon, want 1", owners, n)
	}

	// Another exec's program is still a client when the owner's ends.
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, sock)
	if err != nil {
		t.Fatal(err)
	}
	stopped := make(chan struct{})
	go func() {
		var swg sync.WaitGroup
		for _, stop := range stops {
			swg.Add(1)
			go func() { defer swg.Done(); stop() }()
		}
		swg.Wait()
		close(stopped)
	}()
	select {
	case <-stopped:
		t.Fatal("the daemon stopped while a client was still attached")
	case <-time.After(300 * time.Millisecond):
	}
	c.Close()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		t.Fatal("the daemon did not stop after its last client left")
	}
	var all string
	for i := range n {
		all += outs[i].String()
	}
	// At least the one above; the other calls' probes of the socket
	// may not have been counted gone yet.
	if !regexp.MustCompile(`serves [1-9][0-9]* more client\(s\)`).MatchString(all) {
		t.Errorf("no word of the client being served on; stderr:\n%s", all)
	}
}
