"""`inferd serve --device`: auto is the default and picks cuda only when this
build has CUDA and a device opens, else cpu, and says which at start. On a
machine without a GPU (where the suite runs) the default and --device auto
resolve to cpu; --device cuda still fails with a message that names CUDA;
an unknown device lists the choices; generate takes auto too."""
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from serverlib import INFERD, MODELS, Server, check, finish  # noqa: E402

GPU_ARGS = "--device" in os.environ.get("INFERD_SERVE_ARGS", "")


def serve_fails(*args):
    p = subprocess.run([INFERD, "serve", f"{MODELS}/qwen3", "--host", "127.0.0.1", "--port", "0",
                        "--kv-cache-memory", "64MiB", *args], capture_output=True, text=True,
                       timeout=60)
    return p.returncode, p.stderr


help_text = subprocess.run([INFERD, "serve", "--help"], capture_output=True, text=True).stdout
check("serve --help documents --device auto as the default", "auto (default)" in help_text,
      [l for l in help_text.splitlines() if "--device" in l])

if not GPU_ARGS:
    for args in ((), ("--device", "auto")):
        with Server(args=args) as s:
            r = s.post("/v1/completions", {"model": "tiny", "prompt": "Hi", "max_tokens": 2})
            check(f"serve {' '.join(args) or '(no --device)'} answers", r.status_code == 200, r.text)
            err = s.stderr()
            check(f"serve {' '.join(args) or '(no --device)'} says it chose the cpu and why",
                  "device: cpu (--device auto:" in err, err[-800:])
            check("server exits 0", s.stop() == 0)

if not GPU_ARGS:
    rc, err = serve_fails("--device", "cuda")
    check("--device cuda fails clearly without CUDA", rc != 0 and "CUDA" in err, (rc, err[-600:]))
rc, err = serve_fails("--device", "tpu")
check("an unknown device fails and lists the choices",
      rc != 0 and "unknown device 'tpu' (available: auto, cpu" in err, (rc, err[-600:]))

p = subprocess.run([INFERD, "generate", "--model", f"{MODELS}/qwen3", "--prompt-ids", "1,2,3",
                    "--max-tokens", "2", "--device", "auto", "--threads", "2"],
                   capture_output=True, text=True, timeout=60)
check("generate --device auto runs", p.returncode == 0, p.stderr[-600:])
finish()
