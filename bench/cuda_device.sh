#!/bin/bash
# One call on the GPU machine (through the `device` tool): unpacks the `make
# dist` bundle, runs the CUDA golden test, compute-sanitizer memcheck on a
# short chunked-prefill run, then makes the Llama-3.1-8B-shaped random
# checkpoint and times prefill (1024 tokens) and decode (128 tokens) with
# `inferd generate --timing`. Every step has its own time limit so the whole
# run stays under ~290 s. Logs go to $OUT (or /tmp/out).
#
#   bench/cuda_device.sh BUNDLE.tar.gz
#
# A bundle made with DIST_EXCLUDE=libcublas (to fit the tool's 64 MiB) uses
# the machine's own cuBLAS 13, found below.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUNDLE=$(realpath "$1")
O=${OUT:-/tmp/out}
mkdir -p "$O" /tmp/dist
source "$ROOT/bench/bundle_env.sh" /tmp/dist
{
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
    nproc
    echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
    ldd "$INFERD" | grep -E 'cublas|not found'
} 2>&1 | tee "$O/machine.txt"
cd "$ROOT"

echo "== golden"
if ! timeout 100 python3 tests/cuda/test_cuda_golden.py > "$O/golden.log" 2>&1; then
    tail -30 "$O/golden.log"
    echo "== golden again with a float32 KV cache (what is left is the KV cache's rounding)"
    INFERD_CUDA_KV=f32 timeout 60 python3 tests/cuda/test_cuda_golden.py > "$O/golden_kvf32.log" 2>&1
    tail -8 "$O/golden_kvf32.log"
fi
tail -6 "$O/golden.log"

echo "== memcheck"
ids=$(python3 -c 'import random; r = random.Random(3); print(",".join(str(r.randrange(512)) for _ in range(40)))')
timeout 45 compute-sanitizer --tool memcheck --error-exitcode 9 "$INFERD" generate \
    --model tests/fixtures/models/qwen3 --device cuda --prompt-ids "$ids" --max-tokens 4 \
    --prefill-chunk 16 2>&1 | tee "$O/memcheck.log" | tail -8
echo "memcheck exit ${PIPESTATUS[0]}"

echo "== llama-3.1-8b shape"
t0=$(date +%s)
timeout 90 python3 tools/make_checkpoint.py --shape llama-3.1-8b --out /tmp/l8b --fast 2>&1 | tail -2
echo "checkpoint written in $(( $(date +%s) - t0 )) s"
ids=$(python3 -c 'import random; r = random.Random(1); print(",".join(str(r.randrange(128000)) for _ in range(1024)))')
run8b() { # label, env...
    local label=$1; shift
    t0=$(date +%s)
    env "$@" timeout 40 "$INFERD" generate --model /tmp/l8b --device cuda --prompt-ids "$ids" \
        --max-tokens 129 --timing 2>&1 >/dev/null | sed "s/^/$label: /" | tee -a "$O/bench8b.log"
    echo "$label: $(( $(date +%s) - t0 )) s including load" | tee -a "$O/bench8b.log"
}
run8b split-gemm INFERD_CUDA_GEMM=split
run8b split-gemm INFERD_CUDA_GEMM=split
run8b bf16-gemm INFERD_CUDA_GEMM=bf16
run8b profile-split INFERD_CUDA_PROFILE=1
run8b profile-bf16 INFERD_CUDA_PROFILE=1 INFERD_CUDA_GEMM=bf16
