#!/usr/bin/env python3
"""Encoders on the CPU against Hugging Face transformers (fixtures from
tools/golden/encoder_golden.py): `inferd embed` on each tiny checkpoint, all
sequences in ONE packed batch, must give

  - CLS, mean, last-token and BertPooler vectors with cosine >= 0.9999 and
    |difference| <= 1e-4 per element against the reference computed on a
    padded batch with attention masks (so padding masks are checked too);
  - the sentence-transformers model's default output (mean pooling +
    Normalize from modules.json / 1_Pooling) equal to the normalized mean;
  - classifier logits within 1e-4 (BertForSequenceClassification saved only as
    pytorch_model.bin, XLM-R one-logit cross-encoder), softmax / sigmoid
    scores, id2label labels and the ModelScope task;
  - the float16 pytorch_model.bin copy of the BERT weights matching its own
    reference;
and clear errors for bad inputs and for hostile checkpoints in a model folder."""
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIX = os.path.join(ROOT, "tests", "fixtures", "encoder")
INFERD = os.environ.get("INFERD", os.path.join(ROOT, "build", "inferd"))
COS_MIN = 0.9999
TOL = float(os.environ.get("INFERD_ENCODER_TOL", "1e-4"))
# e.g. "--device cuda": the same checks on the GPU (tests/cuda/test_encoder_cuda.py)
EXTRA = os.environ.get("INFERD_EMBED_ARGS", "").split()

failures = 0
checks = 0
worst_cos = 1.0
worst_abs = 0.0


def fail(msg):
    global failures
    failures += 1
    print("FAIL", msg)


def embed(model, ids_path, *flags):
    out = subprocess.run([INFERD, "embed", os.path.join(FIX, "models", model), "--ids-json",
                          ids_path, "--threads", "2", *EXTRA, *flags], capture_output=True,
                         text=True)
    if out.returncode != 0:
        fail(f"{model} {flags}: exit {out.returncode}: {out.stderr.strip()}")
        return None
    return json.loads(out.stdout)


def compare_vectors(label, got, ref):
    global checks, worst_cos, worst_abs
    if len(got) != len(ref):
        fail(f"{label}: {len(got)} vectors, reference has {len(ref)}")
        return
    for i, (g, r) in enumerate(zip(got, ref)):
        dot = sum(a * b for a, b in zip(g, r))
        cos = dot / (math.sqrt(sum(a * a for a in g)) * math.sqrt(sum(b * b for b in r)) or 1)
        diff = max(abs(a - b) for a, b in zip(g, r))
        worst_cos, worst_abs = min(worst_cos, cos), max(worst_abs, diff)
        checks += 1
        if len(g) != len(r) or cos < COS_MIN or diff > TOL:
            fail(f"{label} sequence {i}: cosine {cos:.7f}, max |diff| {diff:.2e}")


def golden(name):
    return json.load(open(os.path.join(FIX, "golden", name + ".json")))


def check_encoder(model, poolings):
    ref = golden(model)
    path = os.path.join(FIX, "golden", model + ".json")
    for pooling, key in poolings:
        got = embed(model, path, "--pooling", pooling, "--no-normalize")
        if got:
            compare_vectors(f"{model} {pooling}", got["embeddings"], ref[key])
    got = embed(model, path, "--pooling", "mean", "--normalize")
    if got:
        compare_vectors(f"{model} mean+normalize", got["embeddings"], ref["mean_normalized"])
    # the first three sequences alone must give what they give inside the batch
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump({"inputs": ref["inputs"][:3]}, f)
    got = embed(model, f.name, "--pooling", "cls", "--no-normalize")
    os.unlink(f.name)
    if got:
        compare_vectors(f"{model} alone", got["embeddings"], ref["cls_alone_first3"])
    return ref


def check_classifier(model):
    ref = golden(model)
    got = embed(model, os.path.join(FIX, "golden", model + ".json"))
    if not got:
        return None
    global checks, worst_abs
    for i, (g, r) in enumerate(zip(got["logits"], ref["logits"])):
        d = max(abs(a - b) for a, b in zip(g, r))
        worst_abs = max(worst_abs, d)
        checks += 1
        if d > TOL or len(g) != len(r):
            fail(f"{model} logits of sequence {i}: {g} vs {r} (diff {d:.2e})")
    want_scores = ref.get("probs") or ref.get("scores")
    for i, (g, r) in enumerate(zip(got["scores"], want_scores)):
        if max(abs(a - b) for a, b in zip(g, r)) > TOL:
            fail(f"{model} scores of sequence {i}: {g} vs {r}")
    if len(got["logits"]) != len(ref["logits"]):
        fail(f"{model}: {len(got['logits'])} rows of logits, want {len(ref['logits'])}")
    return got


def expect_error(label, args, want):
    global checks
    out = subprocess.run([INFERD, "embed", *args, *EXTRA], capture_output=True, text=True)
    checks += 1
    if out.returncode == 0 or want not in out.stderr:
        fail(f"{label}: exit {out.returncode}, stderr {out.stderr.strip()!r}; want {want!r}")


