#!/usr/bin/env python3
"""Runs two inferd binaries on the same inputs and says whether every output is
bitwise the same: the check that a refactor changed no behaviour.

  tools/compare_builds.py OLD_INFERD NEW_INFERD [--device cpu|cuda] [--quick]

What it runs with each binary (same flags, same seeds):
  - `inferd generate --json` on every golden prompt of tests/fixtures/model_golden
    and on models/demo, whole-prompt and chunked prefill (--prefill-chunk 3), in
    float32 and bfloat16 matmul precision: token ids and the top-10 logprobs,
    printed with all their digits;
  - `inferd perplexity --json` on models/demo over the demo's own conversations;
  - `inferd embed` on every encoder fixture (tests/fixtures/encoder), each pooling;
  - a serving run: `inferd serve models/demo` (and an encoder) on a free loopback
    port, then a fixed list of requests — greedy and seeded sampling, n > 1,
    logprobs, streaming, 12 at once so they are batched, and the errors a client
    can cause — whose bodies are compared with ids and timestamps blanked.

Python's standard library only, so it runs on the GPU machine too. Exit 0 when
everything matched; otherwise the first differing lines of each case.
"""
import argparse
import concurrent.futures
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "tests", "fixtures")


def run(cmd, stdin=None):
    p = subprocess.run(cmd, input=stdin, capture_output=True, text=True)
    # The exit status and stdout are the output; stderr carries timings.
    return f"rc={p.returncode}\n{p.stdout}"


def causal_models():
    for name in sorted(os.listdir(os.path.join(FIX, "model_golden"))):
        gold = json.load(open(os.path.join(FIX, "model_golden", name)))
        model = os.path.join(FIX, "models", gold["model"])
        yield gold["model"], model, [c["prompt"] for c in gold["cases"]]
    yield "demo", os.path.join(ROOT, "models", "demo"), [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]]


def offline_cases(device):
    cases = []
    for name, model, prompts in causal_models():
        for i, prompt in enumerate(prompts):
            ids = ",".join(map(str, prompt))
            for prec in ("float32", "bfloat16"):
                for chunk in ([], ["--prefill-chunk", "3"]):
                    label = f"generate {name}#{i} {prec}{' chunked' if chunk else ''}"
                    cases.append((label, lambda b, m=model, ids=ids, p=prec, c=chunk: run(
                        [b, "generate", "--model", m, "--prompt-ids", ids, "--max-tokens", "12",
                         "--json", "--device", device, "--matmul-precision", p] + c)))
    conv = os.path.join(FIX, "demo", "heldout.jsonl")
    if os.path.exists(conv):
        cases.append(("perplexity demo", lambda b: run(
            [b, "perplexity", "--model", os.path.join(ROOT, "models", "demo"), "--ids-file", conv,
             "--limit", "8", "--json"])))
    enc = os.path.join(FIX, "encoder")
    for name in sorted(os.listdir(os.path.join(enc, "models"))):
        gold = os.path.join(enc, "golden", name + ".json")
        if not os.path.exists(gold):
            continue
        ids = json.dumps({"inputs": json.load(open(gold))["inputs"]})
        for pooling in ("cls", "mean", "last"):
            cases.append((f"embed {name} {pooling}", lambda b, n=name, ids=ids, p=pooling: run(
                [b, "embed", os.path.join(enc, "models", n), "--ids-json", "-", "--pooling", p,
                 "--device", device], stdin=ids)))
    return cases


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def http(port, method, path, body=None, raw=None):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


VOLATILE = re.compile(r'"(id|created|system_fingerprint)"\s*:\s*("[^"]*"|\d+)')


def blank(text):
    return VOLATILE.sub(lambda m: f'"{m.group(1)}":"-"', text)


def serve(binary, model, device, extra=()):
    port = free_port()
    log = tempfile.NamedTemporaryFile(prefix="compare-serve-", suffix=".log", delete=False)
    p = subprocess.Popen([binary, "serve", model, "--host", "127.0.0.1", "--port", str(port),
                          "--device", device, "--served-model-name", "m",
                          "--disable-log-requests", *extra],
                         stdout=log, stderr=subprocess.STDOUT)
    for _ in range(600):
        if p.poll() is not None:
            raise SystemExit(f"{binary} serve exited: see {log.name}")
        try:
            if http(port, "GET", "/health")[0] == 200:
                return p, port
        except OSError:
            pass
        time.sleep(0.1)
    p.kill()
    raise SystemExit(f"{binary} serve did not become ready: see {log.name}")


def chat(content, **kw):
    return {"model": "m", "messages": [{"role": "user", "content": content}], **kw}


