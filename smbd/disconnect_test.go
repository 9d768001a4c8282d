package smbd_test

// What an SMB Direct client does on the wire when it closes, and what
// ksmbd makes of it (issue 9, part A8; docs/siw-wire-notes.md,
// "Disconnect"). TestCloseOnTheWire runs between two of our endpoints;
// TestLinuxDisconnect runs go-smb2 over our Conn against ksmbd on siw in
// the VM, with Linux's own client (cifs.ko) for comparison, opt-in with
// SMBDIRECT_VM=1 (it fails, never skips, when the VM cannot run).

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	gosmb2 "github.com/cloudsoda/go-smb2"

	"github.com/smbdirect/smbdirect/internal/leakcheck"
	"github.com/smbdirect/smbdirect/internal/testbed"
	"github.com/smbdirect/smbdirect/iwarp"
	"github.com/smbdirect/smbdirect/smbd"
)

// TestCloseOnTheWire: a client that closes right after reading the last
// response (as go-smb2 does after LOGOFF) sends its FIN after everything
// it sent, without a Terminate or reset, and the server answers with its
// own FIN; Close returns once that came.
func TestCloseOnTheWire(t *testing.T) {
	leakcheck.Check(t)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	cfg := func() *smbd.Config {
		return &smbd.Config{Provider: iwarp.New(iwarp.Config{FirstSendDelay: -1})}
	}
	l, err := smbd.Listen(ctx, "127.0.0.1:0", cfg())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	rec, addr := startRelay(t, l.Addr().String())
	accepted := make(chan *smbd.Conn, 1)
	go func() {
		s, err := l.AcceptSMBD(ctx)
		if err != nil {
			t.Error(err)
		}
		accepted <- s
	}()
	c, err := smbd.Dial(ctx, addr, cfg())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s := <-accepted
	if s == nil {
		return
	}
	defer s.Close()

	buf := make([]byte, 1024)
	if err := c.WriteMessage(smb2Header(smb2Logoff, false)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ReadMessage(buf); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteMessage(smb2Header(smb2Logoff, true)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ReadMessage(buf); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	if _, err := s.ReadMessage(buf); !errors.Is(err, io.EOF) {
		t.Errorf("server read after the client's close: %v, want io.EOF", err)
	}
	s.Close()
	if err := rec.wait(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	checkClientCloses(t, rec.events())
	t.Logf("wire:\n%sClose took %v", rec, took)
}

// smb2Header is a bare SMB2 header for command cmd.
func smb2Header(cmd uint16, response bool) []byte {
	h := make([]byte, 64)
	copy(h, "\xfeSMB")
	binary.LittleEndian.PutUint16(h[4:], 64)
	binary.LittleEndian.PutUint16(h[12:], cmd)
	if response {
		h[16] = 1
	}
	return h
}

// disconnectGuest is testbed.KsmbdGuest plus kernel debug output for
// the two places that decide a send's fate at a peer's close: siw's
// socket state change (the peer's FIN sets tx_suspend) and siw's failed
// send ("processing failed"). Each time the host creates
// /mnt/work/dumpN (N = 0, 1, ...) the guest prints its kernel log since
// the last dump between DMESG_N_BEGIN and DMESG_N_END; /mnt/work/cifsN
// makes the guest run N cifs.ko mount/umount cycles over SMB Direct to
// the same ksmbd first (CIFS_DONE when finished); /mnt/work/relaycifs one
// cycle to 10.0.2.2, the host (mount's status, then CIFS_RELAY_END).
// /mnt/work/done ends it.
const disconnectGuest = `rdma link add siw0 type siw netdev eth0 || exit 90
ksmbd.adduser -a tester -p secret >/dev/null || exit 91
mkdir -p /etc/ksmbd /srv/share /mnt/c && chmod 1777 /srv/share
printf '[global]\n\tserver min protocol = SMB2_10\n[share]\n\tpath = /srv/share\n\tread only = no\n\tvalid users = tester\n' > /etc/ksmbd/ksmbd.conf
ksmbd.mountd || exit 92
ctl=/sys/kernel/debug/dynamic_debug/control
echo 'format "processing failed" +p' > $ctl || exit 93
echo 'func siw_cm_llp_state_change +p' > $ctl || exit 94
# The listener on 5445 comes up a moment after ksmbd.mountd returns.
i=0; until grep -q ':1545 00000000:0000 0A' /proc/net/tcp; do [ $i -lt 300 ] || exit 96; sleep 0.1; i=$((i+1)); done
echo "LISTENING after $i polls of 0.1 s"
dmesg -c >/dev/null
echo KSMBD_READY
n=0; i=0
while [ ! -e /mnt/work/done ] && [ $i -lt 3000 ]; do
	for f in /mnt/work/cifs*; do
		[ -e "$f" ] || continue
		rm -f "$f"
		k=0
		while [ $k -lt "${f#/mnt/work/cifs}" ]; do
			mount -t cifs //10.0.2.15/share /mnt/c -o rdma,vers=3.1.1,username=tester,password=secret,ip=10.0.2.15 || exit 95
			ls /mnt/c >/dev/null
			umount /mnt/c
			k=$((k+1))
		done
		sleep 1
		echo CIFS_DONE
	done
	if [ -e /mnt/work/relaycifs ]; then
		rm -f /mnt/work/relaycifs
		rc=0
		mount -t cifs //10.0.2.2/share /mnt/c -o rdma,vers=3.1.1,username=tester,password=secret,ip=10.0.2.2 || rc=$?
		[ $rc = 0 ] && { ls /mnt/c >/dev/null; umount /mnt/c; }
		echo "CIFS_RELAY_STATUS $rc"
		echo CIFS_RELAY_END
	fi
	if [ -e /mnt/work/dump$n ]; then
		sleep 1
		echo "DMESG_${n}_BEGIN"; dmesg -c; echo "DMESG_${n}_END"
		n=$((n+1))
	fi
	sleep 0.1; i=$((i+1))
done
`

func TestLinuxDisconnect(t *testing.T) {
	testbed.Require(t)
	// The relay below listens on the fixed port 5445 for cifs.ko: held
	// from the start, before the VM's time runs.
	testbed.LockHostPort(t, 5445)
	vm := testbed.StartT(t, testbed.Options{
		GuestScript: disconnectGuest,
		Forwards:    []testbed.Forward{{GuestPort: 5445}},
		Timeout:     300 * time.Second,
	})
	ctx, cancel := context.WithTimeout(t.Context(), 280*time.Second)
	defer cancel()
	defer os.WriteFile(vm.ShareDir()+"/done", nil, 0o644)
	if _, err := vm.WaitFor(ctx, "KSMBD_READY"); err != nil {
		t.Fatalf("ksmbd did not start: %v", err)
	}
	// How long ksmbd's listener took to come up after ksmbd.mountd.
	line, _ := vm.WaitFor(ctx, "LISTENING after")
	t.Log(line)
	target := net.JoinHostPort("127.0.0.1", strconv.Itoa(vm.HostPort(5445)))
	dumps := 0
	dump := func() string {
		t.Helper()
		n := strconv.Itoa(dumps)
		dumps++
		if err := os.WriteFile(vm.ShareDir()+"/dump"+n, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := vm.WaitFor(ctx, "DMESG_"+n+"_END"); err != nil {
			t.Fatal(err)
		}
		log := between(vm.Output(), "DMESG_"+n+"_BEGIN", "DMESG_"+n+"_END")
		checkSendErrors(t, log)
		return log
	}

	// One session through the recording relay: what we send at the end.
	rec, addr := startRelay(t, target)
	conn, err := smbd.Dial(ctx, addr, &smbd.Config{})
	if err != nil {
		t.Fatalf("SMB Direct to ksmbd: %v", err)
	}
	sess, share := session(ctx, t, conn, target)
	if err := share.WriteFile("a.bin", make([]byte, 5000), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := share.Umount(); err != nil {
		t.Fatalf("umount: %v", err)
	}
	rec.mark("host: Logoff (go-smb2 closes the Conn when the response came)")
	if err := sess.Logoff(); err != nil {
		t.Fatalf("logoff: %v", err)
	}
	rec.mark("host: Logoff returned")
	if err := rec.wait(10 * time.Second); err != nil {
		t.Error(err)
	}
	ev := rec.events()
	t.Logf("wire:\n%s", rec)
	checkClientCloses(t, ev)
	// The LOGOFF exchange is the last SMB2 traffic, and ksmbd sends
	// nothing after its response (so that response is the send that
	// ksmbd may report failed).
	var lastReq, lastResp, lastFromServer wireEvent
	for _, e := range ev {
		switch {
		case e.Kind == evSend && e.Dir == toServer && e.SMB2Cmd >= 0:
			lastReq = e
		case e.Kind == evSend && e.Dir == toClient:
			lastFromServer = e
			if e.SMB2Cmd >= 0 {
				lastResp = e
			}
		}
	}
	if lastReq.SMB2Cmd != smb2Logoff || lastReq.SMB2Resp || lastResp.SMB2Cmd != smb2Logoff || !lastResp.SMB2Resp ||
		lastResp.At < lastReq.At || lastFromServer != lastResp {
		t.Errorf("want the LOGOFF request, then its response as ksmbd's last Send; got %q, %q, last from ksmbd %q",
			lastReq, lastResp, lastFromServer)
	}
	t.Logf("guest log:\n%s", dump())

	// cifs.ko's close on the wire: it mounts the share through a relay
	// on the host, which passes the connection back into the VM's
	// forwarded ksmbd port. cifs.ko dials port 5445 (then 445) and nothing
	// else, so the relay needs 127.0.0.1:5445 (the guest's 10.0.2.2:5445).
	if crec, _, err := startRelayOn(t, "127.0.0.1:5445", target); err != nil {
		t.Logf("cifs.ko's close on the wire not recorded: %v", err)
	} else {
		if err := os.WriteFile(vm.ShareDir()+"/relaycifs", nil, 0o644); err != nil {
			t.Fatal(err)
		}
		// WaitFor may return a line before its end has come: the status
		// is on a line of its own, before the marker.
		if _, err := vm.WaitFor(ctx, "CIFS_RELAY_END"); err != nil {
			t.Fatal(err)
		}
		if line, _ := vm.WaitFor(ctx, "CIFS_RELAY_STATUS"); line != "CIFS_RELAY_STATUS 0" {
			t.Fatalf("cifs.ko through the relay: %s", line)
		}
		if err := crec.wait(10 * time.Second); err != nil {
			t.Error(err)
		}
		t.Logf("cifs.ko's mount, ls and umount through the relay:\n%s", crec)
		checkClientCloses(t, crec.events())
		t.Logf("guest log:\n%s", dump())
	}

	// The same close many times, direct: how often siw fails ksmbd's
	// LOGOFF response although it was delivered. Then with Close held
	// back, and then cifs.ko's close.
	const runs = 10
	for _, delay := range []time.Duration{0, 100 * time.Millisecond} {
		for range runs {
			conn, err := smbd.Dial(ctx, target, &smbd.Config{})
			if err != nil {
				t.Fatalf("SMB Direct to ksmbd: %v", err)
			}
			sess, _ := session(ctx, t, delayedClose{conn, delay}, target)
			if err := sess.Logoff(); err != nil {
				t.Fatalf("logoff: %v", err)
			}
		}
		log := dump()
		t.Logf("%d go-smb2 sessions, Close %v after the LOGOFF response: %d \"Send error\" lines from ksmbd",
			runs, delay, strings.Count(log, "Send error"))
	}
	if err := os.WriteFile(vm.ShareDir()+"/cifs"+strconv.Itoa(runs), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := vm.WaitFor(ctx, "CIFS_DONE"); err != nil {
		t.Fatal(err)
	}
	log := dump()
	t.Logf("%d cifs.ko mount/umount cycles: %d \"Send error\" lines from ksmbd", runs, strings.Count(log, "Send error"))
}

// checkSendErrors checks the explanation of docs/siw-wire-notes.md
// ("Disconnect"): every "Send error" ksmbd logs is a local QP operation
// error on a Send, and comes after siw failed a send with -ECONNABORTED
// (-103), which siw_qp_sq_proc_tx returns when the peer's FIN was seen
// after an FPDU went out. Each siw line explains one ksmbd line.
func checkSendErrors(t *testing.T, log string) {
	t.Helper()
	unexplained := 0 // siw failures not yet matched
	for _, l := range strings.Split(log, "\n") {
		switch {
		case strings.Contains(l, "processing failed: -103"):
			unexplained++
		case strings.Contains(l, "Send error"):
			if !strings.Contains(l, "local QP operation error (2)', opcode=0") {
				t.Errorf("unexplained ksmbd send error: %s", l)
			} else if unexplained == 0 {
				t.Errorf("ksmbd's %q without siw's \"processing failed: -103\" before it:\n%s", l, log)
			} else {
				unexplained--
			}
		}
	}
}

// delayedClose holds a Close back for a while.
type delayedClose struct {
	*smbd.Conn
	d time.Duration
}

func (c delayedClose) Close() error {
	time.Sleep(c.d)
	return c.Conn.Close()
}

func session(ctx context.Context, t *testing.T, conn net.Conn, addr string) (*gosmb2.Session, *gosmb2.Share) {
	t.Helper()
	d := &gosmb2.Dialer{Initiator: &gosmb2.NTLMInitiator{User: "tester", Password: "secret"}}
	sess, err := d.DialConn(ctx, conn, addr)
	if err != nil {
		conn.Close()
		t.Fatalf("go-smb2 session: %v", err)
	}
	share, err := sess.Mount(`\\` + testbed.GuestIP + `\share`)
	if err != nil {
		sess.Logoff()
		t.Fatalf("mount: %v", err)
	}
	return sess, share
}

func between(s, from, to string) string {
	i := strings.Index(s, from)
	j := strings.Index(s, to)
	if i < 0 || j < i {
		return ""
	}
	return s[i+len(from) : j]
}
