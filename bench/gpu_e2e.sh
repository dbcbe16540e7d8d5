#!/bin/bash
# Issue 7's serving checks on the GPU machine, one call: the serving
# end-to-end tests (Python requests) against `inferd serve --device cuda`, and
# compute-sanitizer memcheck on a short serving run.
#   bench/gpu_e2e.sh BUNDLE.tar.gz     (from the repository root; logs to $OUT)
set -uo pipefail
BUNDLE=$(realpath "$1")
O=${OUT:-/tmp/out}; mkdir -p "$O" /tmp/e2e
source "$(dirname "$0")/bundle_env.sh" /tmp/e2e
export INFERD_SERVE_ARGS="--device cuda"
rc=0
for t in tests/server/test_api.py tests/server/test_concurrency.py; do
    if timeout 150 python3 "$t" > "$O/$(basename "$t").log" 2>&1; then echo "PASS $t (GPU server)"
    else echo "FAIL $t (GPU server)"; tail -25 "$O/$(basename "$t").log"; rc=1; fi
done
CS=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null)
if [ -n "$CS" ]; then
    $CS --tool memcheck --log-file "$O/memcheck.log" "$INFERD" serve tests/fixtures/models/qwen3 \
        --device cuda --host 127.0.0.1 --port 8124 --kv-cache-memory 64MiB > "$O/cs-serve.log" 2>&1 &
    S=$!
    for _ in $(seq 600); do curl -sf http://127.0.0.1:8124/health >/dev/null && break; sleep 0.1; done
    M=tests/fixtures/models/qwen3
    {
        curl -s http://127.0.0.1:8124/v1/completions -H 'Content-Type: application/json' \
            -d "{\"model\":\"$M\",\"prompt\":[5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21],\"max_tokens\":12}"
        curl -s http://127.0.0.1:8124/v1/chat/completions -H 'Content-Type: application/json' \
            -d "{\"model\":\"$M\",\"messages\":[{\"role\":\"user\",\"content\":\"hello there\"}],\"max_tokens\":10,\"n\":2}"
        curl -s http://127.0.0.1:8124/v1/completions -H 'Content-Type: application/json' \
            -d "{\"model\":\"$M\",\"prompt\":\"abc\",\"max_tokens\":8,\"stream\":true}"
    } > "$O/cs-requests.log" 2>&1
    # SIGTERM to inferd itself (not the sanitizer) so it drains, exits and the summary is written
    pkill -TERM -x inferd; wait $S
    grep -E "ERROR SUMMARY" "$O/memcheck.log" || { echo "no memcheck summary"; rc=1; }
    grep -q "ERROR SUMMARY: 0 errors" "$O/memcheck.log" || rc=1
else
    echo "compute-sanitizer not found"; rc=1
fi
exit $rc
