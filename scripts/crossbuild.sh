#!/usr/bin/env bash
# Cross-compiles and vets the module for the systems besides linux/amd64:
# the library packages (rdma, iwarp, smbd, smb2rdma, smbdirectd/client), the
# commands (cmd/smbdirectd is a stub that exits on anything but Linux) and
# the tests (go vet type-checks them). Exits non-zero if any target fails;
# all targets are tried first.
#
# Knobs: CROSSBUILD_TARGETS (default below), as "goos/goarch ...".
set -uo pipefail
cd "$(dirname "$0")/.."
export GOFLAGS=${GOFLAGS:--buildvcs=false}
export CGO_ENABLED=0 # the default build has no cgo

targets=${CROSSBUILD_TARGETS:-darwin/amd64 darwin/arm64 windows/amd64 freebsd/amd64 linux/arm64}
# These must keep their code on every target (an empty package would build
# too): they are the portable part.
portable="./rdma ./iwarp ./smbd ./smb2rdma ./smbdirectd/client ./cmd/smbdirect"

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
failed=()
for t in $targets; do
  goos=${t%/*} goarch=${t#*/}
  printf '=== %s\n' "$t"
  ok=true
  for p in $portable; do
    n=$(GOOS=$goos GOARCH=$goarch go list -f '{{len .GoFiles}}' "$p") || { ok=false; continue; }
    if [ "$n" -eq 0 ]; then
      echo "$p has no files for $t"
      ok=false
    fi
  done
  GOOS=$goos GOARCH=$goarch go build ./... || ok=false
  # Link the commands too (go build of several packages only compiles).
  GOOS=$goos GOARCH=$goarch go build -o "$out/" ./cmd/... || ok=false
  GOOS=$goos GOARCH=$goarch go vet ./... || ok=false
  $ok || failed+=("$t")
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "crossbuild failed for: ${failed[*]}"
  exit 1
fi
echo "crossbuild ok: $targets"
