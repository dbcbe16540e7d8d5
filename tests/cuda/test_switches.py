#!/usr/bin/env python3
"""The CUDA backend's switches that turn a default optimisation off, each
against the default, in bfloat16 precision (the serving benchmark's), on two
random Llama checkpoints: a narrow one (hidden 512) and a wide one (hidden
2560, intermediate 5120: the one-row GEMV's items of 2,048 / 1,024 columns
split each row into several, the last one partial). 16 token-id prompts of
9 to 700 tokens are asked one at a time, so every run has the same steps:
prompt chunks of more than 8 rows through the GEMMs, decode steps of one row
through the GEMV (docs/cuda.md has the switches).

Bit for bit (the same greedy tokens and identical logprobs): each runs the
default's kernels with the default's arithmetic in the same order.
  INFERD_CUDA_PDL=0        gemv1_kernel not launched early
  INFERD_CUDA_GRAPH=0      decode steps run op by op, not replayed as graphs
  INFERD_CUDA_FUSE=float   RMSNorm and SiLU·mul write float32 and a conversion
                           feeds the GEMMs (the same GEMM inputs)
  INFERD_CUDA_GEMV_NORM=0  the RMSNorm and the residual add not folded into
                           the one-row GEMV
  INFERD_CUDA_ATT_ROPE=0   rope and the KV store not folded into the decode
                           attention
  INFERD_CUDA_GEMM=bf16    under --matmul-precision bfloat16, the same GEMMs
  the removed switches (INFERD_CUDA_LT=1, INFERD_CUDA_GEMV_PF=4,
  INFERD_CUDA_GEMV=v2, INFERD_CUDA_GQA=0, INFERD_CUDA_PDL=1): ignored now
Within TOL while the tokens agree (another summation order; an indexing slip
is O(1)):
  INFERD_CUDA_FUSE=0       no fused launches (gate and up as two GEMVs)
Every run also reports at exit (INFERD_CUDA_GRAPH_STATS=1) which of CUDA
graphs, GEMV folds and rope attention folds ran: the default all three, and
each switch all but the one it turns off (FUSE=0 both folds) — equal results
alone would pass if a fold never applied.
Needs torch + transformers + a GPU; skips (exit 0) without them.
    INFERD=build/inferd python3 tests/cuda/test_switches.py"""
import os
import random
import shutil
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOK = os.path.join(ROOT, "tests", "fixtures", "models", "llama")
# (hidden, head_dim, query heads, KV heads, intermediate)
SHAPES = ((512, 128, 4, 1, 1024), (2560, 128, 20, 5, 5120))
N_PROMPTS, OUT = 16, 8
TOL = 0.02
REMOVED = {"INFERD_CUDA_LT": "1", "INFERD_CUDA_GEMV_PF": "4", "INFERD_CUDA_GEMV": "v2",
           "INFERD_CUDA_GQA": "0", "INFERD_CUDA_PDL": "1"}
EXACT = ({"INFERD_CUDA_PDL": "0"}, {"INFERD_CUDA_GRAPH": "0"}, {"INFERD_CUDA_FUSE": "float"},
         {"INFERD_CUDA_GEMV_NORM": "0"}, {"INFERD_CUDA_ATT_ROPE": "0"},
         {"INFERD_CUDA_GEMM": "bf16"}, REMOVED)
NEAR = ({"INFERD_CUDA_FUSE": "0"},)
# (graphs captured, GEMV folds, rope attention folds) a run must report; the default's otherwise
RAN = {"INFERD_CUDA_GRAPH=0": (False, True, True), "INFERD_CUDA_GEMV_NORM=0": (True, False, True),
       "INFERD_CUDA_ATT_ROPE=0": (True, True, False), "INFERD_CUDA_FUSE=0": (True, False, False)}
BF16 = ("--matmul-precision", "bfloat16")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cudalib import Compare, make_llama, run_stats, torch  # noqa: E402 (exits 0 without torch or a GPU)


def ran_ok(name, want, stats, line):
    """Whether the counts at exit show what should have run; prints them."""
    print(f"{name}: {line}", flush=True)
    if stats is None:
        print(f"FAIL {name}: no graph and fold counts in the log")
        return False
    got = (stats["captured"] > 0, stats["gemv_folds"] > 0, stats["rope_folds"] > 0)
    if got != want:
        print(f"FAIL {name}: (graphs, gemv folds, rope attention folds) ran {got}, want {want}")
        return False
    return True


compare = Compare(0.0)  # with margins given, any token that differs fails
with tempfile.TemporaryDirectory() as tmp:
    for hidden, hd, heads, kv, inter in SHAPES:
        d = os.path.join(tmp, f"m{hidden}")
        make_llama(d, hidden, hidden_size=hidden, num_attention_heads=heads,
                   num_key_value_heads=kv, head_dim=hd, intermediate_size=inter,
                   vocab_size=512, bos_token_id=1, eos_token_id=2)
        for f in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(os.path.join(TOK, f), d)
        torch.cuda.empty_cache()
        rng = random.Random(hidden)
        lens = [9, 16, 64, 129, 511, 700]
        lens += [rng.randrange(9, 700) for _ in range(N_PROMPTS - len(lens))]
        prompts = [[rng.randrange(3, 512) for _ in range(n)] for n in lens]
        strict = [[1.0] * OUT for _ in prompts]
        default, stats, line = run_stats(d, prompts, OUT, BF16)
        if not ran_ok(f"hidden {hidden} default", (True, True, True), stats, line):
            compare.fails += 1
        for env in EXACT + NEAR:
            key = "+".join(f"{k}={v}" for k, v in env.items())
            name = f"hidden {hidden} " + ("removed switches" if env is REMOVED else key)
            got, stats, line = run_stats(d, prompts, OUT, BF16, env)
            if env in EXACT:
                compare(name + " vs default (bit for bit)", got, default, 0.0, strict)
            else:
                compare(name + " vs default", got, default, TOL)
            if not ran_ok(name, RAN.get(key, (True, True, True)), stats, line):
                compare.fails += 1
sys.exit(compare.finish())
