#!/bin/bash
# Issue 8's side-by-side GPU benchmark, one call on the GPU machine (through
# the `device` tool): inferd from the `make dist` bundle against llama.cpp
# built from ../shared/peers, same Llama-3.1-8B-shaped random bf16 weights.
#
#   bench/gpu.sh BUNDLE.tar.gz LLAMA_SRC.tar.xz TOKDIR [COMMIT]
#
# TOKDIR: a Llama-3.1 tokenizer.json + tokenizer_config.json (the GGUF
# converter needs a vocabulary; inferd takes token ids). In parallel:
#   CPU: the llama.cpp CUDA build (niced), the checkpoint, the GGUF conversion;
#   GPU, one thing at a time: the CUDA golden test, compute-sanitizer memcheck
#   on a split-KV decode, inferd decode (1024-token prompt, 256 new) and
#   prefill (1024) with `inferd generate --timing` in A/B variants, then
#   `llama-bench -ngl 99 -fa 1 -p 1024 -n 128`.
# `inferd serve` does not exist yet, so the serving workloads (inferd bench
# against inferd serve and llama-server) are not run.
# LLAMA=0 skips llama.cpp (its CUDA build alone takes ~10 min on the 16-core
# machine: 39 % after 255 s in the first run, niced beside the checkpoint).
# Writes logs, results.jsonl rows and a RESULTS.md table to $OUT (and appends
# them to bench/ of the checkout it runs in). Time limits keep it under ~330 s.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
[ -f "$ROOT/Makefile" ] || ROOT=$(pwd) # run from a copy outside bench/
BUNDLE=$(realpath "$1")
LSRC=$(realpath "$2")
TOK=$(realpath "$3")
COMMIT=${4:-unknown}
O=${OUT:-/tmp/out}
W=/tmp/gpubench
mkdir -p "$O" "$W/dist"
T0=$(date +%s)
el() { echo "[$(( $(date +%s) - T0 )) s]"; }

LLAMA=${LLAMA:-1}
# ---- llama.cpp build, in the background (its README's flags) ----
[ "$LLAMA" = 1 ] && (
    cd "$W" && tar -xJf "$LSRC" &&
        nice -n 19 cmake -S src -B src/build -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
            -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_TESTS=OFF \
            -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_OPENSSL=OFF \
            -DLLAMA_CURL=OFF -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 &&
        nice -n 19 cmake --build src/build -j 16 --target llama-bench
) > "$O/llama_build.log" 2>&1 &
BUILD_PID=$!
[ "$LLAMA" = 1 ] || BUILD_PID=

source "$ROOT/bench/bundle_env.sh" "$W/dist"
{
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
    nproc
    ldd "$INFERD" | grep -E 'cublas|not found'
} 2>&1 | tee "$O/machine.txt"
GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)

# ---- the checkpoint (CPU) while the GPU runs the golden test ----
(
    timeout 120 python3 "$ROOT/tools/make_checkpoint.py" --shape llama-3.1-8b --out "$W/l8b" \
        --fast && cp "$TOK"/tokenizer.json "$TOK"/tokenizer_config.json "$W/l8b/" &&
        echo "checkpoint done" && [ "$LLAMA" = 1 ] &&
        timeout 200 env PYTHONPATH="$W/src/gguf-py" python3 "$W/src/convert_hf_to_gguf.py" \
            "$W/l8b" --outtype bf16 --outfile "$W/l8b.gguf" && echo "gguf done"
) > "$O/checkpoint.log" 2>&1 &
CKPT_PID=$!

echo "== golden $(el)"
cd "$ROOT"
timeout 110 python3 tests/cuda/test_cuda_golden.py > "$O/golden.log" 2>&1
rc=$?
echo "golden exit $rc"
tail -5 "$O/golden.log"
if [ $rc != 0 ]; then # which part: the graphs, the fused GEMV, or neither
    for v in "INFERD_CUDA_GRAPH=0" "INFERD_CUDA_GRAPH=0 INFERD_CUDA_FUSE=0"; do
        env $v timeout 60 python3 tests/cuda/test_cuda_golden.py > "$O/golden_alt.log" 2>&1
        echo "golden with $v: exit $?"; tail -2 "$O/golden_alt.log"
    done
fi

echo "== memcheck (200-token prompt: split-KV decode) $(el)"
ids=$(python3 -c 'import random; r = random.Random(3); print(",".join(str(r.randrange(512)) for _ in range(200)))')
timeout 45 compute-sanitizer --tool memcheck --error-exitcode 9 "$INFERD" generate \
    --model tests/fixtures/models/qwen3 --device cuda --prompt-ids "$ids" --max-tokens 4 \
    > "$O/memcheck.log" 2>&1
echo "memcheck exit $? $(grep -c 'Invalid\|ERROR SUMMARY' "$O/memcheck.log") lines: $(grep 'ERROR SUMMARY' "$O/memcheck.log")"

# ---- inferd on the 8B shape ----
for i in $(seq 120); do grep -q "checkpoint done" "$O/checkpoint.log" && break; sleep 1; done
echo "== inferd 8B $(el)"
ids=$(python3 -c 'import random; r = random.Random(1); print(",".join(str(r.randrange(128000)) for _ in range(1024)))')
run8b() { # label, env...
    local label=$1; shift
    env "$@" timeout 45 "$INFERD" generate --model "$W/l8b" --device cuda --prompt-ids "$ids" \
        --max-tokens 257 --timing 2>&1 >/dev/null | sed "s/^/$label: /" | tee -a "$O/bench8b.log"
}
run8b default INFERD_CUDA_GRAPH_STATS=1
run8b default
run8b no-graph INFERD_CUDA_GRAPH=0
run8b no-graph-no-fuse INFERD_CUDA_GRAPH=0 INFERD_CUDA_FUSE=0
run8b att-v1-no-graph-no-fuse INFERD_CUDA_ATT=v1 INFERD_CUDA_GRAPH=0 INFERD_CUDA_FUSE=0
run8b gemm-bf16 INFERD_CUDA_GEMM=bf16
run8b eager-load CUDA_MODULE_LOADING=EAGER
run8b profile INFERD_CUDA_PROFILE=1 2>&1 | grep -v '^profile: prefill' | tail -16

