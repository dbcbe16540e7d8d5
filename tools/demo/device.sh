#!/bin/bash
# The training run with the committed defaults (no smoke run this time).
set -o pipefail
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=true
D=.cache/demo   # train.py and data.jsonl copied here from tools/demo and prep
nvidia-smi --query-gpu=name --format=csv,noheader
t0=$(date +%s)
python3 $D/train.py train --data $D/data.jsonl --out /tmp/demo/model --eval-out /tmp/demo/eval > $OUT/train.log 2>&1
rc=$?
grep -v -i "warn\|shards\|Loading weights" $OUT/train.log | tail -45
tar cf /tmp/demo.tar -C /tmp/demo . && split -b 15M /tmp/demo.tar $OUT/demo.tar.part-
echo "wall $(( $(date +%s) - t0 ))s rc=$rc"
exit $rc
