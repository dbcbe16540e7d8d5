#!/bin/bash
# Start-up on the CPU: `inferd serve MODEL_DIR` (its defaults, the 4 GiB KV
# pool included) to the first /health 200, median of RUNS. Appends a dated
# line to bench/RESULTS.md and a row to bench/results.jsonl.
#   bench/startup_cpu.sh [MODEL_DIR=models/demo] [RUNS=5]
# Env: INFERD=build/inferd (the binary to time), NOTE=... (added to the entry).
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-models/demo}; RUNS=${2:-5}; INFERD=${INFERD:-build/inferd}
[ "$INFERD" = build/inferd ] && make -s -j"$(nproc)" build/inferd
PORT=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
ts=()
for _ in $(seq "$RUNS"); do
    t0=$(date +%s.%N)
    "$INFERD" serve "$DIR" --host 127.0.0.1 --port "$PORT" --disable-log-requests >/dev/null 2>&1 &
    pid=$!
    until curl -sf -o /dev/null "http://127.0.0.1:$PORT/health"; do
        kill -0 $pid 2>/dev/null || { echo "inferd serve exited before /health answered" >&2; exit 1; }
        sleep 0.01
    done
    ts+=("$(echo "$(date +%s.%N) - $t0" | bc)")
    kill $pid; wait $pid 2>/dev/null || true
done
MED=$(printf '%s\n' "${ts[@]}" | sort -g | awk '{a[NR]=$1} END{printf "%.2f", a[int((NR+1)/2)]}')
echo "start-up: $MED s (median of $RUNS: ${ts[*]})"
DATE=$(date -u +%F); COMMIT=$(git rev-parse --short HEAD); CPU=$(lscpu | sed -n 's/^Model name: *//p')
printf '\n## %s CPU start-up (commit %s)\n\n- machine: %s, %s cores; command: `bench/startup_cpu.sh %s %s`\n- `inferd serve %s` to /health 200: **%s s** (median of %s)%s\n' \
    "$DATE" "$COMMIT" "$CPU" "$(nproc)" "$DIR" "$RUNS" "$DIR" "$MED" "$RUNS" "${NOTE:+; $NOTE}" >> bench/RESULTS.md
printf '{"date":"%s","commit":"%s","machine":"%s x%s","engine":"inferd","device":"cpu","workload":"startup","model":"%s","startup_s":%s}\n' \
    "$DATE" "$COMMIT" "$CPU" "$(nproc)" "$DIR" "$MED" >> bench/results.jsonl
