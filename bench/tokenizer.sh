#!/bin/bash
# Encode throughput, one thread: inferd against the Rust `tokenizers` library
# (Python binding) on the same corpus, same machine, same run.
# Usage: bench/tokenizer.sh TOKDIR CORPUS.jsonl [INFERD] [NAMES...]
#   TOKDIR holds one folder per tokenizer (tokenizer.json, tokenizer_config.json).
# Prints one JSON line per (tokenizer, implementation).
set -eu -o pipefail
TOKDIR=$1; CORPUS=$2; INFERD=${3:-build/inferd}; shift 3 || true
NAMES=${*:-qwen3 llama3 llama2 gemma3 deepseek_v3 gptoss}
HERE=$(cd "$(dirname "$0")" && pwd)
TXT=$(mktemp)
trap 'rm -f "$TXT"' EXIT
python3 -c "import json,sys; sys.stdout.write('\n'.join(json.loads(l)['text'] for l in open(sys.argv[1], encoding='utf-8')))" "$CORPUS" > "$TXT"
for n in $NAMES; do
    "$INFERD" tokenize "$TOKDIR/$n" --bench 5 < "$TXT" 2>&1 >/dev/null | tail -n 1 | sed "s/^{/{\"name\": \"$n\", \"mode\": \"one text\", /"
done
RAYON_NUM_THREADS=1 python3 "$HERE/tokenizer_bench.py" "$CORPUS" "$TOKDIR" $NAMES --repeat 5
