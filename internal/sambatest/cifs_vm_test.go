//go:build linux

package sambatest

// cifs.ko in the testbed VM against the unmodified Samba on the host. One boot runs every row of
// cifsCases in order. Opt-in with SMBDIRECT_VM=1 (scripts/test.sh's VM step); fails, never skips, when the
// VM cannot run.

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/smbdirect/smbdirect/internal/testbed"
)

// serverKind says which host server a row mounts.
type serverKind int

const (
	// sambaTCP: smbd on a free TCP port, nothing in between.
	sambaTCP serverKind = iota
	// sambaDirect: smbd under `smbdirect exec` with the daemon's server-side RDMA channel; cifs.ko
	// reaches it over siw on the fixed port 5445 (see directServer).
	sambaDirect
)

// A cifsCase is one row: a mount of a host server with options, checked by CifsGuest's script and by
// check on the host.
type cifsCase struct {
	name   string
	server serverKind
	// opts are added to the common options (port, credentials, cache=none).
	opts string
	// password replaces the server's in the mount options.
	password   string
	mounts     int
	mountFails bool
	// mountErr must be in mount.cifs's error line when mountFails.
	mountErr string
	// check runs on the host once the files are written, with the servers (nil if unused) and the
	// daemon's counters before the row (nil without sambaDirect); the row fails if it returns an error.
	check func(env *cifsEnv, before map[string]int64) error
	// done, like check, runs once the guest has read everything back and removed it.
	done func(env *cifsEnv, before map[string]int64) error
}

// cifsEnv is what one boot of the test has on the host.
type cifsEnv struct {
	tcp    *Server
	direct *directServer
}

// cifsCases are the rows run by TestLinuxSambaCifs, in order: over TCP, then over SMB Direct (directCases).
func cifsCases() []cifsCase {
	cases := []cifsCase{
		{name: "tcp311", server: sambaTCP, opts: "vers=3.1.1"},
		{name: "tcp30", server: sambaTCP, opts: "vers=3.0"},
		{name: "tcpsign", server: sambaTCP, opts: "vers=3.1.1,sign"},
		// Two connections (nosharesock), each its own smbd. closetimeo=0: with cifs.ko's deferred close the
		// reading mount still holds the last file, leased, when the writing one renames it; Samba 4.17 must
		// break that lease in the middle of cifs.ko's CREATE+SET_INFO+CLOSE compound and answers
		// NT_STATUS_INTERNAL_ERROR (smb2_server.c:2058 in its log at level 3), which cifs.ko reports as EIO.
		{name: "tcptwo", server: sambaTCP, opts: "vers=3.1.1,nosharesock,closetimeo=0", mounts: 2, check: connPIDs(2)},
		{name: "tcpbadpw", server: sambaTCP, opts: "vers=3.1.1", password: "wrong", mountFails: true, mountErr: "mount error(13): Permission denied"},
	}
	return append(cases, directCases()...)
}

// connPIDs checks that the TCP server has n connection processes (smbd forks one per connection).
func connPIDs(n int) func(*cifsEnv, map[string]int64) error {
	return func(env *cifsEnv, _ map[string]int64) error {
		pids, err := env.tcp.ConnPIDs()
		if err != nil {
			return err
		}
		if len(pids) != n {
			return fmt.Errorf("%d smbd connection processes %v, want %d", len(pids), pids, n)
		}
		return nil
	}
}

func TestLinuxSambaCifs(t *testing.T) {
	testbed.Require(t)
	cases := cifsCases()
	env := &cifsEnv{tcp: StartT(t, Options{})}
	var guest []GuestCase
	direct := false
	for _, c := range cases {
		port := env.tcp.Port()
		if c.server == sambaDirect {
			direct = true
			port = 5445
		}
		pw := env.tcp.Password()
		if c.password != "" {
			pw = c.password
		}
		opts := fmt.Sprintf("port=%d,username=%s,password=%s,cache=none", port, env.tcp.User(), pw)
		if c.opts != "" {
			opts += "," + c.opts
		}
		guest = append(guest, GuestCase{Name: c.name, Options: opts, Mounts: c.mounts, MountFails: c.mountFails})
	}
	if direct {
		env.direct = startDirect(t, env.tcp.User(), env.tcp.Password())
	}
	runCifsCases(t, env, cases, guest, 15*time.Minute)
}

