#!/bin/bash
# Builds the test kernel (the recipe the pinned bzImage was built with): Debian's linux-source-6.12,
# tinyconfig plus kernel.fragment (siw, rxe, cifs and ksmbd with SMB Direct, 9p, virtio-net). ~10 min on 2
# idle cores. setup.sh calls it only when the pinned prebuilt kernel is not available. Installs the build
# tools on the host by name; the source is unpacked into a temporary directory (TMPDIR) and removed after.
# usage: build-kernel.sh OUT_BZIMAGE
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=$(realpath -m "${1:?usage: build-kernel.sh OUT_BZIMAGE}")
export DEBIAN_FRONTEND=noninteractive
pkgs=(linux-source-6.12 build-essential flex bison bc libelf-dev libssl-dev xz-utils)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
if [ ${#missing[@]} -gt 0 ]; then
  echo "build-kernel: installing ${missing[*]} on the host" >&2
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  # apt's output is shown when it fails; another apt on the machine is waited for.
  for cmd in update "install -y --no-install-recommends --no-remove ${missing[*]}"; do
    # shellcheck disable=SC2086 # cmd is words
    if ! $sudo apt-get -o DPkg::Lock::Timeout=600 $cmd >"$work/apt.log" 2>&1; then
      echo "build-kernel: apt-get $cmd failed:" >&2; cat "$work/apt.log" >&2; exit 1
    fi
  done
fi
tar -C "$work" -xf /usr/src/linux-source-6.12.tar.xz
cd "$work"/linux-source-6.12
make -s tinyconfig
scripts/kconfig/merge_config.sh -m .config "$here/kernel.fragment" >/dev/null
make -s olddefconfig
make -s -j"$(nproc)" bzImage
# Copy then rename so a concurrent reader never sees half a kernel.
cp arch/x86/boot/bzImage "$out.tmp" && mv "$out.tmp" "$out"
echo "built $out ($(make -s kernelrelease))" >&2
