"""--max-queue counts sequences, not requests: each choice of each prompt
(n, prompt lists) is one engine sequence, so a request of n = 3 weighs what
three of n = 1 do. Over the limit: 503 + Retry-After while others run, 400
naming n when the request alone could never fit; the server keeps serving."""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from serverlib import Server, check, finish  # noqa: E402

# at most 2 running + 2 queued = 4 sequences
with Server("qwen3", ["--max-num-seqs", "2", "--max-queue", "2"]) as s:
    r = s.post("/v1/completions", {"prompt": "x", "max_tokens": 2, "n": 5})
    check("n=5 > 4 sequences ever: 400 naming n", r.status_code == 400
          and r.json()["error"]["param"] == "n" and "--max-queue" in r.json()["error"]["message"], r.text)
    r = s.post("/v1/completions", {"prompt": ["a", "b", "c"], "max_tokens": 2, "n": 2})
    check("3 prompts x n=2 > 4: 400", r.status_code == 400, r.text)
    # one request of 3 sequences held open (the client does not read)
    held = s.post("/v1/completions", {"prompt": "x", "max_tokens": 900, "ignore_eos": True, "stream": True,
                                      "n": 3}, stream=True)
    r = s.post("/v1/completions", {"prompt": "x", "max_tokens": 2, "n": 2})
    check("3 running + n=2 > 4: 503 with Retry-After", r.status_code == 503
          and r.headers.get("Retry-After") == "1" and r.json()["error"]["code"] == "overloaded", r.text)
    r = s.post("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
    check("3 running + 1 = 4 still served", r.status_code == 200, r.text)
    held.close()
    ok = False
    for _ in range(100):  # the held request ends once its client is gone
        r = s.post("/v1/completions", {"prompt": "x", "max_tokens": 2, "n": 4})
        if r.status_code == 200:
            ok = len(r.json()["choices"]) == 4
            break
    check("after the held request ends, n=4 is served", ok, r.text)
finish()
