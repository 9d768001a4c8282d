//go:build linux

package server_test

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/smbdirect/smbdirect/smbdirectd/server"
)

// TestListenExclusive: of daemons started at once on one socket, exactly
// one binds it and the others get ErrDaemonRunning; none unlinks the
// winner's socket. A stale socket (no daemon behind it) is replaced, and
// the socket is free again after Close.
func TestListenExclusive(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "d.sock")
	// A stale socket: bound, then its listener gone without unlinking.
	stale, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: sock, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	stale.Close()

	const n = 8
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		winners []*server.Server
		losers  int
	)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := server.Listen(server.Config{Socket: sock, SMBD: smbdConfig()})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				winners = append(winners, s)
			case errors.Is(err, server.ErrDaemonRunning):
				losers++
			default:
				t.Errorf("Listen: %v, want nil or ErrDaemonRunning", err)
			}
		}()
	}
	wg.Wait()
	if len(winners) != 1 || losers != n-1 {
		t.Fatalf("%d daemons bound the socket and %d got ErrDaemonRunning, want 1 and %d", len(winners), losers, n-1)
	}
	// The winner's socket is still there and answers.
	c, err := net.Dial("unixpacket", sock)
	if err != nil {
		t.Fatalf("the winner's socket does not answer: %v", err)
	}
	c.Close()
	winners[0].Close()
	if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket after Close: %v, want it removed", err)
	}
	s, err := server.Listen(server.Config{Socket: sock, SMBD: smbdConfig()})
	if err != nil {
		t.Fatalf("Listen after Close: %v", err)
	}
	s.Close()
}