# ---- llama.cpp ----
echo "== llama.cpp $(el)"
wait $CKPT_PID
tail -2 "$O/checkpoint.log"
[ "$LLAMA" = 1 ] || echo "llama.cpp skipped (LLAMA=0)"
left=$(( 300 - ($(date +%s) - T0) ))
while [ -n "$BUILD_PID" ] && kill -0 $BUILD_PID 2>/dev/null && [ $left -gt 40 ]; do sleep 2; left=$(( 300 - ($(date +%s) - T0) )); done
LB=$W/src/build/bin/llama-bench
if [ "$LLAMA" != 1 ]; then
    :
elif [ -x "$LB" ] && [ -f "$W/l8b.gguf" ]; then
    timeout $(( left > 20 ? left - 5 : 15 )) "$LB" -m "$W/l8b.gguf" -ngl 99 -fa 1 -p 1024 -n 128 \
        -r 3 -o json > "$O/llama_bench.json" 2> "$O/llama_bench.err"
    echo "llama-bench exit $?"
else
    echo "llama.cpp not ready (build running: $(kill -0 $BUILD_PID 2>/dev/null && echo yes || echo no))"
    tail -3 "$O/llama_build.log"
fi
[ -n "$BUILD_PID" ] && kill $BUILD_PID 2>/dev/null

# ---- results ----
echo "== results $(el)"
python3 - "$O" "$COMMIT" "$GPU" <<'EOF'
import json, re, statistics, sys, datetime
o, commit, gpu = sys.argv[1:4]
date = datetime.date.today().isoformat()
runs = {}
for line in open(f"{o}/bench8b.log"):
    m = re.match(r"(\S+): prefill: (\d+) tokens in ([\d.]+) s \(([\d.]+) tok/s\); decode: (\d+) tokens in ([\d.]+) s \(([\d.]+) tok/s\)", line)
    if m:
        runs.setdefault(m[1], []).append((float(m[4]), float(m[7])))
rows, md = [], []
cmd = "inferd generate --model l8b --device cuda --prompt-ids <1024 random> --max-tokens 257 --timing"
for label, rs in runs.items():
    pf = statistics.median(r[0] for r in rs); dc = statistics.median(r[1] for r in rs)
    env = {"default": "", "att-v1": "INFERD_CUDA_ATT=v1 ", "gemv-v1": "INFERD_CUDA_GEMV=v1 ",
           "no-graph": "INFERD_CUDA_GRAPH=0 ",
           "no-graph-no-fuse": "INFERD_CUDA_GRAPH=0 INFERD_CUDA_FUSE=0 ",
           "att-v1-no-graph-no-fuse": "INFERD_CUDA_ATT=v1 INFERD_CUDA_GRAPH=0 INFERD_CUDA_FUSE=0 ",
           "gemm-bf16": "INFERD_CUDA_GEMM=bf16 ",
           "eager-load": "CUDA_MODULE_LOADING=EAGER ",
           "profile": "INFERD_CUDA_PROFILE=1 "}.get(label, "")
    rows.append(dict(date=date, commit=commit, machine=gpu, engine="inferd",
                     workload="cuda-llama31-8b-generate", variant=label, prompt_tokens=1024,
                     new_tokens=256, prefill_tok_s=round(pf, 1), decode_tok_s=round(dc, 2),
                     runs=len(rs), command=env + cmd))
    md.append((f"inferd ({label})", pf, dc))
try:
    lb = json.load(open(f"{o}/llama_bench.json"))
    pp = [r["avg_ts"] for r in lb if r["n_prompt"] > 0][0]
    tg = [r["avg_ts"] for r in lb if r["n_gen"] > 0][0]
    rows.append(dict(date=date, commit=commit, machine=gpu, engine="llama.cpp",
                     workload="cuda-llama31-8b-generate", prompt_tokens=1024, new_tokens=128,
                     prefill_tok_s=round(pp, 1), decode_tok_s=round(tg, 2),
                     command="llama-bench -m l8b-bf16.gguf -ngl 99 -fa 1 -p 1024 -n 128 -r 3"))
    md.append(("llama.cpp (pp1024 / tg128)", pp, tg))
except Exception as e:
    print("no llama-bench numbers:", e)
with open(f"{o}/results.jsonl", "w") as f:
    for r in rows:
        f.write(json.dumps(r) + "\n")
base = [x for x in md if x[0].startswith("llama.cpp")]
with open(f"{o}/RESULTS.md", "w") as f:
    f.write("| engine | prefill 1024 tok/s | decode tok/s | prefill / llama.cpp | decode / llama.cpp |\n|---|---|---|---|---|\n")
    for name, pf, dc in md:
        rp = f"{pf / base[0][1]:.2f}" if base else "-"
        rd = f"{dc / base[0][2]:.2f}" if base else "-"
        f.write(f"| {name} | {pf:.0f} | {dc:.1f} | {rp} | {rd} |\n")
print(open(f"{o}/RESULTS.md").read())
EOF
cat "$O/results.jsonl" >> "$ROOT/bench/results.jsonl" 2>/dev/null
echo "done $(el)"
