#!/bin/bash
# CPU prefill and decode speed of `inferd generate` on a Qwen2.5-0.5B-shaped
# checkpoint with random bf16 weights (made by tools/make_checkpoint.py, not
# committed). Appends a dated entry to bench/RESULTS.md.
#   bench/cpu.sh [PROMPT_LEN=256] [NEW_TOKENS=128] [RUNS=3]
set -euo pipefail
cd "$(dirname "$0")/.."
PLEN=${1:-256}; NEW=${2:-128}; RUNS=${3:-3}
DIR=bench/out/qwen2.5-0.5b
make -s -j"$(nproc)" build/inferd
[ -f "$DIR/model.safetensors" ] || /usr/bin/python3 tools/make_checkpoint.py --shape qwen2.5-0.5b --out "$DIR"
IDS=$(/usr/bin/python3 -c "import random; r=random.Random(0); print(','.join(str(r.randrange(151000)) for _ in range($PLEN)))")
CMD="build/inferd generate --model $DIR --prompt-ids <$PLEN random ids> --max-tokens $NEW --timing"
lines=()
for i in $(seq "$RUNS"); do
    line=$(build/inferd generate --model "$DIR" --prompt-ids "$IDS" --max-tokens "$NEW" --timing 2>&1 >/dev/null | grep '^prefill')
    echo "run $i: $line"
    lines+=("$line")
done
{
    echo
    echo "## $(date -u +%Y-%m-%d) CPU generate, Qwen2.5-0.5B shape, bf16 random weights (commit $(git rev-parse --short HEAD))"
    echo
    echo "- machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB"
    echo "- command: \`bench/cpu.sh $PLEN $NEW $RUNS\` → \`$CMD\`"
    for l in "${lines[@]}"; do echo "- $l"; done
} >> bench/RESULTS.md
echo "appended to bench/RESULTS.md"
