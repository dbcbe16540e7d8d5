#!/usr/bin/env python3
"""Encoders (BERT, XLM-R, their classifiers) on the CUDA backend
(backend/cuda/encoder.cu + model/bert.c --device cuda).

Skips (exit 0) when the build has no CUDA backend or the machine no GPU.
Otherwise:

1. tests/encoder/test_golden.py with `--device cuda` on every `inferd embed`:
   CLS / mean / last / pooler vectors (cosine >= 0.9999, |diff| <= 1e-4) and
   classifier logits (1e-4) against transformers, on the float32, float16
   (.bin) and XLM-R fixtures, plus its error cases;
2. the same with INFERD_CUDA_MATMUL=f32 (every matmul in the float32 kernel);
3. GPU against CPU on random packed batches (1 sequence of 1 token; 7
   sequences; 300 sequences of 1..max tokens, so GEMV and cuBLAS paths and
   many attention blocks run), cls / mean / pooler vectors and logits;
4. compute-sanitizer memcheck on one batch per model, when it is installed;
5. `inferd serve --device cuda`: tests/encoder/test_http.py (curl and
   requests against transformers' numbers) and test_batching.py
   (concurrent requests sharing passes; within 1e-5 of sequential, since
   cuBLAS picks kernels by batch shape);
6. with --bench: a bert-base-shaped random checkpoint (12 layers, 768
   wide, float32), `inferd embed` of 1 and of 256 x 128-token sequences on
   CPU and GPU; prints the times.

    INFERD=build/inferd python3 tests/cuda/test_encoder_cuda.py [--bench]

Prints the measured maxima; exits 1 on any failure."""
import json
import math
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIX = os.path.join(ROOT, "tests", "fixtures", "encoder")
INFERD = os.environ.get("INFERD", os.path.join(ROOT, "build", "inferd"))
TOL_CPU = 1e-4        # GPU against CPU, per element
COS_MIN = 0.99999
MODELS = ["bert", "bert_f16_bin", "xlmr_st", "bert_cls_bin", "xlmr_rerank"]
JOBS = min(8, os.cpu_count() or 1)  # inferd processes at once; each one is small

failures = 0
worst = {"abs": 0.0, "cos": 1.0}


def fail(msg):
    global failures
    failures += 1
    print("FAIL " + msg, flush=True)


def embed(model_dir, ids_path, device, *flags, env=None, prefix=()):
    cmd = [*prefix, INFERD, "embed", model_dir, "--ids-json", ids_path, "--device", device, *flags]
    e = dict(os.environ)
    e.update(env or {})
    out = subprocess.run(cmd, capture_output=True, text=True, env=e, timeout=600)
    if out.returncode != 0:
        return None, f"exit {out.returncode}: {out.stderr.strip()[-2000:]}"
    return json.loads(out.stdout), None


def probe():
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump([[2, 5, 3]], f)
    got, err = embed(os.path.join(FIX, "models", "bert"), f.name, "cuda")
    os.unlink(f.name)
    if got is not None:
        return True
    if "no CUDA backend" in err or "no usable NVIDIA GPU" in err:
        print(f"SKIP: no GPU ({err})")
        return False
    print(f"FAIL probe: {err}")
    sys.exit(1)


def run_script(label, script, env):
    e = dict(os.environ)
    e.update(env)
    e["INFERD"] = INFERD
    t0 = time.time()
    out = subprocess.run([sys.executable, os.path.join(ROOT, script)], capture_output=True,
                         text=True, env=e, cwd=ROOT, timeout=600)
    tail = "\n".join(out.stdout.strip().splitlines()[-3:])
    print(f"== {label} ({time.time() - t0:.0f} s): {tail}", flush=True)
    if out.returncode != 0 and "No module named 'requests'" in out.stderr:
        print(f"   skipped: this python has no requests module ({sys.executable})")
    elif out.returncode != 0:
        fail(f"{label}:\n{out.stdout[-3000:]}\n{out.stderr[-2000:]}")


def compare(label, got, ref):
    if got is None or ref is None or len(got) != len(ref):
        fail(f"{label}: {None if got is None else len(got)} rows, want "
             f"{None if ref is None else len(ref)}")
        return
    for i, (g, r) in enumerate(zip(got, ref)):
        d = max(abs(a - b) for a, b in zip(g, r))
        ng = math.sqrt(sum(a * a for a in g))
        nr = math.sqrt(sum(b * b for b in r))
        cos = sum(a * b for a, b in zip(g, r)) / (ng * nr) if ng and nr else 1.0
        worst["abs"] = max(worst["abs"], d)
        worst["cos"] = min(worst["cos"], cos)
        if d > TOL_CPU * max(1.0, nr / math.sqrt(len(r))) or cos < COS_MIN:
            fail(f"{label} row {i}: max |gpu - cpu| {d:.2e}, cosine {cos:.8f}")
            return


