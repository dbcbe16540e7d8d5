#!/bin/bash
# Issue 8's side-by-side GPU benchmark: inferd against llama.cpp on one GPU,
# same Llama-3.1-8B-shaped random bf16 weights, same `inferd bench` workloads
# (closed loop, streaming /v1/completions, token-id prompts, temperature 0,
# ignore_eos), plus llama-bench. Run on the GPU machine through `device`.
#
#   bench/gpu.sh inferd BUNDLE.tar.gz TOKDIR [COMMIT]
#                                                   inferd's workloads + the GPU tests
#   bench/gpu.sh llama LLAMA_DIR CONVERT.tar.xz TOKDIR
#                                                   llama.cpp's workloads
#   bench/gpu.sh report OUT_INFERD OUT_LLAMA COMMIT GPU    (on any machine)
#   bench/gpu.sh profile BUNDLE.tar.gz TOKDIR       step timelines + per-op profile
#   [AB="ENV=V ..."] bench/gpu.sh check BUNDLE.tar.gz TOKDIR
#                                                   GPU tests, GEMM probe, short A/B runs
#   [MBT="1024 1536 2048"] bench/gpu.sh sweep BUNDLE.tar.gz TOKDIR
#                                                   serve-64 at each --max-num-batched-tokens
#
# The two engine phases run as two consecutive calls on one held machine
# (together they need more than one call's 10 minutes); both make the same
# checkpoint (tools/make_checkpoint.py, seeded) in /tmp/l8b if it is not
# there. LLAMA_DIR holds llama.cpp's binaries (tools/gpu/build_llama_cuda.sh
# packs them: the parts llama-cuda.tar.xz.* or the unpacked llama/ folder).
# Each phase writes $OUT/rows.jsonl (one row per workload: the fields of
# bench/results.jsonl) and logs; `report` joins two phases' rows into the
# RESULTS.md table with the inferd / llama.cpp ratios and appends both to
# bench/. SHORT=1 halves the request counts. TOKDIR: a Llama-3.1
# tokenizer.json (or .json.xz) + tokenizer_config.json (serve's text
# endpoints and the GGUF converter want one; the workloads send token ids).
# inferd runs every workload with --matmul-precision bfloat16 (activations
# rounded to bf16 for the weight products, as llama.cpp and vLLM do), then
# decode, prefill and 64-concurrent serving again in the default float32
# (NO_F32=1 leaves that out).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PHASE=${1:?phase: inferd, llama or report}
shift
O=${OUT:-/tmp/out}
mkdir -p "$O"
T0=$(date +%s)
el() { echo "[$(( $(date +%s) - T0 )) s]"; }
M=/tmp/l8b
PORT=8123
R=$([ -n "${SHORT:-}" ] && echo 128 || echo 256)

checkpoint() { # TOKDIR
    [ -f $M/config.json ] ||
        python3 "$ROOT/tools/make_checkpoint.py" --shape llama-3.1-8b --fast --out $M \
            > /tmp/ckpt.log 2>&1 || { tail /tmp/ckpt.log; return 1; }
    for f in "$1"/tokenizer*; do
        case $f in *.xz) xz -dc "$f" > $M/"$(basename "${f%.xz}")" ;; *) cp "$f" $M/ ;; esac
    done
}

# wait_health URL PID: seconds until /health answers 200, or fails
wait_health() {
    local t0; t0=$(date +%s.%N)
    for _ in $(seq 3000); do
        curl -sf "$1/health" > /dev/null && {
            python3 -c "print(round($(date +%s.%N) - $t0, 2))"
            return 0
        }
        kill -0 "$2" 2>/dev/null || return 1
        sleep 0.05
    done
    return 1
}

