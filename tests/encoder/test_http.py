#!/usr/bin/env python3
"""`inferd serve` on encoder folders, called with curl (as the docs of vLLM,
Jina, Cohere and SiliconFlow show it) and Python requests:

  - BertForSequenceClassification saved only as pytorch_model.bin (ModelScope
    sentence-similarity): /v1/score and /v1/rerank give the softmax
    probability of label 1 from transformers' logits (within 1e-4), rerank
    sorts and cuts at top_n, /classify gives id2label labels;
  - an XLM-R one-logit cross-encoder: score = sigmoid(logit);
  - the sentence-transformers XLM-R: /v1/score is the cosine of the pooled,
    normalized vectors; /v1/embeddings as float and base64;
  - text through tokenizer.json (BERT WordPiece) equal to transformers'
    BertTokenizer ids; the classifier folder with only vocab.txt (no
    tokenizer.json) takes text on /v1/score, /v1/rerank, /classify and
    /v1/embeddings, docs/encoders.md's 今天天气很好 / 今天是个好天气 pair scored as
    transformers does;
  - errors: text without a tokenizer, too long, bad ids, dimensions, chat on
    an encoder, embeddings on a causal LM, classify on an embedding model.
Queries and documents are token ids split from transformers' pair encodings:
[CLS] a [SEP] | [CLS] b [SEP] is re-joined by the server as [CLS] a [SEP] b [SEP]."""
import base64
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "server"))
from serverlib import Server, check, finish  # noqa: E402

FIX = "tests/fixtures/encoder"
TOL = 1e-4


def golden(name):
    return json.load(open(f"{FIX}/golden/{name}.json"))


def curl(srv, path, body):
    out = subprocess.run(["curl", "-sS", "-w", "\n%{http_code}", f"{srv.url}{path}", "-H",
                          "Content-Type: application/json", "-d", json.dumps(body)],
                         capture_output=True, text=True, timeout=60)
    text, _, code = out.stdout.rpartition("\n")
    return int(code), json.loads(text) if text else None


def split_pair(ids, sep, roberta):
    """transformers' pair encoding back into the two single encodings."""
    k = ids.index(sep)
    if roberta:  # <s> a </s></s> b </s>
        return ids[:k + 1], [ids[0]] + ids[k + 2:]
    return ids[:k + 1], [ids[0]] + ids[k + 1:]


def cosine(u, v):
    return sum(a * b for a, b in zip(u, v)) / math.sqrt(sum(a * a for a in u) * sum(b * b for b in v))


