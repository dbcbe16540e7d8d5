#!/usr/bin/env python3
"""Sends the same HTTP requests to two inferd builds and diffs what comes
back: status, Content-Type, Retry-After and every body byte, after masking
what differs between any two runs (response ids, "created" timestamps, and
the timing values of /metrics). For a change that must not change the API's
behaviour (a refactor of api/ or server/): run it before merging.

  tools/api_diff.py OLD_INFERD NEW_INFERD [--model DIR] [--encoder DIR ...]
                    [--keep DIR] [--only NAME-SUBSTRING]

Each build serves the model in turn (never both at once: the two would
share the cores and their timings), on a port the kernel picks. The
requests are fixed (greedy or seeded sampling), sent one at a time:
chat and completions, streamed and whole, logprobs, stop strings, echo, the
error cases of request validation, /v1/models, /health, /metrics,
/tokenize, /detokenize, and the encoder routes (on the causal model: their
400; with --encoder: embeddings, score, rerank, classify). A streamed body
that differs only in where the chunks fall (two tokens ready at once ride in
one chunk, and the chunks of n > 1 choices interleave as the engine thread
happens to run) is reported as "same after merging"; that is no difference.
--keep DIR writes each build's normalized answers there, one file each.
Exit status 0 when every answer is the same and every server, stopped with
SIGTERM, exited with status 0 (so a sanitizer build's reports count)."""
import argparse
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

DEMO = "models/demo"
ENCODERS = ["tests/fixtures/encoder/models/bert_cls_bin", "tests/fixtures/encoder/models/xlmr_st"]
LONG = "m" * 250  # longer than the %.200s of error messages


