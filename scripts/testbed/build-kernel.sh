#!/bin/bash
# Builds the test kernel (a copy of /work/shared/testbed/build-kernel.sh, the recipe of the pinned bzImage):
# Debian's linux-source-6.12, tinyconfig plus kernel.fragment (siw, rxe, cifs and ksmbd with SMB Direct, 9p,
# virtio-net). ~10 min on 2 cores. setup.sh calls it only when the pinned prebuilt kernel is not available.
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
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq && $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
tar -C "$work" -xf /usr/src/linux-source-6.12.tar.xz
cd "$work"/linux-source-6.12
make -s tinyconfig
scripts/kconfig/merge_config.sh -m .config "$here/kernel.fragment" >/dev/null
make -s olddefconfig
make -s -j"$(nproc)" bzImage
# Copy then rename so a concurrent reader never sees half a kernel.
cp arch/x86/boot/bzImage "$out.tmp" && mv "$out.tmp" "$out"
echo "built $out ($(make -s kernelrelease))" >&2