GEN_REQUESTS = [
    ("chat greedy", "POST", "/v1/chat/completions", chat("Tell me a story.", max_tokens=24,
                                                          temperature=0)),
    ("chat seeded n=3 logprobs", "POST", "/v1/chat/completions",
     chat("春眠不觉晓", max_tokens=16, temperature=0.8, top_p=0.9, seed=7, n=3, logprobs=True,
          top_logprobs=3)),
    ("chat stream", "POST", "/v1/chat/completions",
     chat("Hello", max_tokens=12, temperature=0.7, seed=3, stream=True,
          stream_options={"include_usage": True})),
    ("completion echo logprobs", "POST", "/v1/completions",
     {"model": "m", "prompt": "The quick brown fox", "max_tokens": 8, "echo": True,
      "logprobs": 2, "temperature": 0}),
    ("completion stop penalties", "POST", "/v1/completions",
     {"model": "m", "prompt": ["a b c", "one two"], "max_tokens": 20, "stop": ["\n"],
      "presence_penalty": 0.5, "frequency_penalty": 0.3, "temperature": 0.9, "seed": 11}),
    ("tokenize", "POST", "/tokenize", {"model": "m", "prompt": "Hello, world"}),
    ("detokenize", "POST", "/detokenize", {"model": "m", "tokens": [1, 2, 3, 4]}),
    ("models", "GET", "/v1/models", None),
    ("malformed json", "POST", "/v1/chat/completions", b'{"model": "m", "messages": ['),
    ("unknown model", "POST", "/v1/chat/completions", {"model": "nope", "messages": []}),
    ("bad type", "POST", "/v1/completions", {"model": "m", "prompt": "x", "max_tokens": "3"}),
    ("too long", "POST", "/v1/completions", {"model": "m", "prompt": "x " * 5000,
                                              "max_tokens": 4}),
    ("unknown route", "GET", "/v1/nothing", None),
]

ENC_REQUESTS = [
    ("embeddings", "POST", "/v1/embeddings", {"model": "m", "input": [[2, 984, 941, 3],
                                                                       [2, 1658, 3]]}),
    ("embeddings base64", "POST", "/v1/embeddings", {"model": "m", "input": [[2, 984, 3]],
                                                      "encoding_format": "base64"}),
    ("embeddings bad input", "POST", "/v1/embeddings", {"model": "m", "input": 5}),
]


def serving_outputs(binary, device):
    out = {}
    p, port = serve(binary, os.path.join(ROOT, "models", "demo"), device)
    try:
        for name, method, path, body in GEN_REQUESTS:
            raw = body if isinstance(body, bytes) else None
            status, text = http(port, method, path, None if raw else body, raw)
            out[f"serve demo: {name}"] = f"{status}\n{blank(text)}"
        # Twelve at once: the engine batches them; each answer must not change.
        reqs = [chat(f"Question {i}: what is {i} + {i}?", max_tokens=20, temperature=0.6,
                     seed=100 + i) for i in range(12)]
        with concurrent.futures.ThreadPoolExecutor(12) as ex:
            res = list(ex.map(lambda r: http(port, "POST", "/v1/chat/completions", r), reqs))
        for i, (status, text) in enumerate(res):
            out[f"serve demo: concurrent #{i}"] = f"{status}\n{blank(text)}"
    finally:
        p.terminate()
        p.wait(60)
    enc = os.path.join(FIX, "encoder", "models", "bert")
    if os.path.isdir(enc):
        p, port = serve(binary, enc, device)
        try:
            for name, method, path, body in ENC_REQUESTS:
                status, text = http(port, method, path, body)
                out[f"serve bert: {name}"] = f"{status}\n{blank(text)}"
        finally:
            p.terminate()
            p.wait(60)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--quick", action="store_true", help="skip the serving run")
    a = ap.parse_args()
    results = {}
    for label, fn in offline_cases(a.device):
        results[label] = (fn(a.old), fn(a.new))
    if not a.quick:
        old, new = serving_outputs(a.old, a.device), serving_outputs(a.new, a.device)
        for k in old:
            results[k] = (old[k], new.get(k, "<missing>"))
    differ = 0
    for label, (o, n) in results.items():
        if o != n:
            differ += 1
            print(f"DIFFER {label}")
            for lo, ln in zip(o.splitlines(), n.splitlines()):
                if lo != ln:
                    print(f"   old: {lo[:300]}\n   new: {ln[:300]}")
                    break
    same = len(results) - differ
    print(f"{same} of {len(results)} outputs bitwise the same ({a.device})")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