def random_batches(cfg, rng):
    roberta = cfg.get("model_type") in ("xlm-roberta", "roberta")
    max_len = cfg["max_position_embeddings"] - (cfg.get("pad_token_id", 1) + 1 if roberta else 0)
    lo = 3
    hi = cfg["vocab_size"] - 1

    def seq(n):
        ids = [0 if roberta else 2] + [rng.randint(lo, hi) for _ in range(max(0, n - 2))]
        return (ids + [2 if roberta else 3])[:n] if n > 1 else ids[:1]
    types = cfg.get("type_vocab_size", 1) > 1 and not roberta
    out = {"one_token": [seq(1)],
           "seven": [seq(n) for n in (1, 2, 3, 17, 64, max_len - 1, max_len)]}
    big = [seq(rng.randint(1, max_len)) for _ in range(300)]
    if types:
        out["three_hundred"] = {"inputs": [{"input_ids": s, "token_type_ids":
                                            [0] * (len(s) // 2) + [1] * (len(s) - len(s) // 2)}
                                           for s in big]}
    else:
        out["three_hundred"] = big
    return out


def gpu_vs_cpu(tmp):
    rng = random.Random(11)
    jobs = []  # (label, model dir, ids file, pooling, compare logits)
    for model in MODELS:
        d = os.path.join(FIX, "models", model)
        cfg = json.load(open(os.path.join(d, "config.json")))
        has_labels = any(a.endswith("ForSequenceClassification") for a in cfg.get("architectures", []))
        for name, batch in random_batches(cfg, rng).items():
            p = os.path.join(tmp, f"{model}_{name}.json")
            with open(p, "w") as f:
                json.dump(batch, f)
            poolings = ["cls", "mean"] + (["pooler"] if model in ("bert", "bert_f16_bin") else [])
            for pooling in poolings:
                jobs.append((f"{model} {name} {pooling}", d, p, pooling, has_labels and pooling == "cls"))

    def one(job):
        label, d, p, pooling, logits = job
        g, err_g = embed(d, p, "cuda", "--pooling", pooling, "--no-normalize")
        c, err_c = embed(d, p, "cpu", "--pooling", pooling, "--no-normalize")
        return job, g, err_g, c, err_c
    with ThreadPoolExecutor(JOBS) as ex:
        for (label, _, _, _, logits), g, err_g, c, err_c in ex.map(one, jobs):
            if err_g or err_c:
                fail(f"{label}: cuda: {err_g}; cpu: {err_c}")
                continue
            compare(label, g["embeddings"], c["embeddings"])
            if logits:
                compare(label + " logits", g.get("logits"), c.get("logits"))
    print(f"== GPU vs CPU ({len(jobs)} batches): worst |diff| {worst['abs']:.2e}, "
          f"worst cosine {worst['cos']:.8f}", flush=True)


def memcheck(tmp):
    cs = shutil.which("compute-sanitizer") or (
        "/usr/local/cuda/bin/compute-sanitizer"
        if os.path.exists("/usr/local/cuda/bin/compute-sanitizer") else None)
    if not cs:
        print("== memcheck: compute-sanitizer not found, skipped")
        return
    for model in ("bert", "bert_cls_bin", "xlmr_st"):
        p = os.path.join(tmp, f"{model}_seven.json")
        _, err = embed(os.path.join(FIX, "models", model), p, "cuda", "--pooling", "mean",
                       prefix=(cs, "--tool", "memcheck", "--error-exitcode", "9",
                               "--log-file", os.path.join(tmp, f"memcheck_{model}.log")))
        if err:
            fail(f"memcheck {model}: {err}")
    print("== memcheck: done", flush=True)


def write_bert_base(d):
    """A random float32 BertModel of bert-base-chinese's shape (no torch)."""
    import numpy as np
    rng = np.random.default_rng(0)
    H, L, I, V, P = 768, 12, 3072, 21128, 512
    cfg = {"architectures": ["BertModel"], "model_type": "bert", "hidden_size": H,
           "num_hidden_layers": L, "num_attention_heads": 12, "intermediate_size": I,
           "vocab_size": V, "max_position_embeddings": P, "type_vocab_size": 2,
           "layer_norm_eps": 1e-12, "hidden_act": "gelu", "pad_token_id": 0}
    shapes = {"embeddings.word_embeddings.weight": (V, H),
              "embeddings.position_embeddings.weight": (P, H),
              "embeddings.token_type_embeddings.weight": (2, H),
              "embeddings.LayerNorm.weight": (H,), "embeddings.LayerNorm.bias": (H,),
              "pooler.dense.weight": (H, H), "pooler.dense.bias": (H,)}
    for i in range(L):
        pre = f"encoder.layer.{i}."
        for n in ("attention.self.query", "attention.self.key", "attention.self.value",
                  "attention.output.dense"):
            shapes[pre + n + ".weight"], shapes[pre + n + ".bias"] = (H, H), (H,)
        shapes[pre + "intermediate.dense.weight"], shapes[pre + "intermediate.dense.bias"] = (I, H), (I,)
        shapes[pre + "output.dense.weight"], shapes[pre + "output.dense.bias"] = (H, I), (H,)
        for n in ("attention.output.LayerNorm", "output.LayerNorm"):
            shapes[pre + n + ".weight"], shapes[pre + n + ".bias"] = (H,), (H,)
    header, off = {}, 0
    for k, s in shapes.items():
        n = int(np.prod(s)) * 4
        header[k] = {"dtype": "F32", "shape": list(s), "data_offsets": [off, off + n]}
        off += n
    hb = json.dumps(header).encode()
    hb += b" " * (-len(hb) % 8)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(hb)) + hb)
        for k, s in shapes.items():
            if k.endswith("LayerNorm.weight"):
                a = np.ones(s, np.float32)
            elif len(s) == 1:
                a = np.zeros(s, np.float32)
            else:
                a = (rng.standard_normal(s, dtype=np.float32) * 0.02).astype(np.float32)
            f.write(a.tobytes())
    json.dump(cfg, open(os.path.join(d, "config.json"), "w"))
    return cfg