# istart [ENV=V ...] [-- FLAG ...]: inferd serve on $M as every phase runs it
# (bfloat16 products, $SERVE_MBT or serve's 1024 tokens a step, 256 sequences; a FLAG
# given again wins), with the ENV assignments; sets SERVER and STARTUP
# (seconds to /health 200). istop stops it.
istart() {
    local env=()
    while [ $# -gt 0 ] && [ "$1" != -- ]; do env+=("$1"); shift; done
    [ $# -gt 0 ] && shift
    env ${env[@]+"${env[@]}"} "$INFERD" serve $M --device cuda --host 127.0.0.1 --port $PORT \
        --served-model-name l8b --max-model-len 4096 --max-num-seqs 256 \
        --max-num-batched-tokens ${SERVE_MBT:-1024} --disable-log-requests \
        --matmul-precision bfloat16 "$@" \
        >> "$O/serve.log" 2>&1 &
    SERVER=$!
    STARTUP=$(wait_health http://127.0.0.1:$PORT $SERVER) || { tail -20 "$O/serve.log"; exit 1; }
}
istop() { kill $SERVER; wait $SERVER 2> /dev/null; }

# gpu_tests LOG: the GPU tests (tests/cuda/) against $INFERD, each one's exit
# status and last lines appended to LOG
gpu_tests() {
    export INFERD
    local t lim e
    for e in "" ${TEST_ENV:-}; do # TEST_ENV: also with these env assignments (joined by +)
        for t in test_cuda_golden test_prefill_mma test_decode_batch test_switches; do
            lim=150; [ $t = test_decode_batch ] && lim=300
            [ $t = test_switches ] && { [ -n "$e" ] && continue; lim=300; }
            (cd "$ROOT" && timeout $lim env ${e//+/ } python3 tests/cuda/$t.py > /tmp/$t.log 2>&1
                echo "$t ${e:-default} exit $?"; tail -20 /tmp/$t.log) | tee -a "$1"
        done
    done
}

# bench ENGINE LABEL ARGS...: one `inferd bench` workload -> $O/bench.jsonl
bench() {
    local engine=$1 label=$2${SUFFIX:-}; shift 2
    echo "== $engine $label $(el)"
    timeout 170 "$INFERD" bench --url http://127.0.0.1:$PORT --model l8b --id-range 1000,120000 \
        --label "$label" --json-out "$O/bench.jsonl" "$@" 2>&1 | tee -a "$O/bench.log"
}

# Each workload has its own --seed: with one seed, request i of every
# workload starts with the same tokens, and a server with a prefix cache
# served the prompts of prefill-1024 that decode-b1 had sent before it from
# the cache (2 of 4 until 2026-12-05).
workloads() { # ENGINE [prefix|serve256|basic]...
    local engine=$1; shift
    for w in "$@"; do
        case $w in
        basic)
            bench "$engine" decode-b1 --concurrency 1 --requests 2 --input-len 1024 --output-len 256 \
                --seed 1
            # llama-bench's tg128 decodes from an empty context: the same here
            bench "$engine" decode-tg128 --concurrency 1 --requests 2 --input-len 16 --output-len 128 \
                --seed 2
            bench "$engine" prefill-1024 --concurrency 1 --requests 4 --input-len 1024 --output-len 1 \
                --seed 3
            bench "$engine" prefill-1024x8 --concurrency 8 --requests 16 --input-len 1024 --output-len 1 \
                --seed 4
            bench "$engine" serve-64 --concurrency 64 --requests $R --input-len 1024 --output-len 128 --seed 6
            ;;
        prefix)
            bench "$engine" prefix-64 --concurrency 64 --requests 128 --input-len 2176 \
                --prefix-len 2048 --output-len 128 --seed 5 ;;
        serve64)
            bench "$engine" serve-64 --concurrency 64 --requests $R --input-len 1024 --output-len 128 \
                --seed 6 ;;
        noprefix)
            bench "$engine" noprefix-64 --concurrency 64 --requests 128 --input-len 2176 \
                --prefix-len 2048 --output-len 128 --seed 5 ;;
        serve256)
            bench "$engine" serve-256 --concurrency 256 --requests 256 --input-len 128 \
                --output-len 1024 --seed 7 ;;
        esac
    done
}

