#!/bin/bash
# Encoder speed on the CPU: a bert-base-chinese-shaped checkpoint with random
# float32 weights (tools/make_encoder_checkpoint.py) read from
# pytorch_model.bin, then `inferd embed` on 1 and on 32 sequences of 128
# tokens. Load time = the 1-sequence run minus its forward pass is not split
# out; the difference between the runs is 31 x 128 tokens of forward work.
# Appends a dated entry to bench/RESULTS.md.
#   bench/encoder.sh [THREADS=all cores]
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=${1:-$(nproc)}
DIR=bench/out/bert-base-bin
make -s -j"$(nproc)" build/inferd
[ -f "$DIR/pytorch_model.bin" ] || /usr/bin/python3 tools/make_encoder_checkpoint.py --out "$DIR"
python3 -c "import json; ids = json.load(open('$DIR/ids.json')); json.dump(ids[:1], open('$DIR/ids1.json', 'w'))"
run() { # prints wall seconds
    local t0 t1
    t0=$(date +%s.%N)
    build/inferd embed "$DIR" --ids-json "$1" --threads "$THREADS" > /dev/null
    t1=$(date +%s.%N)
    echo "$t1 - $t0" | bc
}
one=$(run "$DIR/ids1.json"); many=$(run "$DIR/ids.json")
tps=$(echo "scale=1; 31 * 128 / ($many - $one)" | bc)
load=$(uptime | sed 's/.*load average: //')
line="1 x 128 tokens (load + forward): ${one}s; 32 x 128: ${many}s; forward ≈ ${tps} tok/s"
echo "$line"
{
    echo
    echo "## $(date -u +%F) CPU encoder, bert-base-chinese shape, f32 random weights from pytorch_model.bin (commit $(git rev-parse --short HEAD))"
    echo
    echo "- machine: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores; load average $load"
    echo "- command: \`bench/encoder.sh $THREADS\` → \`build/inferd embed $DIR --ids-json <ids> --threads $THREADS\`"
    echo "- $line"
} >> bench/RESULTS.md
