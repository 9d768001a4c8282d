package testbed

import (
	"context"
	"net"
	"testing"

	gosmb2 "github.com/cloudsoda/go-smb2"
)

// KsmbdGuest is a guest script that brings up siw on eth0 and Linux ksmbd
// (SMB Direct on port 5445) with one share, //GuestIP/share, user tester,
// password secret; prints KSMBD_READY once ksmbd listens on 5445; and keeps
// the VM up until the host creates ShareDir()/done (at most 360 s).
//
// ksmbd.mountd returns before the kernel has started its listeners (a work
// item does that after mountd's startup message), and in the emulated guest
// on a busy host that took over the second the script used to wait: the
// host's first connection was then reset. So the script waits for siw's
// listening TCP socket on port 5445 (hex 1545, state 0A = LISTEN, in
// /proc/net/tcp) instead.
const KsmbdGuest = `rdma link add siw0 type siw netdev eth0 || exit 90
ksmbd.adduser -a tester -p secret >/dev/null || exit 91
mkdir -p /etc/ksmbd /srv/share && chmod 1777 /srv/share
printf '[global]\n\tserver min protocol = SMB2_10\n[share]\n\tpath = /srv/share\n\tread only = no\n\tvalid users = tester\n' > /etc/ksmbd/ksmbd.conf
ksmbd.mountd || exit 92
i=0; while ! grep -q '^ *[0-9]*: [0-9A-F]*:1545 00000000:0000 0A ' /proc/net/tcp; do
  [ $i -lt 600 ] || { echo "ksmbd is not listening on 5445 after 60 s:"; cat /proc/net/tcp; dmesg | tail -n 20; exit 93; }
  sleep 0.1; i=$((i+1))
done
echo KSMBD_READY
i=0; while [ ! -e /mnt/work/done ] && [ $i -lt 3600 ]; do sleep 0.1; i=$((i+1)); done
`

// MountShare logs in to KsmbdGuest's share as tester with the unmodified
// go-smb2 client over conn (SMB2 framed as on TCP: an smbd.Conn, a stream
// from smbdirectd, ...). The session ends when t does.
func MountShare(ctx context.Context, t testing.TB, conn net.Conn, addr string) *gosmb2.Share {
	t.Helper()
	d := &gosmb2.Dialer{Initiator: &gosmb2.NTLMInitiator{User: "tester", Password: "secret"}}
	s, err := d.DialConn(ctx, conn, addr)
	if err != nil {
		t.Fatalf("go-smb2 session: %v", err)
	}
	t.Cleanup(func() { s.Logoff() })
	share, err := s.Mount(`\\` + GuestIP + `\share`)
	if err != nil {
		t.Fatalf("mount: %v", err)
	}
	t.Cleanup(func() { share.Umount() })
	return share
}
