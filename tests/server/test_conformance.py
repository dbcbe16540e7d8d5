"""What OpenAI's and vLLM's clients rely on beyond the happy path, over
loopback: each error names the field to fix."""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from serverlib import Server, check, finish  # noqa: E402

MSGS = [{"role": "user", "content": "hi"}]


def err(r):
    try:
        return r.json()["error"]
    except Exception:
        return {}


with Server("qwen3") as s:
    # min_tokens > max_tokens is the client's min_tokens, not its messages
    for path, body in (("/v1/chat/completions", {"messages": MSGS}), ("/v1/completions", {"prompt": "hi"})):
        r = s.post(path, {**body, "max_tokens": 3, "min_tokens": 5})
        check(f"{path}: min_tokens > max_tokens names min_tokens", r.status_code == 400
              and err(r).get("param") == "min_tokens", r.text)
        r = s.post(path, {**body, "max_tokens": 3, "min_tokens": 3})
        check(f"{path}: min_tokens = max_tokens served", r.status_code == 200, r.text)
finish()