def main():
    check_encoder("bert", [("cls", "cls"), ("mean", "mean"), ("last", "last"),
                           ("pooler", "pooler")])
    check_encoder("bert_f16_bin", [("cls", "cls"), ("mean", "mean"), ("pooler", "pooler")])
    check_encoder("xlmr_st", [("cls", "cls"), ("mean", "mean"), ("last", "last")])

    # sentence-transformers defaults: mean pooling + Normalize, no flags given
    ref = golden("xlmr_st")
    got = embed("xlmr_st", os.path.join(FIX, "golden", "xlmr_st.json"))
    if got:
        if got["pooling"] != "mean" or got["normalized"] is not True:
            fail(f"xlmr_st defaults: pooling {got['pooling']}, normalized {got['normalized']}")
        compare_vectors("xlmr_st default", got["embeddings"], ref["mean_normalized"])
    # plain BERT without sentence-transformers files pools CLS, unnormalized
    got = embed("bert", os.path.join(FIX, "golden", "bert.json"))
    if got and (got["pooling"] != "cls" or got["normalized"] is not False):
        fail(f"bert defaults: pooling {got['pooling']}, normalized {got['normalized']}")

    got = check_classifier("bert_cls_bin")
    if got:
        if got["labels"] != ["不相似", "相似"]:
            fail(f"bert_cls_bin labels {got['labels']}")
        if got.get("task") != "sentence-similarity":
            fail(f"bert_cls_bin task {got.get('task')}")
        if got["architecture"] != "BertForSequenceClassification":
            fail(f"bert_cls_bin architecture {got['architecture']}")
    got = check_classifier("xlmr_rerank")
    if got and got["labels"] != ["LABEL_0"]:
        fail(f"xlmr_rerank labels {got['labels']}")

    # errors a user can act on
    tmp = tempfile.mkdtemp(prefix="inferd-embed-")
    try:
        def ids_file(name, obj):
            p = os.path.join(tmp, name)
            with open(p, "w") as f:
                f.write(obj if isinstance(obj, str) else json.dumps(obj))
            return p
        bert = os.path.join(FIX, "models", "bert")
        expect_error("id past vocab", [bert, "--ids-json", ids_file("a.json", [[2, 99999, 3]])],
                     "outside the vocabulary")
        expect_error("too long", [bert, "--ids-json", ids_file("b.json", [[5] * 129])],
                     "at most 128")
        expect_error("bad type", [bert, "--ids-json", ids_file(
            "c.json", {"input_ids": [[2, 5, 3]], "token_type_ids": [[0, 2, 0]]})],
            "token type 2")
        expect_error("type count", [bert, "--ids-json", ids_file(
            "d.json", {"input_ids": [[2, 5, 3]], "token_type_ids": [[0, 0]]})],
            "3 ids but 2 token types")
        expect_error("empty", [bert, "--ids-json", ids_file("e.json", [])], "no sequences")
        expect_error("not json", [bert, "--ids-json", ids_file("f.json", "[[1,")], "f.json")
        expect_error("negative id", [bert, "--ids-json", ids_file("g.json", [[1, -1]])],
                     "is not a token id")
        expect_error("bad pooling", [bert, "--ids-json", ids_file("h.json", [[1]]),
                                     "--pooling", "max"], "--pooling must be")
        expect_error("no pooler", [os.path.join(FIX, "models", "xlmr_rerank"), "--ids-json",
                                   ids_file("i.json", [[0, 5, 2]]), "--pooling", "pooler"],
                     "no pooler weights")
        expect_error("not an encoder", [os.path.join(ROOT, "tests", "fixtures", "models",
                                                     "qwen3"), "--ids-json",
                                        ids_file("j.json", [[1]])], "not an encoder")
        # hostile checkpoints inside a model folder are refused by name
        for bad, want in (("evil_os_system.bin", "refusing pickle global 'posix.system'"),
                          ("storage_too_small.bin", "holds 44 bytes"),
                          ("truncated_half.bin", "truncated"),
                          ("compressed.bin", "is compressed")):
            d = os.path.join(tmp, bad)
            os.makedirs(d)
            shutil.copy(os.path.join(FIX, "models", "bert_cls_bin", "config.json"), d)
            shutil.copy(os.path.join(FIX, "pytorch", bad), os.path.join(d, "pytorch_model.bin"))
            expect_error(f"folder with {bad}", [d, "--ids-json", ids_file("k.json", [[2, 3]])],
                         want)
        if os.path.exists("/tmp/inferd_pwned"):
            fail("the os.system pickle ran")
    finally:
        shutil.rmtree(tmp)

    print(f"{checks} checks, worst cosine {worst_cos:.8f}, worst |diff| {worst_abs:.2e}, "
          f"{failures} failures")
    sys.exit(1 if failures or checks < 60 else 0)


if __name__ == "__main__":
    main()
