"""What the GPU tests share: the skip when torch, transformers or a GPU is
missing, small random Llama checkpoints, `inferd serve` on the GPU with
greedy token-id requests, the counts the CUDA backend prints at exit
(INFERD_CUDA_GRAPH_STATS=1), and the position-by-position logprob
comparison."""
import os
import re
import sys
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "server"))
from serverlib import Server  # noqa: E402

try:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
except ImportError:
    print("skip: no torch/transformers")
    sys.exit(0)
if not torch.cuda.is_available():
    print("skip: no GPU")
    sys.exit(0)


def make_llama(dirname, seed, **config):
    """A random 2-layer Llama saved in bf16 to dirname (config: LlamaConfig
    fields over these defaults); returns it reloaded in float32 on the GPU."""
    torch.manual_seed(seed)
    cfg = dict(intermediate_size=1024, num_hidden_layers=2, max_position_embeddings=4096,
               initializer_range=0.1, rope_theta=10000.0, tie_word_embeddings=False)
    cfg.update(config)
    LlamaForCausalLM(LlamaConfig(**cfg)).to(torch.bfloat16).save_pretrained(
        dirname, safe_serialization=True)
    # Reloaded, not cast back: .to(bfloat16) also rounds the rotary inv_freq
    # buffer, and a reference with bf16 rope frequencies drifts with position.
    return LlamaForCausalLM.from_pretrained(dirname, dtype=torch.float32).cuda().eval()


def serve(model, args=(), env=None):
    """tests/server/serverlib's `inferd serve` on the GPU, with these tests' limits."""
    return Server(model_dir=model, env=env, args=(
        "--device", "cuda", "--max-model-len", "1024", "--max-num-batched-tokens", "512",
        "--kv-cache-memory", "1GiB", "--disable-log-requests", *args))


def ask(srv, ids, max_tokens):
    """Greedy tokens and their logprobs for a token-id prompt."""
    r = srv.post("/v1/completions", {
        "model": "tiny", "prompt": ids, "max_tokens": max_tokens, "temperature": 0,
        "ignore_eos": True, "logprobs": 1, "return_tokens_as_token_ids": True}, timeout=300)
    if r.status_code != 200:
        raise SystemExit(f"request failed: {r.status_code} {r.text[:500]}")
    lp = r.json()["choices"][0]["logprobs"]
    toks = [int(t.split(":", 1)[1]) for t in lp["tokens"]]
    return toks, lp["token_logprobs"]


def run(model, prompts, modes, max_tokens, args=(), env=None):
    """Every prompt's (tokens, logprobs) for each mode in turn, from one
    server: False asks one prompt at a time, True all at once."""
    srv = serve(model, args, env)
    try:
        out = []
        for together in modes:
            if not together:
                out.append([ask(srv, p, max_tokens) for p in prompts])
                continue
            with ThreadPoolExecutor(len(prompts)) as ex:
                out.append(list(ex.map(lambda p: ask(srv, p, max_tokens), prompts)))
        return out
    finally:
        srv.stop()
        os.unlink(srv.log.name)


# backend/cuda/backend.cu's line at exit under INFERD_CUDA_GRAPH_STATS=1
STATS = re.compile(r"cuda graphs: (\d+) captured, (\d+) launches; (\d+) gemv folds run, "
                   r"(\d+) rope attention folds run")


def run_stats(model, prompts, max_tokens, args=(), env=None):
    """Every prompt's (tokens, logprobs), one prompt at a time, from a server
    run with INFERD_CUDA_GRAPH_STATS=1, and what it counted at exit: a dict of
    captured, launches (CUDA graphs), gemv_folds and rope_folds (the fused
    launches that ran), or None with the log's tail when the line is missing."""
    srv = serve(model, args, {**(env or {}), "INFERD_CUDA_GRAPH_STATS": "1"})
    try:
        got = [ask(srv, p, max_tokens) for p in prompts]
    finally:
        srv.stop()
        log = srv.stderr()
        os.unlink(srv.log.name)
    m = STATS.search(log)
    if not m:
        return got, None, log[-500:]
    return got, dict(zip(("captured", "launches", "gemv_folds", "rope_folds"),
                         map(int, m.groups()))), m.group(0)


class Compare:
    """Counts failures and keeps the largest difference per comparison."""

    def __init__(self, margin):
        self.margin, self.fails, self.worst = margin, 0, {}

    def __call__(self, key, a, b, tol, margins=None):
        """a, b: lists of (tokens, logprobs); compared while the tokens agree. A
        token that differs fails where the reference's top-2 margin is at least
        self.margin (margins given); a logprob that differs by more than tol fails."""
        for i, ((ta, la), (tb, lb)) in enumerate(zip(a, b)):
            for j in range(min(len(ta), len(tb))):
                if ta[j] != tb[j]:
                    if margins is not None and margins[i][j] >= self.margin:
                        self.fails += 1
                        print(f"FAIL {key}: prompt {i} token {j}: {ta[j]} vs {tb[j]} "
                              f"(reference margin {margins[i][j]:.3f})", flush=True)
                    break
                d = abs(la[j] - lb[j])
                self.worst[key] = max(self.worst.get(key, 0.0), d)
                if d > tol:
                    self.fails += 1
                    print(f"FAIL {key}: prompt {i} token {j}: logprob {la[j]:.4f} vs "
                          f"{lb[j]:.4f} (tolerance {tol})", flush=True)
                    break

    def finish(self):
        """Prints the largest differences and the verdict; the exit status."""
        for k, v in self.worst.items():
            print(f"{k}: max |logprob diff| = {v:.5f}")
        print("FAIL" if self.fails else "ok", f"({self.fails} failures)")
        return 1 if self.fails else 0
