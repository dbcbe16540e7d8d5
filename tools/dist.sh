#!/bin/bash
# `make dist`: builds inferd for every CUDA target in build-dist/ and packs
# build-dist/inferd-linux-x86_64.tar.gz: inferd/inferd plus inferd/lib/ with
# every shared library it loads except glibc's and the NVIDIA driver's
# (libcuda), found through the rpath $ORIGIN/lib. It runs on a Linux machine
# with glibc >= the build machine's (2.36 on Debian 12) and an NVIDIA driver
# for CUDA 13, nothing else installed.
#
#   DIST_ARCHS     CUDA targets (default: 75 80 86 89 90a 90; 90 = PTX for
#                  GPUs newer than Hopper, compiled by the driver at start)
#   DIST_EXCLUDE   extended regex of library names to leave out, e.g.
#                  'libcublas' where the target provides cuBLAS itself
#                  (cuBLASLt alone is ~540 MB); the program then needs
#                  LD_LIBRARY_PATH to find them there.
#   CUDA=0         a CPU-only bundle.
set -euo pipefail
cd "$(dirname "$0")/.."
ARCHS=${DIST_ARCHS:-75 80 86 89 90a 90}
EXCLUDE=${DIST_EXCLUDE:-}
OUT=build-dist
# --disable-new-dtags writes DT_RPATH, which (unlike DT_RUNPATH) is also
# searched for the dependencies of the bundled libraries (libcurl's, ...).
make -j"$(nproc)" BUILD=$OUT CUDA_ARCHS="$ARCHS" \
    LDFLAGS='-Wl,--disable-new-dtags,-rpath,\$$ORIGIN/lib' $OUT/inferd
STAGE=$OUT/stage/inferd
rm -rf "$OUT/stage"
mkdir -p "$STAGE/lib"
cp $OUT/inferd "$STAGE/"
# glibc (>= 2.36 is required of the target) and the driver stay the system's.
SYSTEM='^(linux-vdso|ld-linux.*|libc|libm|libdl|libpthread|librt|libresolv|libutil|libcuda|libnvidia-.*)\.so'
ldd $OUT/inferd | awk '/=> \// {print $1, $3}' | while read -r name path; do
    if [[ $name =~ $SYSTEM ]]; then continue; fi
    if [ -n "$EXCLUDE" ] && [[ $name =~ $EXCLUDE ]]; then continue; fi
    cp -L "$path" "$STAGE/lib/$name"
done
cat > "$STAGE/README" <<EOF
inferd $(git describe --always --dirty 2>/dev/null || echo unknown), CUDA targets: $ARCHS
Run ./inferd from this folder or anywhere: it finds lib/ through its rpath.
Needs glibc >= $(ldd --version | head -1 | awk '{print $NF}') and, for --device cuda, an NVIDIA driver for CUDA 13.
EOF
tar -C $OUT/stage -czf $OUT/inferd-linux-x86_64.tar.gz inferd
echo "$OUT/inferd-linux-x86_64.tar.gz: $(du -h $OUT/inferd-linux-x86_64.tar.gz | cut -f1)"
ls -l "$STAGE/lib" | awk 'NR > 1 {print "  " $NF, $5}'
