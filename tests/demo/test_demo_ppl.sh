#!/bin/bash
# inferd's held-out loss on the bundled demo model must match PyTorch's
# (tests/fixtures/demo/heldout_ref.json, written by tools/demo/train.py from
# the saved bf16 checkpoint evaluated in float32) within 1%, pooled and per
# conversation. Under ASan only the first conversations are scored (speed);
# the reference for them is summed from the per-conversation numbers.
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${INFERD:?INFERD must point at the inferd binary}"
MODEL=models/demo
IDS=tests/fixtures/demo/heldout.jsonl
REF=tests/fixtures/demo/heldout_ref.json
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

LIMIT=200
case "$INFERD" in *build-san*) LIMIT=48 ;; esac

"$INFERD" perplexity --model "$MODEL" --ids-file "$IDS" --limit "$LIMIT" --json > "$TMP/out.json"
/usr/bin/python3 - "$TMP/out.json" "$REF" "$IDS" "$LIMIT" <<'PY'
import json, math, sys
got = json.load(open(sys.argv[1]))
ref = json.load(open(sys.argv[2]))
limit = int(sys.argv[4])
convs = [json.loads(l) for l in open(sys.argv[3]) if l.strip()][:limit]
n = len(convs)
tokens = sum(len(c["ids"]) - c["n_prompt"] for c in convs)
assert got["conversations"] == n, (got["conversations"], n)
assert got["tokens"] == tokens, (got["tokens"], tokens)
ref_mean = sum(ref["nll_sum"][:n]) / tokens
if n == ref["conversations"]:
    assert ref["tokens"] == tokens and abs(ref_mean - ref["mean_loss"]) < 1e-9
rel = abs(got["mean_loss"] - ref_mean) / ref_mean
print(f"{n} conversations, {tokens} tokens: inferd {got['mean_loss']:.6f} "
      f"(ppl {got['perplexity']:.3f}), PyTorch {ref_mean:.6f} (ppl {math.exp(ref_mean):.3f}), "
      f"relative difference {rel:.2e}")
assert rel < 0.01, "mean loss differs from PyTorch by more than 1%"
worst = max(abs(a - b) / b for a, b in zip(got["nll_sum"], ref["nll_sum"][:n]))
print(f"worst per-conversation relative difference {worst:.2e}")
assert worst < 0.01, "a conversation's loss differs from PyTorch by more than 1%"
assert abs(math.exp(got["mean_loss"]) - got["perplexity"]) < 1e-6 * got["perplexity"]
PY

# The plain-text form carries the same numbers.
"$INFERD" perplexity --model "$MODEL" --ids-file "$IDS" --limit 2 | grep -Eq '^2 conversations, [0-9]+ scored tokens: mean loss [0-9.]+, perplexity [0-9.]+$'

# Errors: each must fail with a message that says what is wrong.
expect_fail() { # expected-status message-regex args...
    local want=$1 re=$2; shift 2
    set +e
    "$INFERD" perplexity "$@" > "$TMP/stdout" 2> "$TMP/stderr"
    local rc=$?
    set -e
    if [ "$rc" -ne "$want" ] || ! grep -Eq "$re" "$TMP/stderr"; then
        echo "expected status $want and /$re/ for: perplexity $*; got $rc:"; cat "$TMP/stderr"
        exit 1
    fi
}
expect_fail 2 'are required' --model "$MODEL"
expect_fail 2 'are required' --ids-file "$IDS"
expect_fail 2 'expects an integer' --model "$MODEL" --ids-file "$IDS" --limit 0
expect_fail 1 'nope.jsonl' --model "$MODEL" --ids-file "$TMP/nope.jsonl"
expect_fail 1 'config.json|model' --model "$TMP" --ids-file "$IDS"
: > "$TMP/empty.jsonl"
expect_fail 1 'no conversations' --model "$MODEL" --ids-file "$TMP/empty.jsonl"
printf '{"ids": [1, 2, 3], "n_prompt": 1}\n{"ids": [1, 2, 3]\n' > "$TMP/bad.jsonl"
expect_fail 1 'line 2: invalid JSON' --model "$MODEL" --ids-file "$TMP/bad.jsonl"
printf '\n{"ids": [1, 2, 3], "n_prompt": 3}\n' > "$TMP/bad.jsonl"
expect_fail 1 'line 2: n_prompt 3 must be in \[1, 3\)' --model "$MODEL" --ids-file "$TMP/bad.jsonl"
printf '{"ids": [1, 8192, 3], "n_prompt": 1}\n' > "$TMP/bad.jsonl"
expect_fail 1 'line 1: ids\[1\] is not a token id of this model \(vocab 8192\)' --model "$MODEL" --ids-file "$TMP/bad.jsonl"
printf '{"ids": [1, -2, 3], "n_prompt": 1}\n' > "$TMP/bad.jsonl"
expect_fail 1 'ids\[1\] is not a token id' --model "$MODEL" --ids-file "$TMP/bad.jsonl"
printf '[1, 2, 3]\n' > "$TMP/bad.jsonl"
expect_fail 1 'line 1: expected \{"ids"' --model "$MODEL" --ids-file "$TMP/bad.jsonl"
/usr/bin/python3 -c 'print({"ids": [5] * 1100, "n_prompt": 1}.__repr__().replace("\x27", "\""))' > "$TMP/long.jsonl"
expect_fail 1 "exceeds the model's context of 1024" --model "$MODEL" --ids-file "$TMP/long.jsonl"
echo "perplexity: all checks passed"
