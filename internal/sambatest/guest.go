//go:build linux

package sambatest

import (
	"fmt"
	"strings"
)

// FileSizes are the files CifsGuest writes through each mount: empty, one byte, around a page (cifs.ko
// sends I/O of 4096 bytes and more through the RDMA channel by default), past one SMB2 credit's 1 MiB,
// and large.
var FileSizes = []int{0, 1, 4095, 4096, 1<<20 + 1, 64 << 20}

// A GuestCase is one run of CifsGuest's per-case script: mount //10.0.2.2/share with Options Mounts times,
// then write, read back, list, rename and delete.
type GuestCase struct {
	// Name is a shell word: the markers, the directory in the share and the host's go-ahead file use it.
	Name string
	// Options are mount.cifs's -o options (port, vers, credentials, cache=none, rdma, ...).
	Options string
	// Mounts is the number of mounts at once (default 1); the files are written through the first and
	// read through the last. Each must have its own connection (nosharesock) to count as two.
	Mounts int
	// MountFails: the mount must fail (wrong password, ...); nothing else runs.
	MountFails bool
}

// CifsGuest returns a guest script for testbed.Options.GuestScript that runs cases in order with
// cifs.ko against a server on the host. Per case it waits for the host's go-ahead in
// /mnt/work/<name>.start ("ok"; the host reads its counters first), then prints (each on a line of its
// own):
//
//	CASE <name> written       the files are in <share>/<name>; it then waits for the host's verdict
//	                          in /mnt/work/<name>.written ("ok", else the reason, which ends the script)
//	CASE <name> mounterror <status>: <mount's first line of errors>
//	CASE <name> mountfailed   for MountFails cases, instead of everything else
//	CASE <name> ok            read back, listed, renamed and deleted, unmounted
//
// The source files (FileSizes, from /dev/urandom, named f<size>) have their sha256sum output in
// /mnt/work/src.sums before the first case. Between "CASE <name> stats" and "CASE <name> ok" come
// /proc/fs/cifs/Stats and DebugData. The first failure ends the script with a non-zero status.
func CifsGuest(cases []GuestCase) string {
	var b strings.Builder
	b.WriteString(guestPrologue)
	for _, c := range cases {
		n := c.Mounts
		if n <= 0 {
			n = 1
		}
		fails := 0
		if c.MountFails {
			fails = 1
		}
		fmt.Fprintf(&b, "run_case %s '%s' %d %d || exit 1\n", c.Name, c.Options, n, fails)
	}
	return b.String()
}

// The guest is busybox: sh, head, dd, sha256sum. dd with conv=fsync, and cache=none in the options, put
// every byte on the wire before "written".
var guestPrologue = `set -u
rdma link add siw0 type siw netdev eth0 || exit 90
mkdir -p /tmp/src
for s in ` + sizes() + `; do head -c $s /dev/urandom > /tmp/src/f$s || exit 91; done
(cd /tmp/src && sha256sum f*) > /mnt/work/src.sums || exit 92
files=$(cd /tmp/src && ls)

# hostwait FILE: waits for the host's verdict in /mnt/work/FILE (at most 10 minutes).
hostwait() {
  i=0; while [ ! -e /mnt/work/$1 ]; do
    [ $i -lt 6000 ] || { echo "no /mnt/work/$1 from the host"; return 1; }
    sleep 0.1; i=$((i+1))
  done
  v=$(cat /mnt/work/$1); [ "$v" = ok ] || { echo "host: $v"; return 1; }
}

fail() { echo "CASE $name FAIL: $*"; dmesg | tail -n 30; return 1; }

# run_case NAME OPTIONS MOUNTS MOUNTFAILS
run_case() {
  name=$1 opts=$2 n=$3 mf=$4
  echo "CASE $name start"
  hostwait $name.start || { fail "host start"; return 1; }
  i=1; while [ $i -le $n ]; do
    mkdir -p /mnt/$name$i
    timeout -s KILL 120 mount -t cifs //10.0.2.2/share /mnt/$name$i -o "$opts" 2>/tmp/mount.err; rc=$?
    cat /tmp/mount.err
    if [ $mf = 1 ]; then
      [ $rc != 0 ] || { umount /mnt/$name$i; fail "the mount succeeded"; return 1; }
      echo "CASE $name mounterror $rc: $(head -n 1 /tmp/mount.err)"; echo "CASE $name mountfailed"; return 0
    fi
    [ $rc = 0 ] || { fail "mount $i exited $rc"; return 1; }
    i=$((i+1))
  done
  w=/mnt/${name}1/$name r=/mnt/$name$n/$name
  mkdir $w || { fail "mkdir"; return 1; }
  for f in $files; do
    dd if=/tmp/src/$f of=$w/$f bs=1M conv=fsync 2>/tmp/dd.err || { cat /tmp/dd.err; fail "writing $f"; return 1; }
  done
  echo "CASE $name written"
  hostwait $name.written || { fail "host check"; return 1; }
  # 1 MiB reads (sha256sum alone reads 4 KiB at a time, each an SMB2 READ with cache=none).
  for f in $files; do
    sum=$(dd if=$r/$f bs=1M 2>/tmp/dd.err | sha256sum) || { cat /tmp/dd.err; fail "reading $f"; return 1; }
    echo "${sum%% *}  $f"
  done > /tmp/read.sums
  diff /mnt/work/src.sums /tmp/read.sums || { fail "read back differs"; return 1; }
  ls -l $r
  for f in $files; do mv $w/$f $w/$f.moved || { fail "renaming $f"; return 1; }; done
  [ "$(cd $r && ls | tr '\n' ' ')" = "$(for f in $files; do printf '%s.moved ' $f; done)" ] || { ls -l $r; fail "listing after rename"; return 1; }
  for f in $files; do rm $w/$f.moved || { fail "deleting $f"; return 1; }; done
  rmdir $w && [ ! -e $w ] || { fail "removing the directory"; return 1; }
  # Through the reading mount by listing (a stat there may answer from its dentry cache for a second).
  ! ls /mnt/$name$n | grep -qx $name || { fail "the reading mount still lists the directory"; return 1; }
  echo "CASE $name stats"
  cat /proc/fs/cifs/Stats /proc/fs/cifs/DebugData
  i=1; while [ $i -le $n ]; do umount /mnt/$name$i || { fail "umount $i"; return 1; }; i=$((i+1)); done
  echo "CASE $name ok"
}
`

func sizes() string {
	var s []string
	for _, n := range FileSizes {
		s = append(s, fmt.Sprint(n))
	}
	return strings.Join(s, " ")
}
