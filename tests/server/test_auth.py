"""--api-key over loopback: every path but /health and /metrics needs the
key (also /classify and paths of no route, which must not tell a client
without the key what exists), and an empty key refuses to start rather than
serving open."""
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from serverlib import INFERD, MODELS, Server, check, finish  # noqa: E402

KEY = "sk-test-key"
with Server("qwen3", ["--api-key", KEY]) as s:
    good = {"Authorization": "Bearer " + KEY}
    for path in ("/v1/chat/completions", "/v1/completions", "/tokenize", "/detokenize",
                 "/classify", "/v1/embeddings", "/v1/score", "/v1/rerank", "/pooling", "/nope"):
        r = s.post(path, {"input": "x"})
        check(f"POST {path} without the key: 401", r.status_code == 401
              and r.json()["error"]["code"] == "invalid_api_key", r.text)
        r = s.post(path, {"input": "x"}, headers={"Authorization": "Bearer wrong"})
        check(f"POST {path} with a wrong key: 401", r.status_code == 401, r.text)
    r = s.get("/v1/models")
    check("GET /v1/models without the key: 401", r.status_code == 401, r.text)
    r = s.get("/v1/models", headers=good)
    check("GET /v1/models with the key: 200", r.status_code == 200, r.text)
    r = s.post("/tokenize", {"prompt": "hi"}, headers=good)
    check("POST /tokenize with the key: 200", r.status_code == 200, r.text)
    r = s.post("/classify", {"input": "hi"}, headers=good)
    check("POST /classify with the key passes auth", r.status_code != 401, r.text)
    for path in ("/health", "/metrics"):
        r = s.get(path)
        check(f"GET {path} stays open", r.status_code == 200, r.text[:200])

# An empty key once meant "no authentication": refuse it, flag or env.
for args, env in (([ "--api-key", ""], {}), ([], {"INFERD_API_KEY": ""})):
    e = dict(os.environ)
    e.update(env)
    try:
        p = subprocess.run([INFERD, "serve", f"{MODELS}/qwen3", "--host", "127.0.0.1", "--port", "0",
                            "--kv-cache-memory", "64MiB", *args], env=e, capture_output=True,
                           text=True, timeout=20)
        got = (p.returncode, p.stderr[-500:])
    except subprocess.TimeoutExpired:
        got = ("still serving after 20 s", "")
    check(f"empty key {args or env}: exit 2 with a message", got[0] == 2 and "empty" in got[1], got)
finish()