def classifier_server():
    g = golden("bert_cls_bin")
    pairs = [split_pair(s["input_ids"], 3, False) for s in g["inputs"][:6]]
    want = [p[1] for p in g["probs"][:6]]
    with Server(model_dir=f"{FIX}/models/bert_cls_bin") as srv:
        code, r = curl(srv, "/v1/score", {"model": "tiny", "text_1": [p[0] for p in pairs],
                                          "text_2": [p[1] for p in pairs]})
        got = [d["score"] for d in r["data"]] if code == 200 else []
        check("score: P(相似) of each pair within 1e-4 of transformers",
              code == 200 and len(got) == 6 and all(abs(a - b) <= TOL for a, b in zip(got, want)),
              (code, r, want))
        check("score: vLLM shape", code == 200 and r["object"] == "list" and r["id"].startswith("score-")
              and r["data"][0]["object"] == "score" and r["usage"]["prompt_tokens"] > 0, r)

        # one query against many documents: pairs 0 and 1 share their first sentence
        q, d0 = pairs[0]
        _, d1 = pairs[1]
        docs = [d0, d1, {"text": d1}]
        code, r = curl(srv, "/v1/rerank", {"model": "tiny", "query": q, "documents": docs, "top_n": 2})
        ok = code == 200 and len(r["results"]) == 2
        scores = {x["index"]: x["relevance_score"] for x in r["results"]} if ok else {}
        ranked = sorted([(want[0], 0), (want[1], 1), (want[1], 2)], key=lambda t: (-t[0], t[1]))
        check("rerank: top_n results, sorted, relevance = P(相似)",
              ok and [x["index"] for x in r["results"]] == [i for _, i in ranked[:2]]
              and all(abs(scores[i] - s) <= TOL for s, i in ranked[:2]), (code, r, ranked))
        check("rerank: documents returned (Cohere {text} objects too)",
              ok and all("document" in x and "text" in x["document"] for x in r["results"]), r)
        code, r = curl(srv, "/v1/rerank", {"query": q, "documents": [d0], "return_documents": False})
        check("rerank: return_documents false", code == 200 and "document" not in r["results"][0], r)

        code, r = curl(srv, "/classify", {"input": [g["inputs"][6]["input_ids"]]})
        check("classify: id2label labels and probabilities",
              code == 200 and r["data"][0]["label"] in ("不相似", "相似") and r["data"][0]["num_classes"] == 2
              and abs(sum(r["data"][0]["probs"]) - 1) < 1e-5, r)

        code, r = curl(srv, "/v1/rerank", {"query": q, "documents": [[2] + [5] * 200 + [3]]})
        check("over-long pair: 400 naming the limit", code == 400 and "at most 128" in r["error"]["message"], r)
        code, r = curl(srv, "/v1/rerank", {"query": q, "documents": []})
        check("rerank without documents: 400", code == 400, r)
        code, r = curl(srv, "/v1/score", {"text_1": [q, q], "text_2": [d0, d1, d1]})
        check("score with mismatched lists: 400", code == 400 and "text_1" in r["error"]["message"], r)
        code, r = curl(srv, "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]})
        check("chat on an encoder: 400 saying what it serves",
              code == 400 and "/v1/embeddings" in r["error"]["message"], r)
        code, r = curl(srv, "/v1/embeddings", {"model": "other", "input": [q]})
        check("unknown model: 404", code == 404, r)


def text_servers():
    """With tokenizer.json the server tokenizes text itself: the vectors and
    scores must equal those of transformers' BertTokenizer ids."""
    tok = golden("bert_tokenizer")
    texts, ids = tok["texts"], tok["settings"]["lower"]["ids"]
    with Server(model_dir=f"{FIX}/models/bert") as srv:
        picks = [texts.index("今天天气很好"), texts.index("今天是个好天气"), 0, 17, 530, 600]
        a = srv.post("/v1/embeddings", {"input": [texts[i] for i in picks]})
        b = srv.post("/v1/embeddings", {"input": [ids[i] for i in picks]})
        check("text input through tokenizer.json = BertTokenizer ids (same vectors, same usage)",
              a.status_code == 200 and b.status_code == 200 and a.json()["data"] == b.json()["data"]
              and a.json()["usage"] == b.json()["usage"], (a.text[:300], b.text[:300]))
        code, r = curl(srv, "/v1/score", {"text_1": "今天天气很好", "text_2": "今天是个好天气"})
        va, vb = (d["embedding"] for d in b.json()["data"][:2]) if b.status_code == 200 else ([1], [1])
        check("score of two sentences on an embedding model = cosine of their vectors",
              code == 200 and abs(r["data"][0]["score"] - cosine(va, vb)) <= TOL, r)
    # The sentence-similarity classifier folder as ModelScope ships it: only
    # config.json, configuration.json, pytorch_model.bin and vocab.txt. The
    # tokenizer is BertTokenizer built from vocab.txt.
    g = golden("bert_cls_bin")
    d = f"{FIX}/models/bert_cls_bin"
    assert sorted(os.listdir(d)) == ["config.json", "configuration.json", "pytorch_model.bin", "vocab.txt"]
    with Server(model_dir=d) as srv:
        code, r = curl(srv, "/v1/score", {"text_1": "今天天气很好", "text_2": "今天是个好天气"})
        check("vocab.txt only: score('今天天气很好', '今天是个好天气') = transformers' P(相似)",
              code == 200 and abs(r["data"][0]["score"] - g["probs"][0][1]) <= TOL, (r, g["probs"][0]))
        code, r = curl(srv, "/v1/rerank", {"query": "今天天气很好",
                                           "documents": ["明月几时有", {"text": "今天是个好天气"}]})
        want = {0: g["probs"][1][1], 1: g["probs"][0][1]}
        check("vocab.txt only: rerank of text documents",
              code == 200 and all(abs(x["relevance_score"] - want[x["index"]]) <= TOL for x in r["results"])
              and r["results"][0]["document"]["text"] in ("明月几时有", "今天是个好天气"), (r, want))
        texts = [tok["texts"][i] for i in picks]
        code, r = curl(srv, "/classify", {"input": texts})
        code2, r2 = curl(srv, "/classify", {"input": [ids[i] for i in picks]})
        check("vocab.txt only: classify text = classify BertTokenizer's ids",
              code == 200 and code2 == 200 and r["data"] == r2["data"] and r["usage"] == r2["usage"], (r, r2))
        code, r = curl(srv, "/v1/embeddings", {"input": texts})
        code2, r2 = curl(srv, "/v1/embeddings", {"input": [ids[i] for i in picks]})
        check("vocab.txt only: embeddings of text = embeddings of BertTokenizer's ids",
              code == 200 and code2 == 200 and r["data"] == r2["data"] and len(r["data"]) == len(picks),
              (str(r)[:300], str(r2)[:300]))


def hostile_vocab_server():
    """A vocab.txt the tokenizer refuses: the server still serves token ids,
    says why on stderr, and text gets a 400 that says what to send."""
    d = tempfile.mkdtemp(prefix="inferd-enc-")
    try:
        for f in ("config.json", "configuration.json", "pytorch_model.bin"):
            shutil.copy(f"{FIX}/models/bert_cls_bin/{f}", d)
        with open(f"{d}/vocab.txt", "wb") as f:
            f.write(b"[PAD]\n[UNK]\n[CLS]\n[SEP]\n\xff\xfe\n")
        with Server(model_dir=d) as srv:
            code, r = curl(srv, "/v1/score", {"text_1": "今天天气很好", "text_2": "今天是个好天气"})
            check("invalid UTF-8 in vocab.txt: text answers 400 asking for token ids",
                  code == 400 and "token ids" in r["error"]["message"], r)
            code, r = curl(srv, "/classify", {"input": [[2, 5, 3]]})
            check("invalid UTF-8 in vocab.txt: token ids still work", code == 200, r)
            check("invalid UTF-8 in vocab.txt: the server log says which line",
                  "vocab.txt: line 5 is not valid UTF-8" in srv.stderr(), srv.stderr()[-500:])
    finally:
        shutil.rmtree(d)


def cross_encoder_server():
    g = golden("xlmr_rerank")
    a, b = split_pair(g["inputs"][5]["input_ids"], 2, True)
    with Server(model_dir=f"{FIX}/models/xlmr_rerank") as srv:
        code, r = curl(srv, "/v1/rerank", {"query": a, "documents": [b]})
        check("XLM-R cross-encoder: relevance = sigmoid(logit), pair as <s> a </s></s> b </s>",
              code == 200 and abs(r["results"][0]["relevance_score"] - g["scores"][5][0]) <= TOL,
              (code, r, g["scores"][5]))
        code, r = curl(srv, "/v1/score", {"text_1": "今天天气很好", "text_2": "今天是个好天气"})
        check("text without a tokenizer (no tokenizer.json, no vocab.txt): clear 400",
              code == 400 and "token ids" in r["error"]["message"], r)


def embedding_server():
    g = golden("xlmr_st")
    ids = [s["input_ids"] for s in g["inputs"]]
    with Server(model_dir=f"{FIX}/models/xlmr_st") as srv:
        r = srv.post("/v1/embeddings", {"model": "tiny", "input": ids})
        ok = r.status_code == 200
        vecs = [d["embedding"] for d in r.json()["data"]] if ok else []
        check("embeddings: mean pooling + Normalize from modules.json, cosine >= 0.9999",
              ok and len(vecs) == len(ids) and all(cosine(u, v) >= 0.9999 and max(abs(x - y) for x, y in zip(u, v)) <= TOL
                                                  for u, v in zip(vecs, g["mean_normalized"])), r.text[:300])
        check("embeddings: usage counts every token",
              ok and r.json()["usage"]["prompt_tokens"] == sum(map(len, ids)), r.text[-200:])
        r = srv.post("/v1/embeddings", {"input": ids[1], "encoding_format": "base64"})
        raw = base64.b64decode(r.json()["data"][0]["embedding"]) if r.status_code == 200 else b""
        v = struct.unpack(f"<{len(raw) // 4}f", raw)
        check("embeddings: base64 little-endian float32, one list of ids = one input",
              r.status_code == 200 and len(r.json()["data"]) == 1 and len(v) == 32
              and cosine(v, g["mean_normalized"][1]) >= 0.9999, r.text[:200])
        code, r = curl(srv, "/v1/score", {"text_1": ids[0], "text_2": [ids[0], ids[1]]})
        want = sum(x * y for x, y in zip(g["mean_normalized"][0], g["mean_normalized"][1]))
        check("score on an embedding model: cosine of the vectors",
              code == 200 and abs(r["data"][0]["score"] - 1) <= TOL and abs(r["data"][1]["score"] - want) <= TOL,
              (r, want))
        r = srv.post("/v1/embeddings", {"input": [ids[0]], "dimensions": 16})
        check("dimensions the model cannot give: 400", r.status_code == 400
              and r.json()["error"]["param"] == "dimensions", r.text)
        r = srv.post("/v1/embeddings", {"input": [[0] + [5] * 200 + [2]]})
        check("over-long input: 400", r.status_code == 400 and "at most 128" in r.text, r.text)
        r = srv.post("/v1/embeddings", {"input": [[0] + [5] * 200 + [2]], "truncate_prompt_tokens": 50})
        check("truncate_prompt_tokens keeps the last tokens", r.status_code == 200
              and r.json()["usage"]["prompt_tokens"] == 50, r.text[:200])
        r = srv.post("/v1/embeddings", {"input": [[0, 600, 2]]})
        check("id outside the vocabulary: 400", r.status_code == 400 and "[0, 600)" in r.text, r.text)
        r = srv.post("/v1/embeddings", {"input": [], "encoding_format": "float"})
        check("empty input list: 400", r.status_code == 400, r.text)
        r = srv.post("/v1/embeddings", {"input": [ids[0]], "encoding_format": "hex"})
        check("bad encoding_format: 400", r.status_code == 400, r.text)
        r = srv.post("/classify", {"input": [ids[0]]})
        check("classify on an embedding model: 400", r.status_code == 400 and "classification head" in r.text, r.text)

    with Server("qwen3") as srv:
        r = srv.post("/v1/embeddings", {"input": [[1, 2, 3]]})
        check("embeddings on a causal LM: 400", r.status_code == 400 and "encoder" in r.text, r.text)


classifier_server()
text_servers()
hostile_vocab_server()
cross_encoder_server()
embedding_server()
finish()
