#!/usr/bin/env python3
"""A ModelScope sentence-similarity checkpoint whose config.json has no
`architectures` (the task is only in configuration.json) but whose weights
hold the classifier head and whose config has id2label is served as the
classifier, not as an embedding model: /v1/score gives P(相似) as for the same
folder with architectures, and /classify its labels. The fixture is
bert_cls_bin copied to a temp folder with `architectures` deleted; without
configuration.json's task it stays an embedding model."""
import json
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "server"))
from serverlib import Server, check, finish  # noqa: E402

SRC = "tests/fixtures/encoder/models/bert_cls_bin"
PAIR = {"model": "tiny", "text_1": "今天天气很好", "text_2": ["今天是个好天气", "我想吃饭"]}


def scores(model_dir, pair=PAIR):
    with Server(model_dir=model_dir) as s:
        r = s.post("/v1/score", pair)
        c = s.post("/classify", {"model": "tiny", "input": "今天天气很好"})
        check(f"{os.path.basename(model_dir)}: server exits 0", s.stop() == 0)
    check(f"{os.path.basename(model_dir)}: /v1/score answers", r.status_code == 200, r.text[:300])
    return ([d["score"] for d in r.json()["data"]] if r.status_code == 200 else None,
            c.json() if c.status_code == 200 else None)


def copy_without_architectures(tmp, keep_task=True, src=SRC, task=None):
    dst = os.path.join(tmp, os.path.basename(src) + ("_no_arch" if keep_task else "_no_task"))
    shutil.copytree(src, dst)
    if task:
        json.dump({"framework": "pytorch", "task": task}, open(os.path.join(dst, "configuration.json"), "w"))
    cfg = json.load(open(os.path.join(dst, "config.json")))
    del cfg["architectures"]
    json.dump(cfg, open(os.path.join(dst, "config.json"), "w"), ensure_ascii=False)
    if not keep_task:
        os.unlink(os.path.join(dst, "configuration.json"))
    return dst


with tempfile.TemporaryDirectory() as tmp:
    want, want_cls = scores(SRC)
    got, got_cls = scores(copy_without_architectures(tmp))
    check("no architectures + ModelScope task: /v1/score equals the classifier's", got == want,
          (got, want))
    check("... and /classify gives the id2label labels",
          got_cls is not None and want_cls is not None and
          got_cls["data"][0]["label"] == want_cls["data"][0]["label"] and
          got_cls["data"][0]["label"] in ("相似", "不相似"), (got_cls, want_cls))
    plain, _ = scores(copy_without_architectures(tmp, keep_task=False))
    check("without the task it stays an embedding model (cosine, not P(相似))",
          plain is not None and plain != want, (plain, want))
    # XLM-R: the one-logit cross-encoder head under the text-classification task
    XLMR = "tests/fixtures/encoder/models/xlmr_rerank"
    ids = {"model": "tiny", "text_1": [0, 581, 109, 2], "text_2": [[0, 353, 47, 9, 2]]}
    want, _ = scores(XLMR, ids)
    got, _ = scores(copy_without_architectures(tmp, src=XLMR, task="text-classification"), ids)
    check("XLM-R without architectures + text-classification task: the cross-encoder's score",
          got is not None and got == want, (got, want))
finish()