// runCifsCases boots the VM with CifsGuest(guest) and follows it row by row, each a subtest.
func runCifsCases(t *testing.T, env *cifsEnv, cases []cifsCase, guest []GuestCase, limit time.Duration) {
	vm := testbed.StartT(t, testbed.Options{GuestScript: CifsGuest(guest), Timeout: limit})
	ctx, cancel := context.WithTimeout(t.Context(), limit)
	defer cancel()
	for i, c := range cases {
		ok := t.Run(c.name, func(t *testing.T) {
			srv := env.tcp
			if c.server == sambaDirect {
				srv = env.direct.samba
			}
			var before map[string]int64
			if env.direct != nil {
				before = env.direct.counters(t)
			}
			// The guest starts the row only now, so no I/O of it can come before the counters above.
			if err := os.WriteFile(filepath.Join(vm.ShareDir(), c.name+".start"), []byte("ok"), 0o644); err != nil {
				t.Fatal(err)
			}
			if c.mountFails {
				line, err := vm.WaitFor(ctx, "CASE "+c.name+" mounterror")
				if err != nil {
					t.Fatal(err)
				}
				if !strings.Contains(line, c.mountErr) {
					t.Fatalf("%q, want %q", line, c.mountErr)
				}
				t.Log(line)
				return
			}
			if _, err := vm.WaitFor(ctx, "CASE "+c.name+" written"); err != nil {
				t.Fatal(err)
			}
			verdict := "ok"
			err := sameFiles(filepath.Join(vm.ShareDir(), "src.sums"), filepath.Join(srv.ShareDir(), c.name))
			if err == nil && c.check != nil {
				err = c.check(env, before)
			}
			if err != nil {
				verdict = err.Error()
				t.Error(err)
			}
			if werr := os.WriteFile(filepath.Join(vm.ShareDir(), c.name+".written"), []byte(verdict), 0o644); werr != nil {
				t.Fatal(werr)
			}
			if err != nil {
				return
			}
			if _, err := vm.WaitFor(ctx, "CASE "+c.name+" ok"); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(filepath.Join(srv.ShareDir(), c.name)); !os.IsNotExist(err) {
				t.Fatalf("the guest removed %s, the host still has it (%v)", c.name, err)
			}
			if c.done != nil {
				if err := c.done(env, before); err != nil {
					t.Error(err)
				}
			}
			out := vm.Output()
			start := strings.Index(out, "CASE "+c.name+" stats\n")
			end := strings.Index(out, "CASE "+c.name+" ok")
			if start >= 0 && end > start {
				t.Logf("cifs.ko after %s:\n%s", c.name, out[start:end])
			}
		})
		if !ok {
			t.Fatalf("row %d (%s) failed; the guest stops at the first failure", i, c.name)
		}
	}
	res, err := vm.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if res.ExitCode != 0 {
		t.Fatalf("GUEST_EXIT=%d", res.ExitCode)
	}
}

// sameFiles compares sha256sum output (the guest's sources) with the files in dir on the host.
func sameFiles(sums, dir string) error {
	f, err := os.Open(sums)
	if err != nil {
		return err
	}
	defer f.Close()
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	want := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		sum, name, ok := strings.Cut(sc.Text(), "  ")
		if !ok {
			return fmt.Errorf("%s: bad line %q", sums, sc.Text())
		}
		want[name] = sum
	}
	if len(want) != len(FileSizes) || len(ents) != len(want) {
		return fmt.Errorf("%d files in %s, %d sums from the guest, want %d", len(ents), dir, len(want), len(FileSizes))
	}
	for _, e := range ents {
		g, err := os.Open(filepath.Join(dir, e.Name()))
		if err != nil {
			return err
		}
		h := sha256.New()
		_, err = io.Copy(h, g)
		g.Close()
		if err != nil {
			return err
		}
		if got := hex.EncodeToString(h.Sum(nil)); got != want[e.Name()] {
			return fmt.Errorf("%s on the host: sha256 %s, the guest wrote %q", e.Name(), got, want[e.Name()])
		}
	}
	return nil
}