def causal_requests(model):
    """(name, method, path, body): body a dict (sent as JSON), bytes (sent as
    is) or None."""
    chat = "/v1/chat/completions"
    cmpl = "/v1/completions"
    msgs = [{"role": "user", "content": "写一首关于春天的诗"}]
    g = {"model": model, "temperature": 0}
    R = [
        ("health", "GET", "/health", None),
        ("models", "GET", "/v1/models", None),
        ("metrics-start", "GET", "/metrics", None),
        ("no-route", "GET", "/v1/nothing", None),
        ("no-route-post", "POST", "/v2/chat/completions", {}),
        ("query-string", "GET", "/v1/models?x=1", None),
        ("wrong-method-get", "GET", chat, None),
        ("wrong-method-post", "POST", "/v1/models", {}),
        ("wrong-method-put", "PUT", "/metrics", None),
        ("wrong-method-delete", "DELETE", "/tokenize", None),
        # chat
        ("chat-greedy", "POST", chat, {**g, "messages": msgs, "max_tokens": 24}),
        ("chat-no-model", "POST", chat, {"messages": msgs, "max_tokens": 8, "temperature": 0}),
        ("chat-null-model", "POST", chat, {"model": None, "messages": msgs, "max_tokens": 8,
                                           "temperature": 0}),
        ("chat-seeded-n2", "POST", chat, {"model": model, "messages": msgs, "max_tokens": 16,
                                          "temperature": 0.8, "top_p": 0.9, "seed": 7, "n": 2}),
        ("chat-topk-minp", "POST", chat, {"model": model, "messages": msgs, "max_tokens": 12,
                                          "temperature": 1.0, "top_k": 5, "min_p": 0.05,
                                          "seed": 11}),
        ("chat-penalties", "POST", chat, {**g, "messages": msgs, "max_tokens": 16,
                                          "presence_penalty": 0.5, "frequency_penalty": 0.5,
                                          "repetition_penalty": 1.2}),
        ("chat-logprobs", "POST", chat, {**g, "messages": msgs, "max_tokens": 6,
                                         "logprobs": True, "top_logprobs": 3}),
        ("chat-logprobs-ids", "POST", chat, {**g, "messages": msgs, "max_tokens": 4,
                                             "logprobs": True, "top_logprobs": 2,
                                             "return_tokens_as_token_ids": True}),
        ("chat-stop", "POST", chat, {**g, "messages": msgs, "max_tokens": 40, "stop": ["，", "。"]}),
        ("chat-stop-include", "POST", chat, {**g, "messages": msgs, "max_tokens": 40,
                                             "stop": "。", "include_stop_str_in_output": True}),
        ("chat-stop-ids", "POST", chat, {**g, "messages": msgs, "max_tokens": 40,
                                         "stop_token_ids": [5, 6, 7, 8, 9, 10]}),
        ("chat-logit-bias", "POST", chat, {**g, "messages": msgs, "max_tokens": 8,
                                           "logit_bias": {"100": 100, "5": -100}}),
        ("chat-max-completion", "POST", chat, {**g, "messages": msgs,
                                               "max_completion_tokens": 5}),
        ("chat-min-tokens-ignore-eos", "POST", chat, {**g, "messages": msgs, "max_tokens": 10,
                                                      "min_tokens": 10, "ignore_eos": True}),
        ("chat-parts", "POST", chat, {**g, "max_tokens": 6, "messages": [
            {"role": "system", "content": "你是诗人"},
            {"role": "user", "content": [{"type": "text", "text": "题目："},
                                         {"type": "text", "text": "静夜思"}]}]}),
        ("chat-multi-turn", "POST", chat, {**g, "max_tokens": 6, "messages": [
            {"role": "user", "content": "你好"}, {"role": "assistant", "content": None},
            {"role": "user", "content": "再见"}]}),
        ("chat-no-gen-prompt", "POST", chat, {**g, "messages": msgs, "max_tokens": 6,
                                              "add_generation_prompt": False}),
        ("chat-kwargs", "POST", chat, {**g, "messages": msgs, "max_tokens": 6,
                                       "chat_template_kwargs": {"enable_thinking": False}}),
        ("chat-special", "POST", chat, {**g, "messages": msgs, "max_tokens": 6,
                                        "skip_special_tokens": False, "add_special_tokens": True}),
        ("chat-inert", "POST", chat, {**g, "messages": msgs, "max_tokens": 4, "user": "u",
                                      "metadata": {"a": "b"}, "store": False, "tools": [],
                                      "tool_choice": "none", "response_format": {"type": "text"},
                                      "modalities": ["text"], "parallel_tool_calls": False}),
        ("chat-whole-context", "POST", chat, {**g, "messages": msgs, "stop": "。"}),
        # chat, streamed
        ("chat-stream", "POST", chat, {**g, "messages": msgs, "max_tokens": 12, "stream": True}),
        ("chat-stream-usage", "POST", chat, {**g, "messages": msgs, "max_tokens": 8,
                                             "stream": True,
                                             "stream_options": {"include_usage": True}}),
        ("chat-stream-n2-logprobs", "POST", chat, {"model": model, "messages": msgs,
                                                   "max_tokens": 6, "stream": True, "n": 2,
                                                   "seed": 3, "temperature": 0.7,
                                                   "logprobs": True, "top_logprobs": 2}),
        ("chat-stream-stop", "POST", chat, {**g, "messages": msgs, "max_tokens": 40,
                                            "stream": True, "stop": ["。"]}),
        # completions
        ("cmpl-default-len", "POST", cmpl, {**g, "prompt": "春眠不觉晓，"}),
        ("cmpl-greedy", "POST", cmpl, {**g, "prompt": "春眠不觉晓，", "max_tokens": 20}),
        ("cmpl-list", "POST", cmpl, {**g, "prompt": ["床前明月光，", "白日依山尽，"], "max_tokens": 8}),
        ("cmpl-ids", "POST", cmpl, {**g, "prompt": [100, 200, 300, 400], "max_tokens": 8}),
        ("cmpl-ids-list", "POST", cmpl, {**g, "prompt": [[100, 200], [300, 400, 500]],
                                         "max_tokens": 4}),
        ("cmpl-n3-best-of", "POST", cmpl, {"model": model, "prompt": "春", "max_tokens": 6,
                                           "n": 3, "best_of": 3, "seed": 5, "temperature": 1}),
        ("cmpl-echo", "POST", cmpl, {**g, "prompt": "春眠不觉晓，", "max_tokens": 6, "echo": True}),
        ("cmpl-echo-logprobs", "POST", cmpl, {**g, "prompt": "春眠不觉晓，", "max_tokens": 4,
                                              "echo": True, "logprobs": 2}),
        ("cmpl-echo-logprobs-0", "POST", cmpl, {**g, "prompt": "春眠不觉晓，", "max_tokens": 0,
                                                "echo": True, "logprobs": 0}),
        ("cmpl-echo-ids", "POST", cmpl, {**g, "prompt": [100, 200, 300], "max_tokens": 3,
                                         "echo": True, "logprobs": 1}),
        ("cmpl-logprobs", "POST", cmpl, {**g, "prompt": "白日依山尽，", "max_tokens": 5,
                                         "logprobs": 3}),
        ("cmpl-logprobs-ids", "POST", cmpl, {**g, "prompt": "白日", "max_tokens": 3,
                                             "logprobs": 1, "return_tokens_as_token_ids": True}),
        ("cmpl-stop", "POST", cmpl, {**g, "prompt": "春眠不觉晓，", "max_tokens": 40,
                                     "stop": ["。", "，"]}),
        ("cmpl-no-special", "POST", cmpl, {**g, "prompt": "春", "max_tokens": 4,
                                           "add_special_tokens": False}),
        # completions, streamed
        ("cmpl-stream", "POST", cmpl, {**g, "prompt": "春眠不觉晓，", "max_tokens": 12,
                                       "stream": True}),
        ("cmpl-stream-echo-usage", "POST", cmpl, {**g, "prompt": "春眠不觉晓，", "max_tokens": 6,
                                                  "stream": True, "echo": True,
                                                  "stream_options": {"include_usage": True}}),
        ("cmpl-stream-logprobs", "POST", cmpl, {**g, "prompt": "春眠", "max_tokens": 5,
                                                "stream": True, "logprobs": 2}),
        ("cmpl-stream-list-stop", "POST", cmpl, {**g, "prompt": ["床前明月光，", "白日依山尽，"],
                                                 "max_tokens": 30, "stream": True, "stop": "。"}),
        # request validation
        ("bad-json", "POST", chat, b'{"model": '),
        ("bad-json-garbage", "POST", cmpl, b"hello"),
        ("empty-body", "POST", chat, b""),
        ("array-body", "POST", chat, b"[1, 2]"),
        ("string-body", "POST", "/tokenize", b'"x"'),
        ("unknown-model", "POST", chat, {"model": "gpt-4", "messages": msgs}),
        ("unknown-model-long", "POST", cmpl, {"model": LONG, "prompt": "x"}),
        ("model-not-string", "POST", chat, {"model": 3, "messages": msgs}),
        ("unknown-field", "POST", chat, {**g, "messages": msgs, "foo": 1}),
        ("refused-field", "POST", chat, {**g, "messages": msgs, "functions": []}),
        ("refused-field-cmpl", "POST", cmpl, {**g, "prompt": "x", "guided_json": {}}),
        ("chat-echo", "POST", chat, {**g, "messages": msgs, "echo": True}),
        ("tools", "POST", chat, {**g, "messages": msgs, "tools": [{"type": "function"}]}),
        ("tool-choice", "POST", chat, {**g, "messages": msgs, "tool_choice": "required"}),
        ("response-format", "POST", chat, {**g, "messages": msgs,
                                           "response_format": {"type": "json_object"}}),
        ("modalities", "POST", chat, {**g, "messages": msgs, "modalities": ["audio"]}),
        ("modalities-type", "POST", chat, {**g, "messages": msgs, "modalities": "text"}),
        ("store", "POST", chat, {**g, "messages": msgs, "store": True}),
        ("suffix", "POST", cmpl, {**g, "prompt": "x", "suffix": "y"}),
        ("n-zero", "POST", chat, {**g, "messages": msgs, "n": 0}),
        ("n-real", "POST", chat, {**g, "messages": msgs, "n": 1.5}),
        ("n-real-int", "POST", chat, {**g, "messages": msgs, "n": 1.0, "max_tokens": 2}),
        ("temperature-neg", "POST", chat, {"model": model, "messages": msgs, "temperature": -1}),
        ("top-p-string", "POST", chat, {**g, "messages": msgs, "top_p": "a"}),
        ("top-p-zero", "POST", chat, {**g, "messages": msgs, "top_p": 0}),
        ("seed-real", "POST", chat, {**g, "messages": msgs, "seed": 1.5}),
        ("stream-string", "POST", chat, {**g, "messages": msgs, "stream": "yes"}),
        ("stream-options-no-stream", "POST", chat, {**g, "messages": msgs,
                                                    "stream_options": {"include_usage": True}}),
        ("stream-options-type", "POST", chat, {**g, "messages": msgs, "stream": True,
                                               "stream_options": 1}),
        ("stream-options-unknown", "POST", chat, {**g, "messages": msgs, "stream": True,
                                                  "stream_options": {"x": 1}}),
        ("stop-type", "POST", chat, {**g, "messages": msgs, "stop": 3}),
        ("stop-empty", "POST", chat, {**g, "messages": msgs, "stop": [""]}),
        ("stop-many", "POST", chat, {**g, "messages": msgs, "stop": [str(i) for i in range(20)]}),
        ("stop-ids-bad", "POST", chat, {**g, "messages": msgs, "stop_token_ids": [99999]}),
        ("logit-bias-key", "POST", chat, {**g, "messages": msgs, "logit_bias": {"x": 1}}),
        ("logit-bias-value", "POST", chat, {**g, "messages": msgs, "logit_bias": {"1": 500}}),
        ("logit-bias-type", "POST", chat, {**g, "messages": msgs, "logit_bias": [1]}),
        ("top-logprobs-alone", "POST", chat, {**g, "messages": msgs, "top_logprobs": 2}),
        ("top-logprobs-big", "POST", chat, {**g, "messages": msgs, "logprobs": True,
                                            "top_logprobs": 50}),
        ("logprobs-cmpl-bool", "POST", cmpl, {**g, "prompt": "x", "logprobs": True}),
        ("max-tokens-big", "POST", chat, {**g, "messages": msgs, "max_tokens": 5000}),
        ("max-tokens-zero", "POST", chat, {**g, "messages": msgs, "max_tokens": 0}),
        ("max-tokens-neg", "POST", chat, {**g, "messages": msgs, "max_tokens": -1}),
        ("prompt-too-long", "POST", cmpl, {**g, "prompt": [5] * 1100}),
        ("prompt-missing", "POST", cmpl, {**g}),
        ("prompt-empty-string", "POST", cmpl, {**g, "prompt": ""}),
        ("prompt-empty-list", "POST", cmpl, {**g, "prompt": []}),
        ("prompt-bad-id", "POST", cmpl, {**g, "prompt": [1, 99999]}),
        ("prompt-bad-item", "POST", cmpl, {**g, "prompt": ["a", 3.5]}),
        ("prompt-nested-empty", "POST", cmpl, {**g, "prompt": [[]]}),
        ("prompts-too-many", "POST", cmpl, {**g, "prompt": ["a"] * 129}),
        ("prompts-times-n", "POST", cmpl, {**g, "prompt": ["a"] * 65, "n": 2}),
        ("best-of-n", "POST", cmpl, {**g, "prompt": "x", "best_of": 2}),
        ("echo-logprobs-stream", "POST", cmpl, {**g, "prompt": "x", "echo": True, "logprobs": 1,
                                                "stream": True}),
        ("messages-missing", "POST", chat, {**g}),
        ("messages-empty", "POST", chat, {**g, "messages": []}),
        ("messages-role", "POST", chat, {**g, "messages": [{"role": "robot", "content": "x"}]}),
        ("messages-not-object", "POST", chat, {**g, "messages": ["x"]}),
        ("messages-tool-calls", "POST", chat, {**g, "messages": [
            {"role": "assistant", "content": "x", "tool_calls": [{"id": "1"}]}]}),
        ("messages-image", "POST", chat, {**g, "messages": [
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}),
        ("messages-content-type", "POST", chat, {**g, "messages": [{"role": "user",
                                                                    "content": 3}]}),
        ("messages-null-user", "POST", chat, {**g, "messages": [{"role": "user",
                                                                 "content": None}]}),
        ("agp-type", "POST", chat, {**g, "messages": msgs, "add_generation_prompt": 1}),
        ("kwargs-type", "POST", chat, {**g, "messages": msgs, "chat_template_kwargs": [1]}),
        ("bad-utf8-message", "POST", chat, b'{"messages": [{"role": "user", "content": "\\ud800"}]}'),
        # the small endpoints
        ("tokenize-prompt", "POST", "/tokenize", {"model": model, "prompt": "春眠不觉晓"}),
        ("tokenize-strs", "POST", "/tokenize", {"prompt": "春眠 abc", "return_token_strs": True,
                                                "add_special_tokens": False}),
        ("tokenize-messages", "POST", "/tokenize", {"messages": msgs}),
        ("tokenize-messages-special", "POST", "/tokenize", {"messages": msgs,
                                                            "add_special_tokens": True,
                                                            "return_token_strs": True}),
        ("tokenize-bad-messages", "POST", "/tokenize", {"messages": [{"role": "x"}]}),
        ("tokenize-missing", "POST", "/tokenize", {}),
        ("tokenize-bool", "POST", "/tokenize", {"prompt": "x", "add_special_tokens": 1}),
        ("tokenize-strs-bool", "POST", "/tokenize", {"prompt": "x", "return_token_strs": "y"}),
        ("tokenize-model", "POST", "/tokenize", {"model": "other", "prompt": "x"}),
        ("tokenize-model-type", "POST", "/tokenize", {"model": [], "prompt": "x"}),
        ("detokenize", "POST", "/detokenize", {"model": model, "tokens": [100, 200, 300]}),
        ("detokenize-partial", "POST", "/detokenize", {"tokens": list(range(3, 40))}),
        ("detokenize-half-chars", "POST", "/detokenize", {"tokens": [552, 234, 330]}),
        ("detokenize-empty", "POST", "/detokenize", {"tokens": []}),
        ("detokenize-bad-id", "POST", "/detokenize", {"tokens": [1, -1]}),
        ("detokenize-big-id", "POST", "/detokenize", {"tokens": [1, 8192]}),
        ("detokenize-not-array", "POST", "/detokenize", {"tokens": "x"}),
        ("detokenize-model", "POST", "/detokenize", {"model": LONG, "tokens": [1]}),
        ("embeddings-on-causal", "POST", "/v1/embeddings", {"input": "x"}),
        ("score-on-causal", "POST", "/v1/score", {"text_1": "a", "text_2": "b"}),
        ("rerank-on-causal", "POST", "/v1/rerank", {"query": "a", "documents": ["b"]}),
        ("classify-on-causal", "POST", "/classify", {"input": "x"}),
        ("embeddings-bad-json", "POST", "/v1/embeddings", b"{"),
        ("metrics-end", "GET", "/metrics", None),
    ]
    return R


def encoder_requests(model):
    ids = [[2, 100, 200, 3], [2, 150, 3]]
    R = [
        ("enc-models", "GET", "/v1/models", None),
        ("enc-embeddings-text", "POST", "/v1/embeddings", {"model": model, "input": "今天天气很好"}),
        ("enc-embeddings-ids", "POST", "/v1/embeddings", {"input": ids}),
        ("enc-embeddings-one-ids", "POST", "/v1/embeddings", {"input": ids[0]}),
        ("enc-embeddings-b64", "POST", "/v1/embeddings", {"input": ids, "encoding_format": "base64"}),
        ("enc-embeddings-format", "POST", "/v1/embeddings", {"input": ids, "encoding_format": "x"}),
        ("enc-embeddings-dims", "POST", "/v1/embeddings", {"input": ids, "dimensions": 3}),
        ("enc-embeddings-missing", "POST", "/v1/embeddings", {}),
        ("enc-embeddings-empty", "POST", "/v1/embeddings", {"input": [""]}),
        ("enc-embeddings-trunc", "POST", "/v1/embeddings", {"input": ids, "truncate_prompt_tokens": 2}),
        ("enc-embeddings-trunc-bad", "POST", "/v1/embeddings", {"input": ids,
                                                                "truncate_prompt_tokens": 0}),
        ("enc-embeddings-long", "POST", "/v1/embeddings", {"input": [[5] * 5000]}),
        ("enc-embeddings-bad-id", "POST", "/v1/embeddings", {"input": [[5, 10 ** 7]]}),
        ("enc-embeddings-model", "POST", "/v1/embeddings", {"model": LONG, "input": "x"}),
        ("enc-score", "POST", "/v1/score", {"text_1": "今天天气很好", "text_2": ["今天是个好天气", "x"]}),
        ("enc-score-ids", "POST", "/v1/score", {"text_1": ids, "text_2": ids}),
        ("enc-score-missing", "POST", "/v1/score", {"text_1": "a"}),
        ("enc-score-count", "POST", "/v1/score", {"text_1": ids, "text_2": [ids[0]]}),
        ("enc-score-queries", "POST", "/v1/score", {"queries": "a", "documents": ["b", "c"]}),
        ("enc-rerank", "POST", "/v1/rerank", {"query": "今天天气很好",
                                              "documents": ["今天是个好天气", {"text": "x"}, "y"],
                                              "top_n": 2}),
        ("enc-rerank-no-docs", "POST", "/v1/rerank", {"query": "a", "documents": ["b"],
                                                      "return_documents": False}),
        ("enc-rerank-bad-topn", "POST", "/v1/rerank", {"query": "a", "documents": ["b"],
                                                       "top_n": 0}),
        ("enc-rerank-bad-rd", "POST", "/v1/rerank", {"query": "a", "documents": ["b"],
                                                     "return_documents": 1}),
        ("enc-rerank-missing", "POST", "/v1/rerank", {"query": "a"}),
        ("enc-classify", "POST", "/classify", {"input": ["今天天气很好", "x"]}),
        ("enc-chat", "POST", "/v1/chat/completions", {"messages": [{"role": "user",
                                                                    "content": "x"}]}),
        ("enc-completions", "POST", "/v1/completions", {"prompt": "x"}),
        ("enc-tokenize", "POST", "/tokenize", {"prompt": "今天"}),
        ("enc-detokenize", "POST", "/detokenize", {"tokens": [2, 100, 3]}),
        ("enc-health", "GET", "/health", None),
        ("enc-metrics", "GET", "/metrics", None),
    ]
    return R


def start(binary, model_dir):
    log = tempfile.NamedTemporaryFile(prefix="api-diff-", suffix=".log", delete=False)
    LOGS[binary] = log.name
    p = subprocess.Popen([binary, "serve", model_dir, "--host", "127.0.0.1", "--port", "0",
                          "--threads", "1", "--kv-cache-memory", "64MiB"],
                         stdout=subprocess.PIPE, stderr=log, text=True)
    line = p.stdout.readline()
    m = re.search(r"listening on http://[^ ]*:(\d+)", line)
    if not m:
        p.wait(10)
        sys.exit(f"{binary} did not start: {line!r}; see {log.name}")
    port = int(m.group(1))
    for _ in range(1200):   # ready when /health answers 200
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("GET", "/health")
            if c.getresponse().status == 200:
                return p, port
        except OSError:
            pass
        time.sleep(0.1)
    p.kill()
    sys.exit(f"{binary} did not become ready; see {log.name}")


def stop(p):
    """SIGTERM, as a user stops the server; a server that does not then exit
    with status 0 (a crash, a sanitizer's report at exit) is a failure."""
    p.send_signal(signal.SIGTERM)
    try:
        rc = p.wait(60)
    except subprocess.TimeoutExpired:
        p.kill()
        rc = "killed after 60 s"
    if rc != 0:
        BAD_EXITS.append(f"{p.args[0]} {p.args[2]}: exit status {rc}, see {LOGS[p.args[0]]}")


LOGS = {}       # binary -> its latest server log
BAD_EXITS = []


def send(port, method, path, body):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    headers = {}
    if body is not None:
        body = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    c.request(method, path, body=body, headers=headers)
    r = c.getresponse()
    data = r.read()
    c.close()
    return {"status": r.status, "content_type": r.getheader("Content-Type"),
            "retry_after": r.getheader("Retry-After"), "body": data.decode("utf-8", "replace")}


ID = re.compile(r'"id":"(chatcmpl|cmpl|score|rerank|classify)-[0-9a-f]+"')
CREATED = re.compile(r'"created":\d+')
# Metrics whose values are clocks (their value, buckets and sums vary by
# run), and the count of forward passes: the n choices of one request join
# the batch in one step or in two, as the engine thread happens to wake.
TIMED = re.compile(r"^(inferd:([a-z0-9_]*(seconds|latency)[a-z0-9_]*|engine_steps_total))"
                   r"(\{[^}]*\})? .*$")


def normalize(name, ans):
    b = ans["body"]
    b = ID.sub(lambda m: f'"id":"{m.group(1)}-X"', b)
    b = CREATED.sub('"created":0', b)
    if "metrics" in name:
        out = []
        for line in b.split("\n"):
            m = TIMED.match(line)
            if m and not m.group(1).endswith("_count"):
                line = f"{m.group(1)}{m.group(4) or ''} <varies>"
            out.append(line)
        b = "\n".join(out)
    return {**ans, "body": b}


def merged(body):
    """A stream with its chunks of one choice merged: the text, logprobs and
    finish of each choice, the usage and the [DONE], in order of first
    appearance. Equal for two streams that differ only in chunking."""
    choices, other = {}, []
    for ev in body.split("\n\n"):
        if not ev.startswith("data: "):
            other.append(ev)
            continue
        d = ev[6:]
        if d == "[DONE]":
            other.append(d)
            continue
        j = json.loads(d)
        if "error" in j or not j.get("choices"):
            other.append(json.dumps(j, sort_keys=True))
            continue
        for ch in j["choices"]:
            c = choices.setdefault(ch["index"], {"text": "", "lp": {}, "ends": []})
            c["text"] += ch.get("text") or (ch.get("delta") or {}).get("content") or ""
            lp = ch.get("logprobs") or {}
            for k in lp:   # chat: content; completions: tokens, token_logprobs ...
                c["lp"].setdefault(k, []).extend(lp[k] or [])
            if ch.get("finish_reason") or ch.get("stop_reason") is not None:
                c["ends"].append([ch.get("finish_reason"), ch.get("stop_reason")])
        shell = {k: v for k, v in j.items() if k != "choices"}
        if json.dumps(shell, sort_keys=True) not in other:
            other.append(json.dumps(shell, sort_keys=True))
    return json.dumps({"choices": choices, "other": other}, sort_keys=True, ensure_ascii=False)


def run_build(binary, model_dir, reqs):
    p, port = start(binary, model_dir)
    try:
        return {name: normalize(name, send(port, m, path, body)) for name, m, path, body in reqs}
    finally:
        stop(p)


def model_id(binary, model_dir):
    p, port = start(binary, model_dir)
    try:
        return json.loads(send(port, "GET", "/v1/models", None)["body"])["data"][0]["id"]
    finally:
        stop(p)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--model", default=DEMO)
    ap.add_argument("--encoder", action="append", help="an encoder model folder (repeatable; "
                    "default: two of tests/fixtures/encoder/models)")
    ap.add_argument("--no-encoder", action="store_true")
    ap.add_argument("--keep", help="write each build's normalized answers to this folder")
    ap.add_argument("--only", help="only requests whose name contains this")
    args = ap.parse_args()
    suites = [(args.model, causal_requests)]
    if not args.no_encoder:
        suites += [(d, encoder_requests) for d in (args.encoder or ENCODERS) if os.path.isdir(d)]
    same = merged_same = differ = 0
    for model_dir, make in suites:
        mid = model_id(args.old, model_dir)
        reqs = [r for r in make(mid) if not args.only or args.only in r[0]]
        old = run_build(args.old, model_dir, reqs)
        new = run_build(args.new, model_dir, reqs)
        if args.keep:
            os.makedirs(args.keep, exist_ok=True)
            tag = os.path.basename(model_dir.rstrip("/"))
            for which, ans in (("old", old), ("new", new)):
                with open(os.path.join(args.keep, f"{tag}.{which}.json"), "w") as f:
                    json.dump(ans, f, indent=1, ensure_ascii=False)
        for name, _, _, _ in reqs:
            a, b = old[name], new[name]
            if a == b:
                same += 1
                continue
            head_same = all(a[k] == b[k] for k in ("status", "content_type", "retry_after"))
            if head_same and a["content_type"].startswith("text/event-stream") and \
                    merged(a["body"]) == merged(b["body"]):
                merged_same += 1
                print(f"same after merging chunks: {model_dir} {name}")
                continue
            differ += 1
            print(f"DIFFERENT: {model_dir} {name}")
            for k in ("status", "content_type", "retry_after", "body"):
                if a[k] != b[k]:
                    print(f"  {k}:\n    old: {str(a[k])[:1500]!r}\n    new: {str(b[k])[:1500]!r}")
            if head_same and a["content_type"].startswith("text/event-stream"):
                print(f"  merged:\n    old: {merged(a['body'])[:1500]}\n"
                      f"    new: {merged(b['body'])[:1500]}")
        print(f"{model_dir}: {len(reqs)} requests")
    for b in BAD_EXITS:
        print(f"BAD EXIT: {b}")
    print(f"\n{same} byte-identical, {merged_same} same after merging stream chunks, "
          f"{differ} different")
    return 1 if differ or BAD_EXITS else 0


if __name__ == "__main__":
    sys.exit(main())
