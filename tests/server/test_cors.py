"""CORS as vLLM's flags have it, over loopback: by default any origin may
call (Access-Control-Allow-Origin: *), an OPTIONS preflight is answered 204
with the Access-Control-* headers instead of 405 and without the API key a
browser never sends with it; --allowed-origins/--allowed-methods/
--allowed-headers narrow that, and what they leave out is refused by name."""
import os
import sys

import requests

sys.path.insert(0, os.path.dirname(__file__))
from serverlib import Server, check, finish  # noqa: E402

PRE = {"Origin": "http://app.example", "Access-Control-Request-Method": "POST",
       "Access-Control-Request-Headers": "authorization, content-type"}

with Server("qwen3", ["--api-key", "k1"]) as s:
    r = requests.options(s.url + "/v1/chat/completions", headers=PRE, timeout=30)
    h = r.headers
    check("preflight: 204 without the key", r.status_code == 204, (r.status_code, r.text))
    check("preflight: allow origin *, POST, the asked headers, max-age",
          h.get("Access-Control-Allow-Origin") == "*" and "POST" in h.get("Access-Control-Allow-Methods", "")
          and h.get("Access-Control-Allow-Headers", "").lower() == "authorization, content-type"
          and h.get("Access-Control-Max-Age") == "600", dict(h))
    r = s.post("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
               headers={"Origin": "http://app.example", "Authorization": "Bearer k1"})
    check("the real request: 200 with Access-Control-Allow-Origin *", r.status_code == 200
          and r.headers.get("Access-Control-Allow-Origin") == "*", dict(r.headers))
    r = s.post("/v1/chat/completions", {}, headers={"Origin": "http://app.example"})
    check("a 401 carries it too (the browser may read the error)", r.status_code == 401
          and r.headers.get("Access-Control-Allow-Origin") == "*", dict(r.headers))
    r = s.get("/health")
    check("no Origin: no CORS header", "Access-Control-Allow-Origin" not in r.headers, dict(r.headers))
    r = requests.options(s.url + "/v1/models", timeout=30)
    check("OPTIONS that is no preflight: still 401/405", r.status_code in (401, 405), r.status_code)

with Server("qwen3", ["--allowed-origins", '["http://ok.example"]', "--allowed-methods", "GET,POST",
                      "--allowed-headers", "Content-Type"]) as s:
    r = requests.options(s.url + "/v1/completions", headers={**PRE, "Origin": "http://ok.example",
                         "Access-Control-Request-Headers": "content-type"}, timeout=30)
    check("listed origin: 204, the origin echoed with Vary", r.status_code == 204
          and r.headers.get("Access-Control-Allow-Origin") == "http://ok.example"
          and r.headers.get("Vary") == "Origin"
          and r.headers.get("Access-Control-Allow-Methods") == "GET, POST", dict(r.headers))
    for what, hdrs, word in (("origin", {"Origin": "http://evil.example"}, "origin"),
                             ("method", {"Origin": "http://ok.example", "Access-Control-Request-Method": "DELETE"}, "method"),
                             ("header", {"Origin": "http://ok.example"}, "headers")):
        r = requests.options(s.url + "/v1/completions", headers={**PRE, **hdrs}, timeout=30)
        check(f"unlisted {what}: 400 naming it", r.status_code == 400 and word in r.json()["error"]["message"]
              and "Access-Control-Allow-Methods" not in r.headers, (r.status_code, r.text))
    r = s.get("/v1/models", headers={"Origin": "http://evil.example"})
    check("unlisted origin's request: served, no CORS header", r.status_code == 200
          and "Access-Control-Allow-Origin" not in r.headers, dict(r.headers))
finish()
