#!/bin/bash
# Issue 8's serving workloads for inferd on one GPU, one call on the GPU
# machine: `inferd serve --device cuda` on the Llama-3.1-8B-shaped random bf16
# checkpoint, measured with `inferd bench` (closed loop, streaming,
# ignore_eos). Also start-up time (serve to /health 200).
#   bench/serve_gpu.sh BUNDLE.tar.gz [COMMIT]      (writes to $OUT, default /tmp/out)
# SHORT=1 runs fewer requests per workload (to fit a short device slot).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUNDLE=$(realpath "$1"); COMMIT=${2:-unknown}
O=${OUT:-/tmp/out}; mkdir -p "$O" /tmp/sdist
source "$(dirname "$0")/bundle_env.sh" /tmp/sdist
M=/tmp/l8b
[ -f $M/config.json ] || python3 "$ROOT/tools/make_checkpoint.py" --shape llama-3.1-8b --fast --out $M > "$O/ckpt.log" 2>&1
cp "${TOKDIR:-$ROOT/.cache/serve/tok}"/tokenizer*.json $M/ 2>/dev/null
cat $M/*.safetensors > /dev/null   # page cache warm, as the start-up goal says
GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
N=${SHORT:+1}
R64=$([ -n "$N" ] && echo 128 || echo 256)
PORT=8123
start() { # start EXTRA-FLAGS...
    local t0; t0=$(date +%s.%N)
    "$INFERD" serve $M --device cuda --host 127.0.0.1 --port $PORT --served-model-name l8b \
        --max-model-len 4096 --max-num-seqs 256 --max-num-batched-tokens 8192 \
        --disable-log-requests "$@" > "$O/serve.log" 2>&1 &
    SERVER=$!
    for _ in $(seq 1200); do
        curl -sf http://127.0.0.1:$PORT/health >/dev/null && break
        kill -0 $SERVER 2>/dev/null || { echo "serve died:"; tail -20 "$O/serve.log"; return 1; }
        sleep 0.05
    done
    STARTUP=$(python3 -c "print(round($(date +%s.%N) - $t0, 2))")
    echo "startup ${STARTUP}s"
}
stop() { kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null; }
run() { # run LABEL ARGS...
    local label=$1; shift
    echo "== $label"
    timeout 120 "$INFERD" bench --url http://127.0.0.1:$PORT --model l8b --id-range 1000,120000 \
        --label "$label" --json-out "$O/bench.jsonl" "$@" 2>&1 | tee -a "$O/bench.log"
}
start || exit 1
echo "{\"workload\":\"startup\",\"seconds\":$STARTUP}" >> "$O/bench.jsonl"
run decode-b1 --concurrency 1 --requests 2 --input-len 1024 --output-len 256
run prefill-1024 --concurrency 1 --requests 3 --input-len 1024 --output-len 1
run serve-64 --concurrency 64 --requests $R64 --input-len 1024 --output-len 128
run prefix-64 --concurrency 64 --requests 128 --input-len 2176 --prefix-len 2048 --output-len 128 --seed 5
run serve-256 --concurrency 256 --requests 256 --input-len 128 --output-len ${N:+256}${N:-1024}
stop
start --no-enable-prefix-caching || exit 1
run noprefix-64 --concurrency 64 --requests 128 --input-len 2176 --prefix-len 2048 --output-len 128 --seed 5
stop
grep -E "kv|KV|blocks" "$O/serve.log" | head -5
{
    echo "machine: $GPU; bundle commit $COMMIT; $(date -u +%F)"
} > "$O/machine.txt"
