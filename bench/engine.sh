#!/bin/bash
# Engine throughput with continuous batching on the CPU: the same forced-length
# greedy load at concurrency 1, 4 and 16 on a Qwen2.5-0.5B-shaped checkpoint
# with random bf16 weights (tools/make_checkpoint.py, not committed).
#   bench/engine.sh [PROMPT_LEN=128] [NEW_TOKENS=32] [THREADS=0 (all)]
set -euo pipefail
cd "$(dirname "$0")/.."
PLEN=${1:-128}; NEW=${2:-32}; THREADS=${3:-0}
DIR=bench/out/qwen2.5-0.5b
make -s -j"$(nproc)" build/libinferd.a
[ -f "$DIR/model.safetensors" ] || /usr/bin/python3 tools/make_checkpoint.py --shape qwen2.5-0.5b --out "$DIR"
mkdir -p bench/out
# shellcheck disable=SC2046
cc -std=c11 -D_GNU_SOURCE -O2 -I. -fopenmp -o bench/out/engine_bench bench/engine_bench.c \
    build/libinferd.a $(pkg-config --libs openblas jansson) -lm -lpthread
for n in 1 4 16; do
    bench/out/engine_bench "$DIR" "$n" "$PLEN" "$NEW" "$THREADS"
done
