#!/bin/bash
# Builds a small initramfs: static busybox, the RDMA/SMB user-space tools (rdma, rping, ibv_*, perftest,
# rdma_server/client, udaddy, ksmbd tools, mount.cifs, the siw/rxe providers) with their libraries, and an
# /init that runs /mnt/work/guest.sh from the 9p share "work", prints GUEST_EXIT=<status> and ends the VM.
# The tools come from GUEST_ROOT, a tree of the guest's Debian packages unpacked with dpkg-deb -x (setup.sh
# makes it: they are not installed on the host, where ksmbd-tools would remove Samba). A library is taken
# from that tree when it is there and from the host otherwise (libc, its loader, whatever the host has).
# usage: mkinitramfs.sh OUT.cpio.gz GUEST_ROOT
set -euo pipefail
usage="usage: mkinitramfs.sh OUT.cpio.gz GUEST_ROOT"
out=$(realpath -m "${1:?$usage}")
g=$(realpath "${2:?$usage}")
root=$(mktemp -d); chmod 755 "$root"
trap 'rm -rf "$root" "$out.tmp"' EXIT
arch=x86_64-linux-gnu
# Merged /usr as on the host, so /sbin/x, /usr/sbin/x, /lib/... and /usr/lib/... (the packages use both)
# land in one place.
mkdir -p "$root"/{etc,proc,sys,dev,tmp,run,mnt/work,usr/bin,usr/sbin,usr/lib/$arch,usr/lib64,var/run,etc/ksmbd,srv/share,root}
for d in bin sbin lib lib64; do ln -s usr/$d "$root/$d"; done
# The path of file F (absolute, as in the guest) inside GUEST_ROOT, following symlinks inside the tree: an
# absolute link there means the tree's file. The packages are not merged-/usr (/sbin/mount.cifs), so a
# /usr/x that the tree lacks is looked for at /x.
in_tree() {
  local f=$1 t _
  for _ in 1 2 3 4 5 6 7 8; do
    if [ ! -e "$g$f" ] && [ ! -L "$g$f" ] && [ "${f#/usr/}" != "$f" ]; then f=${f#/usr}; fi
    [ -L "$g$f" ] || { echo "$g$f"; return; }
    t=$(readlink "$g$f")
    case $t in /*) f=$t ;; *) f=$(dirname "$f")/$t ;; esac
    f=$(realpath -m -s "$f")
  done
  echo "mkinitramfs: too many symlinks at $1" >&2; return 1
}
libpath="$g/lib/$arch:$g/usr/lib/$arch:$g/usr/lib/$arch/libibverbs"
# Copies the guest file F (and the shared libraries it needs) into the image at F.
copy_with_libs() {
  local f=$1 src deps lib dst
  src=$(in_tree "$f")
  mkdir -p "$root$(dirname "$f")"; cp -L "$src" "$root$f"
  # ldd runs the host's loader over the binary, looking in the tree first. Anything unresolved would
  # only show up in the guest as an obscure failure of one test, so it stops the build here.
  deps=$(LD_LIBRARY_PATH=$libpath ldd "$src" 2>&1) || { echo "mkinitramfs: ldd $src: $deps" >&2; return 1; }
  if grep -q 'not found' <<<"$deps"; then echo "mkinitramfs: $f needs a library neither tree has:" >&2; echo "$deps" >&2; return 1; fi
  awk '/=>/ {print $3} /^[ \t]*\/lib/ {print $1}' <<<"$deps" | while read -r lib; do
    [ -n "$lib" ] && [ -e "$lib" ] || continue
    # A library from the tree keeps its guest path; one from the host keeps its host path.
    dst=${lib#"$g"}
    [ -e "$root$dst" ] && continue
    mkdir -p "$root$(dirname "$dst")"; cp -L "$lib" "$root$dst"
  done
}
for b in /usr/bin/rdma /usr/sbin/ksmbd.mountd /usr/sbin/ksmbd.adduser /usr/sbin/ksmbd.addshare /usr/sbin/ksmbd.control \
         /usr/sbin/mount.cifs /usr/bin/rping /usr/bin/ibv_devices /usr/bin/ibv_devinfo /usr/bin/ib_send_bw /usr/bin/ib_write_bw \
         /usr/bin/ib_read_bw /usr/bin/udaddy /usr/bin/rdma_server /usr/bin/rdma_client; do
  # Every one of these is used by a test or by hand in the guest: a missing one is an error, not a warning.
  [ -e "$(in_tree "$b")" ] || { echo "mkinitramfs: $b is not in $g" >&2; exit 1; }
  copy_with_libs "$b"
done
cp "$(in_tree /bin/busybox)" "$root/bin/busybox"
# After the tools, so that a tool is never written through an applet link onto busybox.
for app in $("$root/bin/busybox" --list); do [ -e "$root/bin/$app" ] || ln -s busybox "$root/bin/$app"; done
cp -L /lib64/ld-linux-x86-64.so.2 "$root/lib64/"
for p in "$g/usr/lib/$arch"/libibverbs/lib{siw,rxe}-rdmav*.so; do copy_with_libs "${p#"$g"}"; done
mkdir -p "$root/etc/libibverbs.d"; cp "$g"/etc/libibverbs.d/{siw,rxe}.driver "$root/etc/libibverbs.d/"
# ksmbd tools convert passwords to UTF-16 through iconv (the host's libc, so its gconv modules);
# pthread_exit needs libgcc_s
mkdir -p "$root/usr/lib/$arch/gconv"
cp /usr/lib/$arch/gconv/{UTF-16.so,UNICODE.so,UTF-32.so,gconv-modules,gconv-modules.cache} "$root/usr/lib/$arch/gconv/" 2>/dev/null || true
cp -r /usr/lib/$arch/gconv/gconv-modules.d "$root/usr/lib/$arch/gconv/" 2>/dev/null || true
cp -L /lib/$arch/libgcc_s.so.1 "$root/lib/$arch/"
# ksmbd tools look some things up by name
cp /lib/$arch/libnss_files.so.2 "$root/lib/$arch/" 2>/dev/null || true
printf 'root:x:0:0:root:/root:/bin/sh\ntester:x:1000:1000::/tmp:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n' > "$root/etc/passwd"; echo 'root:x:0:' > "$root/etc/group"
echo 'passwd: files' > "$root/etc/nsswitch.conf"; echo '127.0.0.1 localhost' > "$root/etc/hosts"
# The shared init ended with "echo o > /proc/sysrq-trigger 2>/dev/null": the kernel has no CONFIG_MAGIC_SYSRQ
# (and no ACPI, so a power-off would only halt the CPU), and the 2>/dev/null came after the failing redirection,
# hence the error on the console. What ends the VM is "reboot -f": qemu runs with -no-reboot, so a reboot exits
# qemu. Should that ever return, /init exits, the kernel panics and panic=-1 reboots, which also exits qemu.
cat > "$root/init" <<'INIT'
#!/bin/sh
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs dev /dev 2>/dev/null
mount -t tmpfs tmp /tmp; mount -t tmpfs run /run; mount -t tmpfs srv /srv; mkdir -p /srv/share /run/ksmbd /var/run
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
ip link set lo up
ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 && ip route add default via 10.0.2.2
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 work /mnt/work 2>/dev/null || echo "init: cannot mount the 9p share"
# No interactive fallback: nobody types at this console, a shell would only wait for the host's timeout.
if [ -x /mnt/work/guest.sh ]; then (cd /mnt/work && /mnt/work/guest.sh); echo "GUEST_EXIT=$?"; else echo "init: no executable /mnt/work/guest.sh"; echo "GUEST_EXIT=127"; fi
sync
reboot -f
INIT
chmod +x "$root/init"
# Write then rename so a concurrent reader never sees half an archive.
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) > "$out.tmp" && mv "$out.tmp" "$out"
