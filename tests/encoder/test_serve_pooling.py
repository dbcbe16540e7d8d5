#!/usr/bin/env python3
"""`inferd serve --pooling` and `--pooler-config` on an encoder: the vectors of
/v1/embeddings over HTTP equal `inferd embed --pooling X` on the same ids,
overriding the folder's sentence-transformers pooling (mean for xlmr_st);
bad values and the flags on a causal LM fail with a message."""
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "server"))
from serverlib import INFERD, MODELS, Server, check, finish  # noqa: E402

MODEL = "tests/fixtures/encoder/models/xlmr_st"
IDS = [[0, 581, 109, 2], [0, 353, 47, 9, 131, 2]]
TOL = 1e-5


def embed(*flags):
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(IDS, f)
    out = subprocess.run([INFERD, "embed", MODEL, "--ids-json", f.name, "--threads", "2", *flags],
                         capture_output=True, text=True, timeout=60)
    os.unlink(f.name)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)["embeddings"]


def served(args):
    with Server(model_dir=MODEL, args=args) as s:
        r = s.post("/v1/embeddings", {"model": "tiny", "input": IDS})
        check(f"serve {' '.join(args)}: /v1/embeddings answers", r.status_code == 200, r.text[:300])
        check("server exits 0", s.stop() == 0)
        return [d["embedding"] for d in r.json()["data"]] if r.status_code == 200 else None


def close(a, b):
    return a is not None and len(a) == len(b) and all(
        len(x) == len(y) and max(abs(p - q) for p, q in zip(x, y)) < TOL for x, y in zip(a, b))


default = embed()
for args, flags in [(["--pooling", "cls"], ["--pooling", "cls"]),
                    (["--pooling", "last"], ["--pooling", "last"]),
                    (["--pooler-config", '{"pooling_type": "CLS", "normalize": true}'],
                     ["--pooling", "cls", "--normalize"]),
                    (["--pooler-config", '{"pooling_type": "MEAN", "normalize": false}'],
                     ["--pooling", "mean", "--no-normalize"])]:
    want = embed(*flags)
    got = served(args)
    check(f"serve {' '.join(args)} == embed {' '.join(flags)}", close(got, want),
          (got and got[0][:4], want[0][:4]))
check("cls pooling differs from the folder's mean (the override matters)",
      not close(embed("--pooling", "cls"), default))


def serve_fails(model_dir, *args):
    p = subprocess.run([INFERD, "serve", model_dir, "--host", "127.0.0.1", "--port", "0",
                        "--kv-cache-memory", "64MiB", "--device", "cpu", *args],
                       capture_output=True, text=True, timeout=60)
    return p.returncode, p.stderr


rc, err = serve_fails(MODEL, "--pooling", "max")
check("--pooling max is refused with the choices", rc != 0 and "cls, mean, last" in err, err[-400:])
rc, err = serve_fails(MODEL, "--pooler-config", '{"pooling_type": "STEP"}')
check("--pooler-config with an unsupported pooling_type is refused", rc != 0 and "STEP" in err,
      err[-400:])
rc, err = serve_fails(MODEL, "--pooler-config", "{not json")
check("--pooler-config that is not JSON is refused", rc != 0 and "--pooler-config" in err, err[-400:])
rc, err = serve_fails(f"{MODELS}/qwen3", "--pooling", "mean")
check("--pooling on a causal LM is refused", rc != 0 and "encoder" in err, err[-400:])
finish()
