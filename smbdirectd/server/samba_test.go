//go:build linux

package server_test

// The server-side RDMA channel against the real packaged Samba smbd:
// smbd runs in inetd mode (standard input a connected socket: here the
// daemon's stream fd), unmodified; go-smb2 through smb2rdma over
// smbd.Dial is the client. Fails, never skips, when Samba cannot run
// (scripts/test.sh installs it). cifs.ko against Samba through the
// channel is internal/sambatest's TestLinuxSambaCifs.

import (
	"bytes"
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	gosmb2 "github.com/cloudsoda/go-smb2"

	"github.com/smbdirect/smbdirect/internal/sambaconf"
	"github.com/smbdirect/smbdirect/smb2rdma"
	"github.com/smbdirect/smbdirect/smbd"
	"github.com/smbdirect/smbdirect/smbdirectd/client"
)

// sambaInetd writes a throwaway standalone smb.conf and passdb (user
// root, password "secret", share [share]) under dir and returns smbd's
// command line for inetd mode.
func sambaInetd(t *testing.T, dir string) []string {
	t.Helper()
	conf, err := sambaconf.Write(t.Context(), sambaconf.Server{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	return []string{"/usr/sbin/smbd", "-s", conf, "--no-process-group"}
}

func TestSambaServerChannel(t *testing.T) {
	s := startDaemon(t, nil)
	dir := t.TempDir()
	if d := os.Getenv("SMBDIRECT_SAMBA_DIR"); d != "" {
		dir = d // kept for a look at Samba's logs
	}
	argv := sambaInetd(t, dir)
	cl, l, accepted := channelListener(t, s)
	defer cl.Close()
	sc, err := smbd.Dial(ctx(t), l.Addr, smbdConfig())
	if err != nil {
		t.Fatal(err)
	}
	pc := <-accepted
	if pc == nil {
		t.FailNow()
	}
	sambaServe(t, dir, argv, pc)
	defer sc.Close()

	oc := smb2rdma.Wrap(sc, nil)
	d := &gosmb2.Dialer{Initiator: &gosmb2.NTLMInitiator{User: "root", Password: "secret"}}
	sess, err := d.DialConn(ctx(t), oc, l.Addr)
	if err != nil {
		t.Fatalf("go-smb2 session with Samba: %v", err)
	}
	defer sess.Logoff()
	share, err := sess.Mount(`\\127.0.0.1\share`)
	if err != nil {
		t.Fatalf("mount: %v", err)
	}
	defer share.Umount()
	var big int64
	for i, n := range []int{4095, 4096, 1<<20 + 1, 3<<20 + 5} {
		b := make([]byte, n)
		rand.NewChaCha8([32]byte{byte(i)}).Read(b)
		name := "f" + strconv.Itoa(n)
		if err := share.WriteFile(name, b, 0o644); err != nil {
			t.Fatalf("write %s: %v", name, err)
		}
		got, err := share.ReadFile(name)
		if err != nil {
			t.Fatalf("read %s: %v", name, err)
		}
		if sha256.Sum256(got) != sha256.Sum256(b) {
			t.Fatalf("%s: read back differs", name)
		}
		onDisk, err := os.ReadFile(filepath.Join(dir, "share", name))
		if err != nil || !bytes.Equal(onDisk, b) {
			t.Fatalf("%s on disk: %v", name, err)
		}
		// go-smb2 splits at MaxReadWriteSize; smb2rdma offloads the
		// pieces of 4096 bytes and more.
		for k := n; k > 0; k -= min(k, smbdMaxReadWrite) {
			if piece := min(k, smbdMaxReadWrite); piece >= 4096 {
				big += int64(piece)
			}
		}
	}
	st, os := s.Stats(), oc.Stats()
	t.Logf("Samba %s through the daemon's channel: daemon %+v; client %+v", strings.TrimSpace(version(t)), st, os)
	// READs may ask for more than the file has: what Samba returned is
	// what was RDMA-written, at least the file.
	if st.ServerRDMAReadBytes != big || st.ServerRDMAWriteBytes < big || st.ServerChannelPassthrough != 0 ||
		uint64(st.ServerRDMAReadBytes) != os.BytesFetched || uint64(st.ServerRDMAWriteBytes) != os.BytesPlaced ||
		os.PeerInvalidated != os.Reads+os.Writes {
		t.Fatalf("want %d bytes RDMA-read, at least that RDMA-written, every registration invalidated by the daemon", big)
	}
}

// sambaServe runs smbd in inetd mode for the connection pc, through a
// loopback TCP relay; it is stopped, and its logs shown if t failed, when
// t ends.
func sambaServe(t *testing.T, dir string, argv []string, pc *client.Conn) {
	t.Helper()
	logf, err := os.OpenFile(filepath.Join(dir, "smbd.out"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		t.Error(err)
		return
	}
	defer logf.Close() // smbd has its own copy
	// smbd wants an inet peer (get_remote_hostname fails on a unix
	// socket): a loopback TCP connection relays the stream, byte for
	// byte (the framing is the same).
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Error(err)
		return
	}
	near, err := net.Dial("tcp", tl.Addr().String())
	if err != nil {
		t.Error(err)
		return
	}
	far, err := tl.Accept()
	tl.Close()
	if err != nil {
		t.Error(err)
		return
	}
	farFile, err := far.(*net.TCPConn).File()
	far.Close()
	if err != nil {
		t.Error(err)
		return
	}
	stream, err := pc.NetConn()
	pc.Close()
	if err != nil {
		t.Error(err)
		return
	}
	relayed := make(chan struct{}, 2)
	go func() { io.Copy(near, stream); near.(*net.TCPConn).CloseWrite(); relayed <- struct{}{} }()
	go func() { io.Copy(stream, near); stream.(*net.UnixConn).CloseWrite(); relayed <- struct{}{} }()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = farFile, logf, logf
	// Its own process group: smbd signals its group when it exits.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	err = cmd.Start()
	farFile.Close() // smbd holds it now
	if err != nil {
		t.Error(err)
		return
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		// The peer is gone or going: smbd reads EOF and exits.
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		near.Close()
		stream.Close()
		<-relayed
		<-relayed
		if t.Failed() {
			logs, _ := filepath.Glob(filepath.Join(dir, "log", "log.*"))
			for _, f := range append(logs, filepath.Join(dir, "smbd.out")) {
				out, _ := os.ReadFile(f)
				t.Logf("%s:\n%s", filepath.Base(f), out)
			}
		}
	})
}

func version(t *testing.T) string {
	out, _ := exec.Command("/usr/sbin/smbd", "--version").Output()
	return string(out)
}
