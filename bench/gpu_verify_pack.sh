#!/bin/bash
# Packs two `make dist` bundles (DIST_EXCLUDE=libcublas) into the one file
# bench/gpu_verify.sh takes: the new bundle's inferd/ with the old binary
# beside it as inferd/inferd.base (their libraries are the same Debian ones).
#   bench/gpu_verify_pack.sh OLD_BUNDLE NEW_BUNDLE OUT.tar.xz
set -euo pipefail
W=$(mktemp -d)
mkdir -p "$W/old"
tar -C "$W" -xzf "$2"
tar -C "$W/old" -xzf "$1"
cp "$W/old/inferd/inferd" "$W/inferd/inferd.base"
cmp -s <(ls "$W/old/inferd/lib") <(ls "$W/inferd/lib") || echo "warning: the bundles' libraries differ" >&2
tar -C "$W" -cJf "$3" inferd
rm -rf "$W"
ls -l "$3"
