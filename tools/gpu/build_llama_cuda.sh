#!/bin/bash
# Builds llama.cpp's CUDA llama-bench and llama-server from the peer source
# bundle (../shared/peers/llama.cpp-src.tar.xz) on the GPU machine with its
# README's flags, and packs the binaries and their libraries as xz parts of
# at most 15 MiB into OUTDIR, so later device calls can carry them instead of
# spending ~4 minutes of the GPU machine on the build each time.
#   tools/gpu/build_llama_cuda.sh SRC.tar.xz OUTDIR [JOBS]
# Unpack: cat OUTDIR/llama-cuda.tar.xz.* | tar -xJ -C DIR  (DIR/llama/bin/...;
# run with LD_LIBRARY_PATH=DIR/llama/bin).
set -euo pipefail
SRC=$(realpath "$1"); O=$(realpath "$2"); J=${3:-16}
W=/tmp/llama-build
mkdir -p "$W" && cd "$W"
tar -xJf "$SRC"
cmake -S src -B src/build -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
    -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_OPENSSL=OFF \
    -DLLAMA_CURL=OFF -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 > cmake.log
cmake --build src/build -j "$J" --target llama-bench llama-server > build.log 2>&1 ||
    { tail -30 build.log; exit 1; }
mkdir -p llama/bin
cp -a src/build/bin/llama-bench src/build/bin/llama-server llama/bin/
find src/build -name '*.so*' -exec cp -a {} llama/bin/ \;
strip --strip-unneeded llama/bin/* 2>/dev/null || true
(cd src && git describe --tags 2>/dev/null || true) > llama/VERSION
ls -la llama/bin
tar -cf - llama | xz -T0 -6 | split -b 15M - "$O/llama-cuda.tar.xz."
ls -la "$O"
