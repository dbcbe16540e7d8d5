"""End-to-end over loopback with Python requests: the bodies an OpenAI or
SiliconFlow user posts, every error status with OpenAI's error shape, the
small endpoints, stop strings (also streamed), logprobs, n, seed, echo,
chat_template_kwargs with --chat-template, greedy output against the
transformers golden continuations, and a server that keeps serving."""
import json
import os
import sys
import tempfile

import requests

sys.path.insert(0, os.path.dirname(__file__))
from serverlib import MODELS, Server, check, finish, sse_events  # noqa: E402


def err_ok(r, status, param=None, code=None):
    try:
        e = r.json()["error"]
    except Exception:
        return False
    ok = r.status_code == status and set(e) == {"message", "type", "param", "code"} and e["message"]
    ok = ok and e["type"] == ("server_error" if status >= 500 else "invalid_request_error")
    if param is not None:
        ok = ok and e["param"] == param
    if code is not None:
        ok = ok and e["code"] == code
    return ok


golden = json.load(open("tests/fixtures/model_golden/qwen3.json"))

with Server("qwen3", ["--max-request-bytes", "200000"]) as s:
    r = s.get("/health")
    check("/health 200 when ready", r.status_code == 200, r.text)
    m = s.get("/v1/models").json()
    check("/v1/models lists the served name", m["object"] == "list" and m["data"][0]["id"] == "tiny"
          and m["data"][0]["object"] == "model" and m["data"][0]["max_model_len"] == 1024, m)

    # Exactly what a SiliconFlow quick-start posts, base URL and model aside.
    body = {"model": "tiny", "messages": [{"role": "system", "content": "You are a helpful assistant."},
                                          {"role": "user", "content": "What opportunities and challenges will the Chinese large model industry face in 2025?"}],
            "stream": False, "max_tokens": 32, "stop": ["null"], "temperature": 0.7, "top_p": 0.7,
            "top_k": 50, "frequency_penalty": 0.5, "n": 1, "response_format": {"type": "text"}}
    r = s.post("/v1/chat/completions", body, headers={"Authorization": "Bearer whatever"})
    j = r.json()
    ch = j["choices"][0]
    check("SiliconFlow body: 200 chat.completion", r.status_code == 200 and j["object"] == "chat.completion"
          and j["id"].startswith("chatcmpl-") and j["model"] == "tiny", r.text[:300])
    check("message is assistant text, finish_reason stop|length", ch["message"]["role"] == "assistant"
          and isinstance(ch["message"]["content"], str) and ch["finish_reason"] in ("stop", "length"), ch)
    u = j["usage"]
    check("usage adds up, cached_tokens reported", u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]
          and 0 < u["completion_tokens"] <= 32 and "cached_tokens" in u["prompt_tokens_details"], u)

    # OpenAI quick-start (completions, legacy) with a list of prompts and n.
    r = s.post("/v1/completions", {"model": "tiny", "prompt": ["Say this is a test", "Hello"], "max_tokens": 7,
                                   "temperature": 0, "n": 2, "ignore_eos": True})
    j = r.json()
    check("completions: 2 prompts x n=2 -> 4 choices indexed 0..3", r.status_code == 200
          and [c["index"] for c in j["choices"]] == [0, 1, 2, 3] and j["object"] == "text_completion", r.text[:300])
    check("greedy n=2 choices agree", j["choices"][0]["text"] == j["choices"][1]["text"]
          and j["choices"][2]["text"] == j["choices"][3]["text"])
    check("max_tokens honoured with ignore_eos", j["usage"]["completion_tokens"] == 28, j["usage"])

    # Greedy through the whole stack equals transformers' greedy continuation.
    # A GPU server computes in bf16 (logprobs within 0.05 of the reference),
    # so there greedy must agree only up to the first step whose top-2 margin
    # is under 0.1; the CPU must agree on every step.
    gpu = "cuda" in os.environ.get("INFERD_SERVE_ARGS", "")
    for i, case in enumerate(golden["cases"]):
        n = len(case["greedy"])
        if gpu:
            n = next((k for k, m in enumerate(case["margins"]) if m < 0.1), n)
            case = dict(case, greedy=case["greedy"][:n])
            if n == 0:
                continue
        r = s.post("/v1/completions", {"prompt": case["prompt"], "max_tokens": n, "temperature": 0,
                                       "ignore_eos": True, "skip_special_tokens": False})
        want = s.post("/detokenize", {"tokens": case["greedy"]}).json()["prompt"]
        check(f"golden greedy case {i} through /v1/completions", r.json()["choices"][0]["text"] == want,
              (r.json()["choices"][0]["text"], want))

    # Tokenize / detokenize as vLLM has them.
    t = s.post("/tokenize", {"model": "tiny", "prompt": "Hello world"}).json()
    check("/tokenize counts and max_model_len", t["count"] == len(t["tokens"]) > 0 and t["max_model_len"] == 1024, t)
    d = s.post("/detokenize", {"model": "tiny", "tokens": t["tokens"]}).json()
    check("/detokenize round trip", d["prompt"] == "Hello world", d)
    tm = s.post("/tokenize", {"messages": [{"role": "user", "content": "hi"}], "return_token_strs": True}).json()
    text = s.post("/detokenize", {"tokens": tm["tokens"]}).json()["prompt"]
    check("/tokenize messages renders the chat template", text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
          and len(tm["token_strs"]) == tm["count"], text)
    tm2 = s.post("/tokenize", {"messages": [{"role": "user", "content": [{"type": "text", "text": "a"},
                                                                          {"type": "text", "text": "b"}]}],
                               "add_generation_prompt": False}).json()
    text = s.post("/detokenize", {"tokens": tm2["tokens"]}).json()["prompt"]
    check("content parts joined, add_generation_prompt false", text == "<|im_start|>user\na\nb<|im_end|>\n", text)

    # Stop strings: cut before the match, finish_reason stop, never streamed in part.
    base = {"prompt": "The quick brown fox", "max_tokens": 40, "temperature": 0, "ignore_eos": True}
    full = s.post("/v1/completions", base).json()["choices"][0]["text"]
    stop = full[10:14] if len(full) >= 14 else full[-3:]
    cut = full[:full.index(stop)]
    j = s.post("/v1/completions", dict(base, stop=[stop, "never-there"])).json()["choices"][0]
    check("stop string: text cut before it", j["text"] == cut and j["finish_reason"] == "stop"
          and j["stop_reason"] == stop, (full, stop, j))
    j = s.post("/v1/completions", dict(base, stop=stop, include_stop_str_in_output=True)).json()["choices"][0]
    check("include_stop_str_in_output keeps it", j["text"] == cut + stop, j)
    r = s.post("/v1/completions", dict(base, stop=[stop], stream=True), stream=True)
    ev = sse_events(r)
    pieces = [e["choices"][0]["text"] for e in ev[:-1] if e["choices"]]
    check("streamed stop: concatenation equals the non-streamed text", "".join(pieces) == cut
          and ev[-1] == "[DONE]" and ev[-2]["choices"][0]["finish_reason"] == "stop", (pieces, cut))
    leaked = any(stop[:k] in p and "".join(pieces).endswith(p) and p.endswith(stop[:k])
                 for p in pieces[-1:] for k in range(1, len(stop)) if not cut.endswith(stop[:k]))
    check("no partial stop string streamed", not leaked, pieces)
    r = s.post("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 30,
                                        "temperature": 0, "ignore_eos": True})
    ctext = r.json()["choices"][0]["message"]["content"]
    cstop = ctext[5:8]
    r = s.post("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 30,
                                        "temperature": 0, "ignore_eos": True, "stop": cstop, "stream": True},
               stream=True)
    ev = sse_events(r)
    deltas = "".join(e["choices"][0]["delta"].get("content", "") for e in ev[:-1] if e["choices"])
    check("chat stream: stop string cut", deltas == ctext[:ctext.index(cstop)], (ctext, cstop, deltas))

    # Seeds: same seed, same text; n > 1 with a seed gives distinct choices.
    sb = {"prompt": "Once upon a time", "max_tokens": 20, "temperature": 1.0, "seed": 1234, "ignore_eos": True, "n": 3}
    a = [c["text"] for c in s.post("/v1/completions", sb).json()["choices"]]
    b = [c["text"] for c in s.post("/v1/completions", sb).json()["choices"]]
    check("seed reproduces sampled text", a == b, (a, b))
    check("n=3 sampled choices differ", len(set(a)) > 1, a)

    # Logprobs in both schemas.
    j = s.post("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5,
                                        "logprobs": True, "top_logprobs": 3, "temperature": 0, "ignore_eos": True}).json()
    lc = j["choices"][0]["logprobs"]["content"]
    check("chat logprobs: one entry per token with 3 alternatives", len(lc) == 5 and all(
        len(x["top_logprobs"]) == 3 and x["logprob"] <= 0 and isinstance(x["bytes"], list) for x in lc), lc[:1])
    check("greedy token is the top alternative", all(x["top_logprobs"][0]["logprob"] == x["logprob"] for x in lc))
    j = s.post("/v1/completions", {"prompt": "Hello", "max_tokens": 4, "logprobs": 2, "echo": True,
                                   "temperature": 0, "ignore_eos": True}).json()["choices"][0]
    lp = j["logprobs"]
    n_prompt = s.post("/tokenize", {"prompt": "Hello"}).json()["count"]
    check("echo: prompt text first, prompt logprobs first (null at 0)", j["text"].startswith("Hello")
          and len(lp["tokens"]) == n_prompt + 4 and lp["token_logprobs"][0] is None
          and lp["text_offset"][0] == 0 and lp["text_offset"] == sorted(lp["text_offset"]), lp)

    # Errors: status, OpenAI shape, named param; the server keeps serving.
    chat = "/v1/chat/completions"
    msgs = [{"role": "user", "content": "hi"}]
    r = requests.post(s.url + chat, data=b"{not json", timeout=30)
    check("bad JSON -> 400", err_ok(r, 400), r.text)
    r = requests.post(s.url + chat, data=b"[1, 2]", timeout=30)
    check("JSON that is not an object -> 400", err_ok(r, 400), r.text)
    r = s.post(chat, {"messages": msgs, "temperature": "hot"})
    check("wrong type -> 400 naming the field", err_ok(r, 400, "temperature"), r.text)
    r = s.post(chat, {"messages": msgs, "max_tokens": -5})
    check("out of range -> 400 naming the field", err_ok(r, 400, "max_tokens"), r.text)
    r = s.post(chat, {"messages": msgs, "frobnicate": 1})
    check("unknown field -> 400 naming it", err_ok(r, 400, "frobnicate"), r.text)
    r = s.post(chat, {"messages": msgs, "tools": [{"type": "function", "function": {"name": "f"}}]})
    check("tools -> clear 400", err_ok(r, 400, "tools") and "not supported" in r.json()["error"]["message"], r.text)
    r = s.post(chat, {"messages": msgs, "response_format": {"type": "json_schema", "json_schema": {}}})
    check("response_format json_schema -> 400", err_ok(r, 400, "response_format"), r.text)
    r = s.post(chat, {"messages": []})
    check("empty messages -> 400", err_ok(r, 400, "messages"), r.text)
    r = s.post(chat, {"messages": [{"role": "wizard", "content": "x"}]})
    check("bad role -> 400", err_ok(r, 400, "messages[0].role"), r.text)
    r = s.post(chat, {"messages": msgs, "stream_options": {"include_usage": True}})
    check("stream_options without stream -> 400", err_ok(r, 400, "stream_options"), r.text)
    r = s.post(chat, {"messages": msgs, "top_logprobs": 2})
    check("top_logprobs without logprobs -> 400", err_ok(r, 400, "top_logprobs"), r.text)
    r = s.post(chat, {"model": "gpt-4o", "messages": msgs})
    check("unknown model -> 404 model_not_found", err_ok(r, 404, "model", "model_not_found"), r.text)
    r = s.get("/v1/nothing-here")
    check("unknown route -> 404", err_ok(r, 404), r.text)
    r = s.get(chat)
    check("wrong method -> 405", err_ok(r, 405), r.text)
    r = s.post("/v1/completions", {"prompt": [3 + i % 500 for i in range(1100)], "max_tokens": 1})
    check("prompt longer than the context -> 400 with the numbers", err_ok(r, 400, "prompt")
          and "1024" in r.json()["error"]["message"] and "1100" in r.json()["error"]["message"], r.text)
    r = s.post("/v1/completions", {"prompt": list(range(3, 103)), "max_tokens": 1000})
    check("prompt + max_tokens over the context -> 400 with the numbers", err_ok(r, 400)
          and "1100 tokens (100 in the prompt, 1000 in the completion)" in r.json()["error"]["message"], r.text)
    r = s.post("/v1/completions", {"prompt": [5, 99999]})
    check("token id out of range -> 400", err_ok(r, 400, "prompt"), r.text)
    r = s.post("/v1/completions", {"prompt": "x", "logit_bias": {"abc": 3}})
    check("bad logit_bias -> 400", err_ok(r, 400, "logit_bias"), r.text)
    r = requests.post(s.url + "/v1/completions", data=b'{"prompt": "' + b"a" * 250000 + b'"}', timeout=30)
    check("body over --max-request-bytes -> 413", err_ok(r, 413), r.text[:200])
    r = s.post("/v1/completions", {"prompt": "x", "echo": True, "logprobs": 1, "stream": True})
    check("echo + logprobs + stream -> 400 (not silently partial)", err_ok(r, 400, "echo"), r.text)
    r = s.post("/detokenize", {"tokens": [1, -1]})
    check("/detokenize bad id -> 400", err_ok(r, 400, "tokens"), r.text)
    r = s.post("/v1/completions", {"prompt": "still here", "max_tokens": 3})
    check("the server keeps serving after errors", r.status_code == 200, r.text)
    check("access log has one line per request", s.stderr().count('"POST /v1/completions"') >= 10)

