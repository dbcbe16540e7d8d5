#!/bin/bash
# inferd generate: --prefill-chunk gives bitwise the same output as one
# prefill step on the CPU (chunks attend to the cached earlier ones, and the
# CPU matmul is batch-invariant); unknown devices and a CUDA request on a
# build or machine without CUDA fail with a message, not a crash.
set -u
M=tests/fixtures/models/qwen2
ids=$(seq -s, 3 2 301)
fail=0
a=$("$INFERD" generate --model $M --prompt-ids "$ids" --max-tokens 6 --json --threads 2) || fail=1
b=$("$INFERD" generate --model $M --prompt-ids "$ids" --max-tokens 6 --json --threads 2 \
    --prefill-chunk 37) || fail=1
if [ "$a" != "$b" ]; then
    echo "FAIL: chunked prefill differs:"; echo "$a"; echo "$b"; fail=1
fi
err=$("$INFERD" generate --model $M --prompt-ids 1,2 --device tpu 2>&1) && fail=1
case "$err" in *"unknown device 'tpu'"*) ;; *) echo "FAIL: --device tpu said: $err"; fail=1 ;; esac
err=$("$INFERD" generate --model $M --prompt-ids 1,2 --prefill-chunk 0 2>&1) && fail=1
case "$err" in *"--prefill-chunk"*) ;; *) echo "FAIL: --prefill-chunk 0 said: $err"; fail=1 ;; esac
# Without a GPU (CI) or without nvcc at build time, --device cuda is an error
# that names the cause; with a GPU it must work.
if out=$("$INFERD" generate --model $M --prompt-ids 1,2 --device cuda 2>&1); then
    echo "cuda available: $out"
else
    case "$out" in
        *"no CUDA backend"*|*"no usable NVIDIA GPU"*) echo "no cuda: $out" ;;
        *) echo "FAIL: --device cuda said: $out"; fail=1 ;;
    esac
fi
[ $fail = 0 ] && echo PASS
exit $fail
