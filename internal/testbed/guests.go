package testbed

// KsmbdGuest is a guest script that brings up siw on eth0 and Linux ksmbd
// (SMB Direct on port 5445) with one share, //GuestIP/share, user tester,
// password secret; prints KSMBD_READY; and keeps the VM up until the host
// creates ShareDir()/done (at most 120 s).
const KsmbdGuest = `rdma link add siw0 type siw netdev eth0 || exit 90
ksmbd.adduser -a tester -p secret >/dev/null || exit 91
mkdir -p /etc/ksmbd /srv/share && chmod 1777 /srv/share
printf '[global]\n\tserver min protocol = SMB2_10\n[share]\n\tpath = /srv/share\n\tread only = no\n\tvalid users = tester\n' > /etc/ksmbd/ksmbd.conf
ksmbd.mountd || exit 92
sleep 1
echo KSMBD_READY
i=0; while [ ! -e /mnt/work/done ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); done
`
