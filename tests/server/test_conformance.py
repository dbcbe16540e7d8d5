"""What OpenAI's and vLLM's clients rely on beyond the happy path, over
loopback: each error names the field to fix."""
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
from serverlib import Server, check, finish, sse_events  # noqa: E402

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

    # context length: OpenAI's code, which clients test for
    for what, body in (("max_tokens too large", {"messages": MSGS, "max_tokens": 5000}),
                       ("prompt too long", {"messages": [{"role": "user", "content": "hi " * 1500}]})):
        r = s.post("/v1/chat/completions", body)
        check(f"{what}: 400 context_length_exceeded", r.status_code == 400
              and err(r).get("code") == "context_length_exceeded" and err(r).get("param") == "messages", r.text)
    r = s.post("/v1/completions", {"prompt": "hi", "max_tokens": 5000})
    check("completions: context_length_exceeded", err(r).get("code") == "context_length_exceeded", r.text)
    r = s.post("/v1/completions", {"prompt": "hi", "max_tokens": 2, "top_p": 7})
    check("other 400s keep code null", r.status_code == 400 and err(r).get("code") is None, r.text)

    # OpenAI's chat response shape: refusal present (null), a string fingerprint
    j = s.post("/v1/chat/completions", {"messages": MSGS, "max_tokens": 2, "logprobs": True}).json()
    ch = j["choices"][0]
    check("chat: message.refusal is present and null", "refusal" in ch["message"]
          and ch["message"]["refusal"] is None, ch)
    check("chat: logprobs.refusal is present and null", "refusal" in ch["logprobs"]
          and ch["logprobs"]["refusal"] is None, ch["logprobs"])
    check("chat: system_fingerprint is a string", isinstance(j.get("system_fingerprint"), str), j)
    j = s.post("/v1/completions", {"prompt": "hi", "max_tokens": 2}).json()
    check("completions: system_fingerprint is a string", isinstance(j.get("system_fingerprint"), str), j)
    r = s.post("/v1/chat/completions", {"messages": MSGS, "max_tokens": 2, "stream": True}, stream=True)
    chunks = [e for e in sse_events(r) if e != "[DONE]"]
    check("chat chunks: system_fingerprint is a string",
          chunks and all(isinstance(c.get("system_fingerprint"), str) for c in chunks), chunks[:2])

    # X-Request-Id on every answer: the client's echoed, else a fresh one
    seen = set()
    for how, r in (("chat", s.post("/v1/chat/completions", {"messages": MSGS, "max_tokens": 2})),
                   ("400", s.post("/v1/completions", {"prompt": "hi", "bogus": 1})),
                   ("404", s.get("/nope")), ("/health", s.get("/health")), ("/metrics", s.get("/metrics")),
                   ("stream", s.post("/v1/completions", {"prompt": "hi", "max_tokens": 2, "stream": True}))):
        rid = r.headers.get("x-request-id")
        check(f"{how}: x-request-id present", bool(rid), dict(r.headers))
        seen.add(rid)
    check("fresh request ids differ", len(seen) == 6, seen)
    r = s.post("/v1/chat/completions", {"messages": MSGS, "max_tokens": 2}, headers={"X-Request-Id": "abc-123"})
    check("the client's X-Request-Id is echoed", r.headers.get("x-request-id") == "abc-123", dict(r.headers))
    r = s.get("/health", headers={"X-Request-Id": "x" * 500})
    rid = r.headers.get("x-request-id", "")
    check("an overlong X-Request-Id is replaced", 0 < len(rid) <= 128, rid[:50])

    # Documented fields that cannot change the answer are served ...
    inert = {"safety_identifier": "u-1", "prompt_cache_key": "k", "prompt_cache_retention": "24h",
             "verbosity": "low", "prediction": {"type": "content", "content": "hello"},
             "use_beam_search": False, "priority": 0, "continue_final_message": False,
             "length_penalty": 1.0, "spaces_between_special_tokens": True, "echo": False,
             "guided_json": None, "bad_words": []}
    base = {"messages": MSGS, "max_tokens": 3, "temperature": 0}
    want = s.post("/v1/chat/completions", base).json()["choices"][0]["message"]["content"]
    for k, v in inert.items():
        r = s.post("/v1/chat/completions", {**base, k: v})
        check(f"chat with {k}={v!r}: 200, same text", r.status_code == 200
              and r.json()["choices"][0]["message"]["content"] == want, r.text[:300])
    r = s.post("/v1/completions", {"prompt": "hi", "max_tokens": 2, "use_beam_search": False, "priority": 0})
    check("completions with vLLM's defaults: 200", r.status_code == 200, r.text)
    r = s.post("/v1/chat/completions", {**base, "stream": True,
                                        "stream_options": {"include_usage": True, "include_obfuscation": False}})
    check("stream_options.include_obfuscation accepted", r.status_code == 200, r.text[:300])
    # ... what would be silently wrong is refused by name
    for k, v in (("use_beam_search", True), ("priority", 5), ("continue_final_message", True),
                 ("length_penalty", 2), ("bad_words", ["x"])):
        r = s.post("/v1/chat/completions", {**base, k: v})
        check(f"chat with {k}={v!r}: 400 naming it", r.status_code == 400 and err(r).get("param") == k, r.text)
    r = s.post("/v1/chat/completions", {**base, "tools": [{"type": "function", "function": {"name": "f"}}]})
    check("tools without tool_choice none: 400 naming tools", err(r).get("param") == "tools", r.text)

    # An assistant turn without text (OpenAI sends content null, or none)
    for turn in ({"role": "assistant", "content": None}, {"role": "assistant"}):
        r = s.post("/v1/chat/completions", {"messages": [MSGS[0], turn, MSGS[0]], "max_tokens": 2})
        check(f"assistant {turn}: 200", r.status_code == 200, r.text)
    r = s.post("/v1/chat/completions", {"messages": [{"role": "user", "content": None}], "max_tokens": 2})
    check("user content null: 400", r.status_code == 400, r.text)

# tools with tool_choice "none" reach the template, as vLLM renders them
with tempfile.NamedTemporaryFile("w", suffix=".jinja", delete=False) as f:
    f.write("{% if tools %}[{{ tools | length }} tools]{% endif %}{% for m in messages %}{{ m['content'] }}{% endfor %}")
with Server("qwen3", ["--chat-template", f.name]) as s:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    body = {"messages": MSGS, "tools": tools, "tool_choice": "none", "max_tokens": 2}
    r = s.post("/v1/chat/completions", body)
    check("tools + tool_choice none: 200", r.status_code == 200, r.text)
    t = s.post("/tokenize", {"messages": MSGS, "tools": tools}).json()
    text = s.post("/detokenize", {"tokens": t["tokens"]}).json()["prompt"]
    check("the template sees the tools", text == "[1 tools]hi", text)
    check("...in the chat prompt too", r.json()["usage"]["prompt_tokens"] == t["count"], (r.text, t))
os.unlink(f.name)
finish()