def bench(tmp):
    d = os.path.join(tmp, "bert_base")
    cfg = write_bert_base(d)
    rng = random.Random(5)
    one = os.path.join(tmp, "bench_one.json")
    many = os.path.join(tmp, "bench_many.json")
    json.dump([[2, 100, 3]], open(one, "w"))
    json.dump([[2] + [rng.randint(5, cfg["vocab_size"] - 1) for _ in range(126)] + [3]
               for _ in range(256)], open(many, "w"))
    for device in ("cuda", "cpu"):
        times = {}
        for label, p in (("1 x 3 tokens", one), ("256 x 128 tokens", many)):
            best = None
            for _ in range(2 if device == "cuda" else 1):
                t0 = time.time()
                got, err = embed(d, p, device, "--pooling", "cls")
                dt = time.time() - t0
                if err:
                    fail(f"bench {device} {label}: {err}")
                    break
                best = dt if best is None else min(best, dt)
            times[label] = best
        if None not in times.values():
            fwd = times["256 x 128 tokens"] - times["1 x 3 tokens"]
            print(f"== bench bert-base f32 on {device}: load+1 seq {times['1 x 3 tokens']:.2f} s, "
                  f"load+256x128 {times['256 x 128 tokens']:.2f} s -> forward of 32768 tokens "
                  f"~{fwd:.2f} s ({32768 / max(fwd, 1e-3):.0f} tokens/s)", flush=True)


def main():
    if not probe():
        return 0
    tmp = tempfile.mkdtemp(prefix="inferd-enc-cuda-")
    try:
        run_script("golden on cuda", "tests/encoder/test_golden.py",
                   {"INFERD_EMBED_ARGS": "--device cuda"})
        run_script("golden on cuda, float32 matmuls", "tests/encoder/test_golden.py",
                   {"INFERD_EMBED_ARGS": "--device cuda", "INFERD_CUDA_MATMUL": "f32"})
        gpu_vs_cpu(tmp)
        memcheck(tmp)
        run_script("serve --device cuda: test_http.py", "tests/encoder/test_http.py",
                   {"INFERD_SERVE_ARGS": "--device cuda"})
        run_script("serve --device cuda: test_batching.py", "tests/encoder/test_batching.py",
                   {"INFERD_SERVE_ARGS": "--device cuda", "INFERD_BATCH_TOL": "1e-5"})
        if "--bench" in sys.argv:
            bench(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{failures} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
