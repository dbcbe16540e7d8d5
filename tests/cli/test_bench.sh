#!/bin/bash
# `inferd bench` against a real `inferd serve` on loopback: every request
# completes with exactly the asked-for tokens, the JSON line is written, and
# an unreachable server is a failure with the reason.
set -u
T=$(mktemp -d)
PORT=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$INFERD" serve tests/fixtures/models/qwen3 --host 127.0.0.1 --port "$PORT" --threads 1 \
    --kv-cache-memory 64MiB --disable-log-requests >"$T/serve.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null; rm -rf "$T"' EXIT
for _ in $(seq 300); do
    curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && break
    sleep 0.1
done
fails=0
out=$("$INFERD" bench --url "http://127.0.0.1:$PORT" --concurrency 3 --requests 7 \
      --input-len 40 --output-len 9 --prefix-len 16 --id-range 3,500 --label t \
      --json-out "$T/r.jsonl" 2>&1) || { echo "FAIL: bench exited $?: $out"; fails=$((fails + 1)); }
echo "$out"
/usr/bin/python3 - "$T/r.jsonl" <<'PY' || fails=$((fails + 1))
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert len(rows) == 1, rows
r = rows[0]
assert r["ok"] == 7 and r["requests"] == 7, r
assert r["output_tokens"] == 7 * 9, r           # ignore_eos: exactly output_len each
assert r["label"] == "t" and r["prefix_len"] == 16, r
assert r["output_tok_s"] > 0 and r["ttft_p50_ms"] > 0 and r["itl_p50_ms"] > 0, r
assert r["ttft_p50_ms"] <= r["ttft_p99_ms"] and r["e2e_p50_ms"] >= r["ttft_p50_ms"], r
# per stream: 8 tokens after the first, in less than its whole time, and not
# much faster than the typical gap allows (stalls for other prompts only slow it)
sr = r["stream_tok_s_p50"]
assert 8e3 / r["e2e_p99_ms"] <= sr <= 3e3 / r["itl_p50_ms"], r
print("ok: results line", r)
PY
# the shared prefix shows up as prefix-cache hits on the server
hits=$(curl -s "http://127.0.0.1:$PORT/metrics" | awk '/^inferd:prefix_cache_hits_total/ {print $NF}')
if [ -n "$hits" ] && [ "${hits%.*}" -gt 0 ]; then echo "ok: prefix cache hits $hits"; else echo "FAIL: no prefix cache hits ($hits)"; fails=$((fails + 1)); fi
# a server that is not there: exit 1 and say why
out=$("$INFERD" bench --url "http://127.0.0.1:1" --requests 2 2>&1); rc=$?
if [ $rc -eq 1 ] && [[ "$out" == *"Couldn't connect"* ]]; then echo "ok: unreachable server"; else echo "FAIL: rc=$rc $out"; fails=$((fails + 1)); fi
out=$("$INFERD" bench --id-range 5,5 2>&1); rc=$?
if [ $rc -eq 2 ] && [[ "$out" == *"--id-range"* ]]; then echo "ok: bad flag"; else echo "FAIL: rc=$rc $out"; fails=$((fails + 1)); fi
[ $fails -eq 0 ]
