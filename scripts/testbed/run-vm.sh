#!/bin/bash
# Boots the test kernel under qemu (software emulation: no KVM needed, and KVM hangs in some nested setups)
# with DIR shared over 9p as /mnt/work; the guest runs /mnt/work/guest.sh, prints GUEST_EXIT=<status> and the
# VM ends. Exits with the guest script's status, 124 if the VM ran into TESTBED_TIMEOUT, 125 if it ended
# without a GUEST_EXIT line.
# Guest network (qemu user mode): the guest is 10.0.2.15; the host's loopback is 10.0.2.2 from the guest.
# usage: run-vm.sh DIR [hostfwd=tcp:127.0.0.1:HOSTPORT-10.0.2.15:GUESTPORT]...
# env: TESTBED_KERNEL and TESTBED_INITRD (when both are set, setup.sh is not consulted), TESTBED_MEM (MiB,
#      default 1024), TESTBED_CPUS (default 2), TESTBED_TIMEOUT (seconds, default 120).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dir=$(cd "${1:?usage: run-vm.sh DIR [hostfwd=...]...}" && pwd); shift
if [ -z "${TESTBED_KERNEL:-}" ] || [ -z "${TESTBED_INITRD:-}" ]; then
  paths=$("$here/setup.sh")
  TESTBED_KERNEL=$(sed -n 's/^KERNEL=//p' <<<"$paths"); TESTBED_INITRD=$(sed -n 's/^INITRD=//p' <<<"$paths")
fi
fwd=""; for r in "$@"; do fwd="$fwd,$r"; done
log=$(mktemp); trap 'rm -f "$log"' EXIT
# --foreground keeps timeout (and qemu) in our process group, so whoever started us can kill the whole group.
# -display none -serial stdio (rather than -nographic) keeps SeaBIOS off the console; romfile= skips iPXE.
# no_timer_check: the kernel's boot-time check that the IO-APIC timer ticks counts ticks over a delay loop;
# emulated on a busy host the ticks come late, and the kernel panicked with "IO-APIC + timer doesn't work!".
set +e
timeout --foreground -k 5 "${TESTBED_TIMEOUT:-120}" \
  qemu-system-x86_64 -m "${TESTBED_MEM:-1024}" -smp "${TESTBED_CPUS:-2}" -display none -serial stdio \
  -monitor none -no-reboot -kernel "$TESTBED_KERNEL" -initrd "$TESTBED_INITRD" \
  -append "console=ttyS0 quiet loglevel=3 panic=-1 no_timer_check" \
  -netdev "user,id=n0$fwd" -device virtio-net-pci,netdev=n0,romfile= \
  -virtfs "local,path=$dir,mount_tag=work,security_model=none" 2>&1 | tee "$log"
st=${PIPESTATUS[0]}
set -e
if [ "$st" = 124 ] || [ "$st" = 137 ]; then echo "run-vm.sh: timed out after ${TESTBED_TIMEOUT:-120}s"; exit 124; fi
guest=$(tr -d '\r' < "$log" | sed -n 's/^GUEST_EXIT=\([0-9]*\)$/\1/p' | tail -n 1)
[ -n "$guest" ] || { echo "run-vm.sh: qemu exited ($st) without GUEST_EXIT"; exit 125; }
exit "$guest"