case $PHASE in
inferd)
    BUNDLE=$(realpath "$1"); TOK=$(realpath "$2")
    COMMIT=${3:-unknown}
    source "$ROOT/bench/bundle_env.sh" /tmp/gpudist
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$O/machine.txt"
    checkpoint "$TOK" || exit 1
    cat $M/*.safetensors > /dev/null # page cache warm, as the start-up goal says
    istart; echo "startup ${STARTUP}s"
    echo "{\"label\":\"startup\",\"seconds\":$STARTUP}" >> "$O/bench.jsonl"
    grep -m1 "KV cache" "$O/serve.log" | tee "$O/kv.txt"
    workloads inferd basic prefix serve256
    istop
    istart -- --no-enable-prefix-caching
    workloads inferd noprefix
    istop
    # serve-64 with the other step budget: ITL p99 follows it, throughput barely
    ALT=$([ "${SERVE_MBT:-1024}" = 1024 ] && echo 2048 || echo 1024)
    istart -- --max-num-batched-tokens $ALT
    SUFFIX=@mbt$ALT workloads inferd serve64
    istop
    if [ -z "${NO_F32:-}" ]; then
        istart -- --matmul-precision float32 # the default precision
        SUFFIX=@float32 workloads inferd basic
        istop
    fi
    echo "inferd serve --device cuda --matmul-precision bfloat16 --max-model-len 4096 --max-num-seqs 256 --max-num-batched-tokens ${SERVE_MBT:-1024}" > "$O/command.txt"
    echo "== GPU tests $(el)"
    gpu_tests "$O/golden.log"
    ;;
llama)
    LD=$(realpath "$1"); CONV=$(realpath "$2"); TOK=$(realpath "$3")
    W=/tmp/llama; mkdir -p $W
    if [ -d "$LD/llama/bin" ]; then B=$LD/llama/bin; else
        (cd "$LD" && cat $(ls | grep -E '^(llpart|llama-cuda\.tar\.xz)\.' | sort)) |
            tar -xJ -C $W && B=$W/llama/bin
    fi
    export LD_LIBRARY_PATH=$B${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    if [ -n "${BUNDLE:-}" ] && [ ! -x /tmp/gpudist/inferd/inferd ]; then
        BUNDLE=$(realpath "$BUNDLE"); source "$ROOT/bench/bundle_env.sh" /tmp/gpudist
    fi
    [ -x /tmp/gpudist/inferd/inferd ] && INFERD=/tmp/gpudist/inferd/inferd
    [ -n "${INFERD:-}" ] || { echo "no inferd for the load generator: run the inferd phase first"; exit 1; }
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$O/machine.txt"
    checkpoint "$TOK" || exit 1
    mkdir -p $W/conv && tar -xJf "$CONV" -C $W/conv
    G=$W/l8b-bf16.gguf
    if [ ! -f $G ]; then
        echo "== convert $(el)"
        PYTHONPATH=$W/conv/gguf-py timeout 300 python3 $W/conv/convert_hf_to_gguf.py $M \
            --outtype bf16 --outfile $G > "$O/convert.log" 2>&1 || { tail -20 "$O/convert.log"; exit 1; }
    fi
    echo "== llama-bench $(el)"
    timeout 120 $B/llama-bench -m $G -ngl 99 -fa 1 -p 1024 -n 128 -r 3 -o json \
        > "$O/llama_bench.json" 2> "$O/llama_bench.err" || tail -5 "$O/llama_bench.err"
    lstart() { # NP CTX
        $B/llama-server -m $G --host 127.0.0.1 --port $PORT -a l8b -fa on -ngl 99 -np "$1" \
            -c "$2" > "$O/llama_server.log" 2>&1 &
        SERVER=$!
        STARTUP=$(wait_health http://127.0.0.1:$PORT $SERVER) || { tail -20 "$O/llama_server.log"; exit 1; }
        echo "llama-server -np $1 startup ${STARTUP}s"
    }
    lstart 64 $((64 * 2304))
    echo "{\"label\":\"startup\",\"seconds\":$STARTUP}" >> "$O/bench.jsonl"
    workloads llama.cpp basic prefix
    kill $SERVER; wait $SERVER 2> /dev/null
    lstart 256 $((256 * 1152))
    workloads llama.cpp serve256
    kill $SERVER; wait $SERVER 2> /dev/null
    echo "llama-server -m l8b-bf16.gguf -fa on -ngl 99 -np N -c N*CTX" > "$O/command.txt"
    ;;
check)
    # After a kernel change: the GPU tests, the GEMM probe on the serving
    # shapes, then serve-256, serve-64 and decode-b1 (SHORT request counts)
    # with step logs, by default and with each env assignment in $AB
    # (e.g. AB="INFERD_CUDA_ATT=split", several joined by +) or server flag in it (e.g.
    # AB="--max-num-batched-tokens=1024"), so the change is measured A/B.
    # CHECK_TESTS=0 / CHECK_BENCH=0 leave out the first / the second part,
    # CHECK_PROBE=0 the probe; PROFILE_B1=1 adds the per-op device profile
    # of batch-1 decode steps. PROBE_ROWS: the GEMM probe's row counts (62
    # 256); GEMV_PROBE=tools/gpu/gemv_probe binary (or .xz; libcmocka beside
    # it): run it per env variant. CHECK_WORK: the workloads per variant
    # (first prefill serve256 serve64 b1; also tg128). TEST_ENV: see gpu_tests.
    BUNDLE=$(realpath "$1"); TOK=$(realpath "$2")
    source "$ROOT/bench/bundle_env.sh" /tmp/gpudist
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$O/machine.txt"
    export INFERD
    [ "${CHECK_TESTS:-1}" = 0 ] || gpu_tests "$O/tests.log"
    if [ "${CHECK_TESTS:-1}" != 0 ] && [ "${CHECK_PROBE:-1}" != 0 ]; then
        NV=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
        $NV -O2 -gencode=arch=compute_90a,code=sm_90a "$ROOT/tools/gpu/gemm_probe.cu" \
            -lcublas -lcublasLt -o /tmp/gemm_probe > "$O/probe.txt" 2>&1 &&
            /tmp/gemm_probe sep ${PROBE_ROWS:-62 256} | tee "$O/probe.txt"
    fi
    if [ -n "${GEMV_PROBE:-}" ]; then # the one-row GEMV alone, by default and per $AB env
        case $GEMV_PROBE in *.xz) xz -dc "$GEMV_PROBE" > /tmp/gemv_probe ;;
                            *) cp "$GEMV_PROBE" /tmp/gemv_probe ;; esac
        chmod +x /tmp/gemv_probe
        for v in default ${AB:-}; do
            case $v in default|*=*) ;; *) continue ;; esac
            echo "== gemv_probe $v" | tee -a "$O/gemv.txt"
            # the bundle's libraries, and those in GEMV_PROBE's folder (libcmocka)
            env LD_LIBRARY_PATH="/tmp/gpudist/inferd/lib:$(dirname "$(realpath "$GEMV_PROBE")"):${LD_LIBRARY_PATH:-}" \
                $([ $v = default ] || echo "${v//+/ }") /tmp/gemv_probe 1 2>&1 | tee -a "$O/gemv.txt"
        done
    fi
    checkpoint "$TOK" || exit 1
    [ "${CHECK_BENCH:-1}" = 0 ] && exit 0
    R=128
    mkdir -p /tmp/prof
    for v in default ${AB:-}; do
        # a variant is a server flag (--flag=value) or env assignments joined
        # by + (INFERD_CUDA_PDL=0+INFERD_CUDA_GEMV_NORM=0)
        env=(); args=()
        case $v in default) ;; --*) args=("$v") ;; *) IFS=+ read -ra env <<< "$v" ;; esac
        echo "== variant $v $(el)" | tee -a "$O/bench.log"
        istart INFERD_STEP_LOG=/tmp/prof/steps-$v.txt ${env[@]+"${env[@]}"} -- ${args[@]+"${args[@]}"}
        echo "startup ${STARTUP}s" | tee -a "$O/bench.log"
        for w in ${CHECK_WORK:-first prefill serve256 serve64 b1}; do
            case $w in
            first) SUFFIX=@$v bench inferd first-1024 --concurrency 1 --requests 1 \
                       --input-len 1024 --output-len 16 --seed 8 ;;
            prefill) SUFFIX=@$v bench inferd prefill-1024 --concurrency 1 --requests 4 \
                         --input-len 1024 --output-len 1 --seed 3 ;;
            b1) SUFFIX=@$v bench inferd decode-b1 --concurrency 1 --requests 2 \
                    --input-len 1024 --output-len 256 --seed 1 ;;
            tg128) SUFFIX=@$v bench inferd decode-tg128 --concurrency 1 --requests 4 \
                       --input-len 16 --output-len 128 --seed 2 ;;
            *) SUFFIX=@$v workloads inferd $w ;;
            esac
        done
        istop
    done
    python3 "$ROOT/bench/steps_report.py" /tmp/prof/steps-*.txt > "$O/steps.txt" 2>&1
    tail -40 "$O/steps.txt"
    if [ "${PROFILE_B1:-0}" = 1 ]; then # per-op device time of batch-1 decode steps
        istart INFERD_WARMUP=0 INFERD_CUDA_PROFILE=1
        bench inferd prof-b1 --concurrency 1 --requests 1 --input-len 1024 --output-len 256
        istop
        grep -A24 "cuda profile" "$O/serve.log" | tee "$O/profile.txt"
    fi
    ;;
sweep)
    # serve-64's throughput / ITL trade-off: the whole workload once per
    # --max-num-batched-tokens value (prompt chunk per step) in $MBT.
    BUNDLE=$(realpath "$1"); TOK=$(realpath "$2")
    source "$ROOT/bench/bundle_env.sh" /tmp/gpudist
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$O/machine.txt"
    checkpoint "$TOK" || exit 1
    for t in ${MBT:-1024 1536 2048}; do
        istart -- --max-num-batched-tokens $t
        SUFFIX=@mbt$t workloads inferd serve64
        istop
    done
    ;;
profile)
    # Where a serving step's time goes: INFERD_STEP_LOG timelines of serve-256
    # and serve-64 (one line per engine step), then the per-op device profile
    # (INFERD_CUDA_PROFILE=1, one synchronize per op) of shorter runs.
    BUNDLE=$(realpath "$1"); TOK=$(realpath "$2")
    source "$ROOT/bench/bundle_env.sh" /tmp/gpudist
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$O/machine.txt"
    checkpoint "$TOK" || exit 1
    mkdir -p /tmp/prof
    istart INFERD_STEP_LOG=/tmp/prof/steps-serve256.txt; workloads inferd serve256; istop
    istart INFERD_STEP_LOG=/tmp/prof/steps-serve64.txt; workloads inferd serve64; istop
    istart INFERD_STEP_LOG=/tmp/prof/steps-b1.txt
    bench inferd decode-b1 --concurrency 1 --requests 2 --input-len 1024 --output-len 256; istop
    for w in serve256 b1; do
        echo "== device profile $w $(el)" | tee -a "$O/serve.log"
        istart INFERD_STEP_LOG=/tmp/prof/steps-prof-$w.txt INFERD_CUDA_PROFILE=1
        if [ $w = b1 ]; then
            bench inferd prof-b1 --concurrency 1 --requests 1 --input-len 1024 --output-len 256
        else
            bench inferd prof-256 --concurrency 256 --requests 256 --input-len 128 --output-len 256
        fi
        istop
    done
    grep -A16 "cuda profile\|== device profile" "$O/serve.log" | tee "$O/profile.txt"
    python3 "$ROOT/bench/steps_report.py" /tmp/prof/steps-*.txt | tee "$O/steps.txt"
    tar -C /tmp -czf "$O/steps.tar.gz" prof
    ;;
report)
    python3 "$ROOT/bench/gpu_report.py" "$@"
    ;;
esac
echo "done $(el)"
