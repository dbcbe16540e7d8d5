#!/bin/bash
# The check after a refactor of the CUDA backend, on the GPU machine: is the new
# build bitwise the old one, and do the GPU tests pass? Two device calls, each
# under 10 minutes, on one held machine:
#
#   bench/gpu_verify.sh PACK.tar.xz 1   compare_builds --device cuda, memcheck,
#                                       golden, tensor-core prefill, batched decode
#   bench/gpu_verify.sh PACK.tar.xz 2   switches, encoders, graph / fold counts of
#                                       both builds, 8B-shape prefill and decode
#                                       timing of both builds, interleaved
#   bench/gpu_verify.sh PACK.tar.xz "compare golden stats"   the steps named
#                                       (compare memcheck golden prefill_mma
#                                       decode_batch switches encoder stats time8b)
#
# PACK holds inferd/inferd (new), inferd/inferd.base (old) and inferd/lib/ (a
# `make dist` bundle's libraries, DIST_EXCLUDE=libcublas: the machine's own
# cuBLAS 13 is used). Make it with bench/gpu_verify_pack.sh OLD_BUNDLE NEW_BUNDLE.
# Logs go to $OUT (or /tmp/out) as one tarball, verify.tgz, and a summary.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PACK=$(realpath "$1")
PART=${2:-1}
TAG=$(echo "$PART" | tr -c "a-z0-9_\n" "-" | cut -c1-40)
O=${OUT:-/tmp/out}
L=/tmp/verify-logs
mkdir -p "$O" "$L"
BUNDLE=$PACK
source "$ROOT/bench/bundle_env.sh" /tmp/pk # unpacks, sets INFERD and the machine's cuBLAS
NEW=$INFERD OLD=/tmp/pk/inferd/inferd.base
T0=$(date +%s)
el() { echo "$(( $(date +%s) - T0 ))s"; }
SUM="$O/summary-$TAG.txt" # written as it goes: a call cut short still returns it
note() { echo "$*" | tee -a "$SUM"; }
# step NAME LIMIT CMD...: runs CMD under LIMIT seconds (less if the call's
# CAP seconds (560) would be passed), its output to $L/NAME.log, exit status and tail noted.
step() {
    local name=$1 lim=$2; shift 2
    local left=$(( ${CAP:-560} - ($(date +%s) - T0) ))
    [ $left -lt 20 ] && { note "$name: skipped (no time left)"; return; }
    [ $lim -gt $left ] && lim=$left
    (cd "$ROOT" && timeout $lim "$@") > "$L/$name.log" 2>&1
    note "$name: exit $? ($(el))"
    tail -n 6 "$L/$name.log" | sed 's/^/    /' | tee -a "$SUM"
}
cd "$ROOT"
{
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
    echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
    ldd "$NEW" | grep -E 'cublas|not found'
} > "$L/machine.txt" 2>&1
head -3 "$L/machine.txt" | tee -a "$SUM"
export INFERD=$NEW

ids40=$(python3 -c 'import random; r = random.Random(3); print(",".join(str(r.randrange(512)) for _ in range(40)))')
ids30=$(python3 -c 'import random; r = random.Random(5); print(",".join(str(r.randrange(512)) for _ in range(30)))')
ids1k=$(python3 -c 'import random; r = random.Random(1); print(",".join(str(r.randrange(128000)) for _ in range(1024)))')
CS=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null)
# The graph and fold counts each build prints at exit, on the same requests.
stats() {
    local b bin prec
    for b in base new; do
        bin=$NEW; [ $b = base ] && bin=$OLD
        for prec in float32 bfloat16; do
            INFERD_CUDA_GRAPH_STATS=1 timeout 60 "$bin" generate --model tests/fixtures/models/llama \
                --device cuda --prompt-ids "$ids30" --max-tokens 24 --matmul-precision $prec \
                2>&1 >/dev/null | grep -i -E 'graph|fold' > "$L/stats-$b-$prec.txt"
        done
    done
    for prec in float32 bfloat16; do
        if [ ! -s "$L/stats-new-$prec.txt" ]; then
            note "graph/fold counts $prec: none printed (the run failed?)"
        elif diff "$L/stats-base-$prec.txt" "$L/stats-new-$prec.txt" > /dev/null; then
            note "graph/fold counts $prec: same: $(tr '\n' ' ' < "$L/stats-new-$prec.txt")"
        else
            note "graph/fold counts $prec: DIFFER: base $(tr '\n' ' ' < "$L/stats-base-$prec.txt") new $(tr '\n' ' ' < "$L/stats-new-$prec.txt")"
        fi
    done
}
time8b() {
    step checkpoint 100 python3 tools/make_checkpoint.py --shape llama-3.1-8b --out /tmp/l8b --fast
    local round b bin
    for round in 1 2; do
        for b in base new; do
            bin=$NEW; [ $b = base ] && bin=$OLD
            step "time8b-$b-$round" 45 "$bin" generate --model /tmp/l8b --device cuda \
                --prompt-ids "$ids1k" --max-tokens 129 --timing
        done
    done
}
case "$PART" in
1) STEPS="compare memcheck golden prefill_mma decode_batch" ;;
2) STEPS="switches encoder stats time8b" ;;
*) STEPS=$PART ;; # the steps named, in order, e.g. "compare memcheck golden switches stats"
esac
for s in $STEPS; do
    case $s in
    compare) step compare_cuda 260 python3 tools/compare_builds.py "$OLD" "$NEW" --device cuda ;;
    memcheck) step memcheck 60 "$CS" --tool memcheck --error-exitcode 9 "$NEW" generate \
        --model tests/fixtures/models/qwen3 --device cuda --prompt-ids "$ids40" --max-tokens 6 \
        --prefill-chunk 16 ;;
    golden) step golden 120 python3 tests/cuda/test_cuda_golden.py ;;
    prefill_mma) step prefill_mma 120 python3 tests/cuda/test_prefill_mma.py ;;
    decode_batch) step decode_batch 200 python3 tests/cuda/test_decode_batch.py ;;
    switches) step switches 240 python3 tests/cuda/test_switches.py ;;
    encoder) step encoder_cuda 100 python3 tests/cuda/test_encoder_cuda.py ;;
    stats) stats ;;
    time8b) time8b ;;
    *) note "unknown step $s" ;;
    esac
done
tar -C "$L" -czf "$O/verify-$TAG.tgz" .
echo "== summary"
cat "$SUM"
