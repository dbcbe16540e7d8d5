#!/usr/bin/env python3
"""The CUDA backend's kernel switches against the earlier kernels they
replace, in bfloat16 precision (the serving benchmark's), on two random Llama
checkpoints: a narrow one (hidden 512) and a wide one (hidden 2560,
intermediate 5120: the one-row GEMV's items of 2,048 / 1,024 columns split
each row into several, the last one partial). 16 token-id prompts of 9 to 700
tokens are asked one at a time, so every run has the same steps: prompt
chunks of more than 8 rows through the GEMMs, decode steps of one row through
the GEMV. The base is INFERD_CUDA_GEMV=v2 INFERD_CUDA_FUSE=float
INFERD_CUDA_PDL=0 INFERD_CUDA_GEMV_NORM=0 INFERD_CUDA_ATT_ROPE=0 (the kernels
before the defaults became gemv1_kernel, launched early, the bf16-writing
fusions and the folds); each variant below sets its switches on that base.

  INFERD_CUDA_PDL=1      the same kernels launched earlier: bit for bit
  INFERD_CUDA_FUSE=half  the same GEMM inputs, written by the op before: bit for bit
  INFERD_CUDA_GEMV=v3    another summation order in the one-row GEMV: TOL
  INFERD_CUDA_LT=1       other cuBLAS algorithms for the GEMMs: TOL
  none (the default: GEMV=v3 launched early, FUSE=half, the folds)  TOL
  INFERD_CUDA_PDL=0 (the default's kernels, none launched early): TOL
  all four together: TOL
  INFERD_CUDA_GEMV_NORM=0, INFERD_CUDA_ATT_ROPE=0 (the default's folds of the
  RMSNorm / residual add into the GEMV and of rope / KV store into the decode
  attention, each turned off) against the default: bit for bit, and the
  default must report that both kinds of fold ran, each switch that its ran not;
  INFERD_CUDA_GEMV_PF=4 (the GEMV asks L2 for weights early): bit for bit

Bit for bit means the same greedy tokens and identical logprobs; TOL bounds
the logprob difference while the tokens agree (an indexing slip is O(1)).
Needs torch + transformers + a GPU; skips (exit 0) without them.
    INFERD=build/inferd python3 tests/cuda/test_switches.py"""
import os
import random
import re
import shutil
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOK = os.path.join(ROOT, "tests", "fixtures", "models", "llama")
# (hidden, head_dim, query heads, KV heads, intermediate)
SHAPES = ((512, 128, 4, 1, 1024), (2560, 128, 20, 5, 5120))
N_PROMPTS, OUT = 16, 8
TOL = 0.02
BASE = {"INFERD_CUDA_GEMV": "v2", "INFERD_CUDA_FUSE": "float", "INFERD_CUDA_PDL": "0",
        "INFERD_CUDA_GEMV_NORM": "0", "INFERD_CUDA_ATT_ROPE": "0"}
EXACT = {**BASE, "INFERD_CUDA_PDL": "1"}, {**BASE, "INFERD_CUDA_FUSE": "half"}
NEAR = ({**BASE, "INFERD_CUDA_GEMV": "v3"}, {**BASE, "INFERD_CUDA_LT": "1"}, {},
        {"INFERD_CUDA_PDL": "0"},
        {"INFERD_CUDA_PDL": "1", "INFERD_CUDA_FUSE": "half", "INFERD_CUDA_GEMV": "v3",
         "INFERD_CUDA_LT": "1"})
BF16 = ("--matmul-precision", "bfloat16")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cudalib import Compare, ask, make_llama, run, serve, torch  # noqa: E402 (exits 0 without torch or a GPU)

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
        base, = run(d, prompts, (False,), OUT, BF16, BASE)
        strict = [[1.0] * OUT for _ in prompts]
        for env in EXACT + NEAR:
            on_base = BASE.keys() <= env.keys()  # named by what differs from the base
            name = f"hidden {hidden} " + ("+".join(f"{k}={v}" for k, v in env.items()
                                                   if not on_base or BASE.get(k) != v)
                                          or "default")
            got, = run(d, prompts, (False,), OUT, BF16, env)
            if env in EXACT:
                compare(name + " vs base (bit for bit)", got, base, 0.0, strict)
            else:
                compare(name + " vs base", got, base, TOL)
            if not env:
                default = got
        # the default folds ops into fewer launches, with the unfolded ops'
        # arithmetic in their order: bit for bit with each fold turned off; the
        # server's count of folds at exit shows which ran (equal results alone
        # would not)
        for env in ({}, {"INFERD_CUDA_GEMV_NORM": "0"}, {"INFERD_CUDA_ATT_ROPE": "0"},
                    {"INFERD_CUDA_GEMV_PF": "4"}):
            name = f"hidden {hidden} " + ("+".join(f"{k}={v}" for k, v in env.items())
                                          or "default")
            srv = serve(d, BF16, {**env, "INFERD_CUDA_GRAPH_STATS": "1"})
            try:
                got = [ask(srv, p, OUT) for p in prompts]
            finally:
                srv.stop()
                log = srv.stderr()
                os.unlink(srv.log.name)
            if env:
                compare(name + " vs default (bit for bit)", got, default, 0.0, strict)
            m = re.search(r"(\d+) gemv folds run, (\d+) rope attention folds run", log)
            print(name + ":", m.group(0) if m else log[-500:])
            if not m:
                compare.fails += 1
                print("FAIL: no fold counts in the log")
                continue
            gemv, rope = int(m.group(1)), int(m.group(2))
            want = {"INFERD_CUDA_GEMV_NORM": gemv == 0 and rope > 0,
                    "INFERD_CUDA_ATT_ROPE": gemv > 0 and rope == 0}
            if not want.get(next(iter(env), None), gemv > 0 and rope > 0):
                compare.fails += 1
                print(f"FAIL: {name}: {gemv} gemv folds and {rope} rope attention folds ran")
sys.exit(compare.finish())
