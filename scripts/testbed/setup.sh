#!/bin/bash
# Prepares the VM testbed and prints where its parts are, one KEY=VALUE line each on stdout (progress goes to
# stderr); internal/testbed parses these lines. Cheap when everything is in place, so callers just run it.
#   1. installs the host's tools by name, only those missing (qemu-system-x86, cpio). Nothing the guest
#      runs is installed on the host: Debian's ksmbd-tools declares Conflicts: samba, and the host needs Samba;
#   2. fetches the guest's packages (ksmbd-tools, cifs-utils, rdma-core, ...; plus the libraries they depend
#      on that the host lacks) with `apt-get download` and unpacks them with `dpkg-deb -x` into the cache,
#      one tree per set of package versions;
#   3. picks the kernel: $SMBDIRECT_KERNEL (default: ../shared/testbed/bzImage next to the repository) if its
#      sha256 is the one pinned in bzImage.sha256; otherwise builds one with build-kernel.sh into the cache
#      (once per version of build-kernel.sh + kernel.fragment);
#   4. builds the initramfs from that tree into the cache, once per mkinitramfs.sh + package versions.
# Cache: ${SMBDIRECT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/smbdirect}.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${SMBDIRECT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/smbdirect}
mkdir -p "$cache"
# Several test processes may run this at once (go test runs packages in parallel): one at a time.
exec 9>"$cache/setup.lock"; flock 9
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT

export DEBIAN_FRONTEND=noninteractive
sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
# apt's output is kept out of the way while it works and shown in full when it fails. The dpkg lock is
# waited for, since another apt may be running on the machine.
# (apt-get download needs no root: sudo= for it.)
try_apt() { $sudo apt-get -o DPkg::Lock::Timeout=600 "$@" >"$tmp/apt.log" 2>&1; }
run_apt() { try_apt "$@" || { echo "setup: apt-get $* failed:" >&2; cat "$tmp/apt.log" >&2; return 1; }; }
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

host_pkgs=(qemu-system-x86 cpio)
missing=()
for p in "${host_pkgs[@]}"; do installed "$p" || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]} on the host" >&2
  # --no-remove: a host tool is never worth uninstalling something else.
  # The package lists are updated only when the install fails without it.
  try_apt install -y --no-install-recommends --no-remove "${missing[@]}" ||
    { run_apt update && run_apt install -y --no-install-recommends --no-remove "${missing[@]}"; }
fi

# The guest's packages. Which of their dependencies to fetch is what apt would install next to them on
# this host (a simulated install: it knows the host's packages and versions); of those, only the
# libraries (lib*) matter, the rest (python3, udev, ...) is never run in the guest. What the host has
# installed comes from the host.
guest_pkgs=(busybox-static iproute2 ksmbd-tools cifs-utils rdma-core ibverbs-providers ibverbs-utils rdmacm-utils perftest)
plan() {
  $sudo apt-get -s install --no-install-recommends "${guest_pkgs[@]}" >"$tmp/plan" 2>&1 || return 1
  # "Inst NAME (VERSION ...)" is a package to add; "Inst NAME [OLD] (NEW ...)" one the host has.
  awk '$1 == "Inst" && $3 ~ /^\(/ {print $2 "=" substr($3, 2)}' "$tmp/plan" > "$tmp/deps"
  # The guest's own packages are fetched even when the host has them, at the version apt would install.
  apt-cache policy "${guest_pkgs[@]}" 2>>"$tmp/plan" |
    awk '/^[^ ]/ {p = $1; sub(/:$/, "", p)} $1 == "Candidate:" && $2 != "(none)" {print p "=" $2}' > "$tmp/want"
  if [ "$(wc -l < "$tmp/want")" != ${#guest_pkgs[@]} ]; then
    { echo "no candidate version for some of ${guest_pkgs[*]}:"; cat "$tmp/want"; } >> "$tmp/plan"; return 1
  fi
  { cat "$tmp/want"; grep '^lib' "$tmp/deps" || true; } | sort -u > "$tmp/fetch"
}
# Planning asks apt (seconds on a busy machine, and every test process runs this): its answer is kept
# until the host's packages or package lists change.
inputs=$( (echo "${guest_pkgs[*]}"; stat -c '%n %s %Y' /var/lib/dpkg/status /var/lib/apt/lists/*_Packages* 2>/dev/null) | sha256sum)
if [ "$(cat "$cache/plan.inputs" 2>/dev/null)" = "$inputs" ] && [ -s "$cache/plan.fetch" ]; then
  cp "$cache/plan.fetch" "$tmp/fetch"
else
  if ! plan; then
    # A fresh machine may have no package lists yet, or stale ones.
    run_apt update
    plan || { echo "setup: cannot resolve the guest's packages:" >&2; cat "$tmp/plan" >&2; exit 1; }
  fi
  cp "$tmp/fetch" "$cache/plan.fetch"; echo "$inputs" > "$cache/plan.inputs"
fi
key=$(sha256sum < "$tmp/fetch" | cut -c1-16)
guest=$cache/guest-$key
if [ ! -d "$guest/root" ]; then
  echo "setup: fetching the guest's packages into $guest ($(wc -l < "$tmp/fetch") packages)" >&2
  rm -rf "$guest.tmp"; mkdir -p "$guest.tmp/debs" "$guest.tmp/root"
  # apt-get download run as root drops its privileges to _apt, which must be able to write there.
  chmod 777 "$guest.tmp/debs"
  mapfile -t fetch < "$tmp/fetch"
  (cd "$guest.tmp/debs" && sudo="" run_apt download "${fetch[@]}")
  for deb in "$guest.tmp"/debs/*.deb; do dpkg-deb -x "$deb" "$guest.tmp/root"; done
  cp "$tmp/fetch" "$guest.tmp/packages"
  rm -rf "$guest.tmp/debs"
  mv "$guest.tmp" "$guest"
fi
touch "$guest"
# Trees and initramfs images of package versions not used for a month go.
find "$cache" -maxdepth 1 \( -name 'guest-*' -o -name 'initramfs-*' \) -mtime +30 -exec rm -rf {} +

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
    echo "setup: building the kernel into $kernel (about 10 minutes on 2 cores)" >&2
    "$here/build-kernel.sh" "$kernel"
    echo "$recipe" > "$kernel.recipe"
  fi
fi

# The initramfs takes the guest's programs from the tree and a few things from the host (libc and its
# loader, gconv modules, libgcc_s), so it is keyed by the script, the tree, and the host's libc.
recipe=$( (cat "$here/mkinitramfs.sh" "$guest/packages"; dpkg-query -W libc6 libgcc-s1) | sha256sum | cut -c1-16)
initrd=$cache/initramfs-$recipe.cpio.gz
if [ ! -s "$initrd" ]; then
  echo "setup: building the initramfs into $initrd" >&2
  "$here/mkinitramfs.sh" "$initrd" "$guest/root"
fi
touch "$initrd"
echo "KERNEL=$kernel"
echo "INITRD=$initrd"
