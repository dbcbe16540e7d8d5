#!/bin/bash
# End-to-end with curl: SSE framing byte by byte (headers, "data: {json}"
# events separated by a blank line, "data: [DONE]" last), over HTTP/1.1
# chunked and HTTP/1.0; 413 for an announced oversized body with
# Expect: 100-continue; the printed curl command works as printed.
set -u
cd "$(dirname "$0")/../.."
INFERD=${INFERD:-build/inferd}
tmp=$(mktemp -d)
fail=0
check() { if eval "$2"; then echo "ok   $1"; else echo "FAIL $1"; fail=1; fi; }

"$INFERD" serve tests/fixtures/models/qwen3 --host 127.0.0.1 --port 0 --served-model-name tiny \
    --kv-cache-memory 32MiB --threads 2 --max-request-bytes 100000 >"$tmp/out" 2>"$tmp/err" &
pid=$!
for _ in $(seq 200); do grep -q ready "$tmp/out" && break; sleep 0.05; done
port=$(grep -o 'listening on http://[^ ]*' "$tmp/out" | grep -o '[0-9]*$')
url="http://127.0.0.1:$port"
check "server ready on a kernel-picked port" '[ -n "$port" ] && grep -q ready "$tmp/out"'

body='{"model":"tiny","messages":[{"role":"user","content":"hi"}],"max_tokens":8,"temperature":0,"ignore_eos":true,"stream":true,"stream_options":{"include_usage":true}}'
curl -sN -D "$tmp/h" -o "$tmp/b" "$url/v1/chat/completions" -H 'Content-Type: application/json' -d "$body"
check "200 text/event-stream, chunked, no-cache" \
    'grep -qi "^HTTP/1.1 200" "$tmp/h" && grep -qi "^content-type: text/event-stream" "$tmp/h" && grep -qi "^transfer-encoding: chunked" "$tmp/h" && grep -qi "^cache-control: no-cache" "$tmp/h"'
python3 - "$tmp/b" >"$tmp/py" 2>&1 <<'EOF'
import json, sys
raw = open(sys.argv[1], "rb").read()
assert raw.endswith(b"data: [DONE]\n\n"), raw[-60:]
events = raw.split(b"\n\n")
assert events[-1] == b"", "stream must end with a blank line"
events = events[:-1]
for e in events:
    assert e.startswith(b"data: ") and b"\n" not in e, e
js = [json.loads(e[6:]) for e in events[:-1]]
assert js[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}, js[0]
assert all(j["object"] == "chat.completion.chunk" and j["id"] == js[0]["id"] for j in js)
assert all("usage" in j and j["usage"] is None for j in js[:-1])
assert js[-1]["choices"] == [] and js[-1]["usage"]["completion_tokens"] == 8, js[-1]
assert js[-2]["choices"][0]["finish_reason"] == "length" and js[-2]["choices"][0]["delta"] == {}
assert all(j["choices"][0]["finish_reason"] is None for j in js[:-2])
print("framing ok", len(events))
EOF
check "SSE framing: data: lines, blank-line separated, role first, usage chunk, [DONE]" 'grep -q "framing ok" "$tmp/py" || { cat "$tmp/py"; false; }'

curl -sN --http1.0 -o "$tmp/b10" "$url/v1/completions" -H 'Content-Type: application/json' \
    -d '{"model":"tiny","prompt":"abc","max_tokens":8,"ignore_eos":true,"stream":true,"stream_options":{"include_usage":true}}'
check "HTTP/1.0 client gets the whole stream" 'tail -c 14 "$tmp/b10" | grep -q "data: \[DONE\]" && grep -q "\"completion_tokens\":8" "$tmp/b10"'

head -c 200000 /dev/zero | tr '\0' 'a' >"$tmp/big"
code=$(curl -s -o "$tmp/b413" -w '%{http_code}' "$url/v1/completions" -H 'Content-Type: application/json' \
    -H 'Expect: 100-continue' --data-binary @"$tmp/big")
check "oversized body -> 413 with an OpenAI error" '[ "$code" = 413 ] && grep -q "\"error\"" "$tmp/b413"'

# The curl line the server prints on startup, run as printed.
cmd=$(grep -o "curl http.*" "$tmp/out")
eval "$cmd" >"$tmp/quick" 2>&1
check "the printed quick-start curl works" 'grep -q "\"chat.completion\"" "$tmp/quick"'

kill -INT $pid
wait $pid
rc=$?
check "SIGINT -> exit 0" '[ $rc = 0 ]'
[ $fail = 0 ] || { echo "--- server stderr"; tail -20 "$tmp/err"; }
rm -rf "$tmp"
exit $fail
