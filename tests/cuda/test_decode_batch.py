#!/usr/bin/env python3
"""Decode on the GPU in batches, the way `inferd serve` runs it, against
transformers and against one request at a time. The golden fixtures' models
have head_dim 16 and 32 and `generate` decodes one row per step, so neither
reaches the kernels serving depends on: the tiled decode attention (head_dim
64 and 128, 1, 2, 4 or 8 query heads per KV head, split-KV with its merge),
decode rows of a step that also carries prompt chunks (a row list into the
same kernel), and the batched GEMMs of decode steps above 8 rows (q/k/v and
gate/up sharing one bf16 conversion of their input in bfloat16 mode).

For each of three small random Llama checkpoints (bf16 weights; shapes in
SHAPES) it starts `inferd serve --device cuda`, and for 24 token-id prompts
of 1 to 700 tokens asks greedy /v1/completions with logprobs
(`return_tokens_as_token_ids`, so each logprob names its token id):
  single   one request at a time: decode steps of one row
  batch    all 24 at once: decode steps of up to 24 rows, and steps that
           mix prompt chunks (--max-num-batched-tokens 512) with decode rows
  split    one at a time with INFERD_CUDA_ATT=split (the earlier
           one-key-at-a-time split-KV kernel: same bf16 cache, same math)
  bf16     all at once with --matmul-precision bfloat16
and compares, position by position while the greedy tokens agree:
  transformers (float32, teacher-forced on single's tokens) vs single: TOL_REF
  single vs split (the kernel against its predecessor): TOL_KERNEL
  single vs batch (batched GEMMs and attention rows vs one row): TOL_BATCH
  bf16 vs transformers: TOL_BF16
and that every request's greedy tokens match single's up to the first
position whose top-2 margin (from the reference) is below MARGIN.
Needs torch + transformers + a GPU; skips (exit 0) without them.
    INFERD=build/inferd python3 tests/cuda/test_decode_batch.py"""
import os
import random
import shutil
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOK = os.path.join(ROOT, "tests", "fixtures", "models", "llama")
# (head_dim, query heads, KV heads): groups of 4, 8 and 1
SHAPES = ((128, 4, 1), (64, 8, 1), (64, 8, 8))
N_PROMPTS, OUT = 24, 12
TOL_REF = 0.12    # the bf16 KV cache on these amplifying models (test_prefill_mma.py)
TOL_KERNEL = 0.01  # two attention kernels over the same bf16 cache
# batched GEMMs (split bf16, ~float32) vs the one-row GEMV, and prompts
# chunked at other places (a one-row chunk goes through the decode kernel):
# 0.0005-0.0105 measured on an H200 (2026-12-04); an indexing slip is O(1)
TOL_BATCH = 0.03
TOL_BF16 = 0.3     # activations rounded to bf16 for every product
MARGIN = 0.2

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cudalib import Compare, make_llama, run, torch  # noqa: E402 (exits 0 without torch or a GPU)


def make(dirname, hd, heads, kv):
    model = make_llama(dirname, hd * 100 + heads * 10 + kv, hidden_size=hd * heads,
                       num_attention_heads=heads, num_key_value_heads=kv, head_dim=hd,
                       vocab_size=512, bos_token_id=1, eos_token_id=2)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(TOK, f), dirname)
    return model


def reference(model, prompt, toks):
    """float32 logprobs of toks[i] after prompt + toks[:i], and the top-2 margins."""
    ids = torch.tensor([prompt + toks], device="cuda")
    with torch.no_grad():
        lp = torch.log_softmax(model(ids).logits[0].double(), -1)
    n = len(prompt)
    out, margins = [], []
    for i, t in enumerate(toks):
        row = lp[n - 1 + i]
        top = torch.topk(row, 2).values
        out.append(float(row[t]))
        margins.append(float(top[0] - top[1]))
    return out, margins


compare = Compare(MARGIN)
with tempfile.TemporaryDirectory() as tmp:
    for hd, heads, kv in SHAPES:
        name = f"hd{hd} {heads}/{kv}"
        d = os.path.join(tmp, f"m{hd}_{heads}_{kv}")
        model = make(d, hd, heads, kv)
        rng = random.Random(hd + heads + kv)
        lens = [1, 2, 31, 32, 33, 64, 127, 128, 129, 300, 511, 700]
        lens += [rng.randrange(1, 700) for _ in range(N_PROMPTS - len(lens))]
        prompts = [[rng.randrange(3, 512) for _ in range(n)] for n in lens]
        single, batch = run(d, prompts, (False, True), OUT)
        split, = run(d, prompts, (False,), OUT, env={"INFERD_CUDA_ATT": "split"})
        bf16, = run(d, prompts, (True,), OUT, ("--matmul-precision", "bfloat16"))
        refs = [reference(model, p, t) for p, (t, _) in zip(prompts, single)]
        ref = [(t, r[0]) for (t, _), r in zip(single, refs)]
        margins = [r[1] for r in refs]
        compare(f"{name} single vs transformers", single, ref, TOL_REF)
        compare(f"{name} single vs split kernel", single, split, TOL_KERNEL, margins)
        compare(f"{name} batch vs single", batch, single, TOL_BATCH, margins)
        compare(f"{name} bf16 batch vs transformers", bf16, ref, TOL_BF16)
        del model
        torch.cuda.empty_cache()
sys.exit(compare.finish())
