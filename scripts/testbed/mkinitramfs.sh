#!/bin/bash
# Builds a small initramfs (adapted from /work/shared/testbed/mkinitramfs.sh): static busybox, this machine's
# RDMA/SMB user-space tools with their libraries (rdma, rping, ibv_*, perftest, rdma_server/client, udaddy,
# ksmbd tools, mount.cifs, the siw/rxe providers), and an /init that runs /mnt/work/guest.sh from the 9p share
# "work", prints GUEST_EXIT=<status> and ends the VM.
# usage: mkinitramfs.sh OUT.cpio.gz
set -euo pipefail
out=$(realpath -m "${1:?usage: mkinitramfs.sh OUT.cpio.gz}")
root=$(mktemp -d); chmod 755 "$root"
trap 'rm -rf "$root" "$out.tmp"' EXIT
mkdir -p "$root"/{bin,sbin,etc,proc,sys,dev,tmp,run,mnt/work,usr/bin,usr/sbin,lib64,var/run,etc/ksmbd,srv/share,root}
cp /bin/busybox "$root/bin/busybox"
for app in $("$root/bin/busybox" --list); do [ -e "$root/bin/$app" ] || ln -s busybox "$root/bin/$app"; done
copy_with_libs() {
  local f=$1
  mkdir -p "$root$(dirname "$f")"; cp -L "$f" "$root$f"
  ldd "$f" 2>/dev/null | awk '/=>/ {print $3} /^[ \t]*\/lib/ {print $1}' | while read -r lib; do
    [ -n "$lib" ] && [ -e "$lib" ] || continue
    mkdir -p "$root$(dirname "$lib")"; cp -Ln "$lib" "$root$lib" 2>/dev/null || true
  done
}
for b in /usr/bin/rdma /usr/sbin/ksmbd.mountd /usr/sbin/ksmbd.adduser /usr/sbin/ksmbd.addshare /usr/sbin/ksmbd.control \
         /usr/sbin/mount.cifs /usr/bin/rping /usr/bin/ibv_devices /usr/bin/ibv_devinfo /usr/bin/ib_send_bw /usr/bin/ib_write_bw \
         /usr/bin/ib_read_bw /usr/bin/udaddy /usr/bin/rdma_server /usr/bin/rdma_client; do
  if [ -x "$b" ]; then copy_with_libs "$b"; else echo "mkinitramfs: $b missing, left out" >&2; fi
done
cp -L /lib64/ld-linux-x86-64.so.2 "$root/lib64/"
for p in /usr/lib/x86_64-linux-gnu/libibverbs/lib{siw,rxe}-rdmav*.so; do copy_with_libs "$p"; done
mkdir -p "$root/etc/libibverbs.d"; cp /etc/libibverbs.d/{siw,rxe}.driver "$root/etc/libibverbs.d/"
# ksmbd tools convert passwords to UTF-16 through iconv; pthread_exit needs libgcc_s
mkdir -p "$root/usr/lib/x86_64-linux-gnu/gconv"
cp /usr/lib/x86_64-linux-gnu/gconv/{UTF-16.so,UNICODE.so,UTF-32.so,gconv-modules,gconv-modules.cache} "$root/usr/lib/x86_64-linux-gnu/gconv/" 2>/dev/null || true
cp -r /usr/lib/x86_64-linux-gnu/gconv/gconv-modules.d "$root/usr/lib/x86_64-linux-gnu/gconv/" 2>/dev/null || true
cp -L /lib/x86_64-linux-gnu/libgcc_s.so.1 "$root/lib/x86_64-linux-gnu/"
# ksmbd tools look some things up by name
cp /lib/x86_64-linux-gnu/libnss_files.so.2 "$root/lib/x86_64-linux-gnu/" 2>/dev/null || true
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