# API key: 401 without or with a wrong key (constant-time compare), /health open.
with Server("qwen3", env={"INFERD_API_KEY": "sekret-123"}) as s:
    msgs = [{"role": "user", "content": "hi"}]
    r = s.post("/v1/chat/completions", {"messages": msgs, "max_tokens": 2})
    check("no key -> 401 invalid_api_key", err_ok(r, 401, None, "invalid_api_key"), r.text)
    r = s.post("/v1/chat/completions", {"messages": msgs, "max_tokens": 2}, headers={"Authorization": "Bearer sekret-12"})
    check("wrong key -> 401", err_ok(r, 401), r.text)
    r = s.post("/v1/chat/completions", {"messages": msgs, "max_tokens": 2}, headers={"Authorization": "Bearer sekret-123"})
    check("right key (from $INFERD_API_KEY) -> 200", r.status_code == 200, r.text)
    r = s.get("/v1/models")
    check("/v1/models needs the key", r.status_code == 401)
    check("/health needs no key", s.get("/health").status_code == 200)

# --max-queue: live requests beyond max-num-seqs + max-queue get 503 + Retry-After.
with Server("qwen3", ["--max-num-seqs", "1", "--max-queue", "1"]) as s:
    held = [s.post("/v1/completions", {"prompt": "x", "max_tokens": 900, "ignore_eos": True, "stream": True},
                   stream=True) for _ in range(2)]
    r = s.post("/v1/completions", {"prompt": "x", "max_tokens": 5})
    check("queue full -> 503 with Retry-After", err_ok(r, 503) and r.headers.get("Retry-After") == "1", r.text)
    for h in held:
        h.close()

# --chat-template FILE and chat_template_kwargs reach the template.
with tempfile.NamedTemporaryFile("w", suffix=".jinja", delete=False) as f:
    f.write("{{ greeting | default('none') }}:{% for m in messages %}{{ m['content'] }}{% endfor %}")
with Server("qwen3", ["--chat-template", f.name]) as s:
    t = s.post("/tokenize", {"messages": [{"role": "user", "content": "abc"}],
                             "chat_template_kwargs": {"greeting": "Hey"}}).json()
    text = s.post("/detokenize", {"tokens": t["tokens"]}).json()["prompt"]
    check("--chat-template + chat_template_kwargs", text == "Hey:abc", text)
    r = s.post("/v1/chat/completions", {"messages": [{"role": "user", "content": "abc"}], "max_tokens": 3,
                                        "chat_template_kwargs": {"greeting": "Yo"}})
    check("chat completion with kwargs", r.status_code == 200 and r.json()["usage"]["prompt_tokens"] ==
          s.post("/tokenize", {"messages": [{"role": "user", "content": "abc"}],
                               "chat_template_kwargs": {"greeting": "Yo"}}).json()["count"], r.text)
os.unlink(f.name)

finish()
