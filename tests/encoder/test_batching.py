#!/usr/bin/env python3
"""Encoder requests share forward passes (engine/encoder.c's batcher): concurrent
/v1/embeddings, /classify, /v1/score and /v1/rerank requests against a real
server must get answers bit-identical to the same requests sent one at a
time (embeddings as base64 float32, so every bit is compared), some passes
must really have held several requests (inferd:encoder_batch_size), and a
request the model refuses must not fail the requests it shared a pass with.

The model is the ModelScope-style classifier folder (pytorch_model.bin +
vocab.txt) with two extra lines in vocab.txt: their ids pass the server's
check against the tokenizer's vocabulary but not the model's, so the model
itself refuses them, inside a shared pass."""
import base64
import json
import os
import shutil
import struct
import sys
import tempfile
import threading

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "server"))
from serverlib import Server, check, finish  # noqa: E402

FIX = "tests/fixtures/encoder"
texts = json.load(open(f"{FIX}/golden/bert_tokenizer.json"))["texts"]
model_vocab = json.load(open(f"{FIX}/models/bert_cls_bin/config.json"))["vocab_size"]
# On the GPU (INFERD_SERVE_ARGS="--device cuda") cuBLAS picks its kernels by
# batch shape, so answers are compared within INFERD_BATCH_TOL there.
BATCH_TOL = float(os.environ.get("INFERD_BATCH_TOL", "0"))


def same(a, b):
    if not BATCH_TOL:
        return a == b
    if isinstance(a, str) and isinstance(b, str) and a != b and a.endswith("=") is b.endswith("="):
        try:
            x, y = base64.b64decode(a, validate=True), base64.b64decode(b, validate=True)
        except ValueError:
            return False
        return len(x) == len(y) and same(list(struct.unpack(f"<{len(x) // 4}f", x)),
                                         list(struct.unpack(f"<{len(y) // 4}f", y)))
    if isinstance(a, float) and isinstance(b, (int, float)):
        return abs(a - b) <= BATCH_TOL
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


def bodies():
    """A mix of request kinds and sizes, built from the fixture texts (short
    ones where pairs must fit the model's 128 positions)."""
    short = [t for t in texts if len(t) <= 40]
    texts_ = [t for t in texts if len(t) <= 120]
    out = []
    for i in range(12):
        k = 1 + i % 4
        out.append(("/v1/embeddings", {"input": texts_[i * 7:i * 7 + k], "encoding_format": "base64"}))
        out.append(("/classify", {"input": texts_[100 + i * 5:100 + i * 5 + k]}))
        out.append(("/v1/score", {"text_1": short[i], "text_2": short[40 + i:40 + i + k]}))
    out.append(("/v1/rerank", {"query": "今天天气很好", "documents": short[80:90]}))
    out.append(("/v1/embeddings", {"input": [[2] + [5] * 120 + [3]] * 3, "encoding_format": "base64"}))
    return out


def answer(r):
    """The part of a response that must not depend on batching."""
    if r.status_code != 200:
        return (r.status_code, r.text)
    j = r.json()
    return (200, j.get("data") or j.get("results"), j["usage"])


def fire(srv, reqs, rounds):
    """Sends every request from its own thread, all released at once."""
    got = [[None] * len(reqs) for _ in range(rounds)]
    for rd in range(rounds):
        gate = threading.Barrier(len(reqs))

        def go(i):
            gate.wait()
            got[rd][i] = answer(srv.post(*reqs[i]))
        ts = [threading.Thread(target=go, args=(i,)) for i in range(len(reqs))]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    return got


d = tempfile.mkdtemp(prefix="inferd-batch-")
try:
    for f in os.listdir(f"{FIX}/models/bert_cls_bin"):
        shutil.copy(f"{FIX}/models/bert_cls_bin/{f}", d)
    with open(f"{d}/vocab.txt", "a", encoding="utf-8") as f:
        f.write("[unused_past_model_a]\n[unused_past_model_b]\n")
    reqs = bodies()
    with Server(model_dir=d) as srv:
        seq = [answer(srv.post(p, b)) for p, b in reqs]
        check("sequential answers all 200", all(a[0] == 200 for a in seq),
              [a for a in seq if a[0] != 200][:2])
        m0 = srv.metrics()
        rounds = 3
        conc = fire(srv, reqs, rounds)
        diff = [(rd, i) for rd in range(rounds) for i in range(len(reqs)) if not same(conc[rd][i], seq[i])]
        check(f"{rounds} x {len(reqs)} concurrent requests: answers " +
              (f"within {BATCH_TOL} of" if BATCH_TOL else "bit-identical to") + " sequential",
              not diff, [(reqs[i][0], conc[rd][i], seq[i]) for rd, i in diff[:2]])
        m1 = srv.metrics()
        passes = m1["inferd:encoder_batch_size_count"] - m0["inferd:encoder_batch_size_count"]
        jobs = m1["inferd:encoder_batch_size_sum"] - m0["inferd:encoder_batch_size_sum"]
        single = m1['inferd:encoder_batch_size_bucket{le="1"}'] - m0['inferd:encoder_batch_size_bucket{le="1"}']
        print(f"concurrent: {int(jobs)} requests in {int(passes)} forward passes "
              f"({int(passes - single)} shared)")
        check("every request counted once in inferd:encoder_batch_size_sum",
              jobs == rounds * len(reqs), (jobs, rounds * len(reqs)))
        check("passes were shared (fewer passes than requests, some with > 1 request)",
              passes < jobs and single < passes, (passes, jobs, single))
        check("inferd:encoder_tokens_total grows",
              m1["inferd:encoder_tokens_total"] > m0["inferd:encoder_tokens_total"], m1)

        # a request the model refuses, among good ones: only it fails
        bad = ("/classify", {"input": [[2, model_vocab, 3]]})
        mixed = [bad] + [r for r in reqs if r[0] == "/classify"]
        want = [None] + [seq[i] for i, r in enumerate(reqs) if r[0] == "/classify"]
        got = fire(srv, mixed, 3)
        ok = all(g[0][0] == 400 and "outside the vocabulary" in g[0][1] and same(g[1:], want[1:])
                 for g in got)
        check("a refused input fails its own request only, not those sharing its pass",
              ok, [g[0] for g in got])
finally:
    shutil.rmtree(d)
finish()
