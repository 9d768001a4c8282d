#!/bin/bash
# Prepares the VM testbed and prints where its parts are, one KEY=VALUE line each on stdout (progress goes to
# stderr); internal/testbed parses these lines. Cheap when everything is in place, so callers just run it.
#   1. installs the host packages by name, only those missing (apt-get update + install);
#   2. picks the kernel: $SMBDIRECT_KERNEL (default: ../shared/testbed/bzImage next to the repository) if its
#      sha256 is the one pinned in bzImage.sha256; otherwise builds one with build-kernel.sh into the cache
#      (once per version of build-kernel.sh + kernel.fragment);
#   3. builds the initramfs into the cache when it is missing or mkinitramfs.sh or the packages changed.
# Cache: ${SMBDIRECT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/smbdirect}.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${SMBDIRECT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/smbdirect}
mkdir -p "$cache"
# Several test processes may run this at once (go test runs packages in parallel): one at a time.
exec 9>"$cache/setup.lock"; flock 9

export DEBIAN_FRONTEND=noninteractive
pkgs=(qemu-system-x86 busybox-static cpio ksmbd-tools cifs-utils rdma-core ibverbs-providers ibverbs-utils
      rdmacm-utils perftest)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq && $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

pinned=$(awk '{print $1; exit}' "$here/bzImage.sha256")
kernel=${SMBDIRECT_KERNEL:-$repo/../shared/testbed/bzImage}
if [ -f "$kernel" ] && [ "$(sha256sum < "$kernel" | awk '{print $1}')" = "$pinned" ]; then
  kernel=$(realpath "$kernel")
else
  [ -f "$kernel" ] && echo "setup: $kernel does not match the pinned sha256, not using it" >&2
  kernel=$cache/bzImage
  # A kernel we build is reproducible only up to timestamps, so it is keyed by its recipe instead: a stamp
  # holds the hash of the recipe it was built from (not mtimes, which a fresh clone resets).
  recipe=$(cat "$here/build-kernel.sh" "$here/kernel.fragment" | sha256sum)
  if [ ! -s "$kernel" ] || [ "$(cat "$kernel.recipe" 2>/dev/null)" != "$recipe" ]; then
    echo "setup: building the kernel into $kernel (about 10 minutes)" >&2
    "$here/build-kernel.sh" "$kernel"
    echo "$recipe" > "$kernel.recipe"
  fi
fi

# The initramfs is rebuilt when mkinitramfs.sh or the host packages it copies from have changed.
initrd=$cache/initramfs.cpio.gz
recipe=$( (cat "$here/mkinitramfs.sh"; dpkg-query -W "${pkgs[@]}" 2>/dev/null) | sha256sum)
if [ ! -s "$initrd" ] || [ "$(cat "$initrd.recipe" 2>/dev/null)" != "$recipe" ]; then
  echo "setup: building the initramfs into $initrd" >&2
  "$here/mkinitramfs.sh" "$initrd"
  echo "$recipe" > "$initrd.recipe"
fi
echo "KERNEL=$kernel"
echo "INITRD=$initrd"
