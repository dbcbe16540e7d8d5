#!/usr/bin/env python3
"""Golden fixtures for the model loader and CPU forward pass (issue 3).

Runs on the GPU machine, which has torch, transformers and tokenizers:

    python3 tools/golden/model_golden.py --corpus .cache/golden/brown.txt --out DIR

For each architecture it makes a tiny randomly initialised checkpoint
(seeded), saves it with save_pretrained as bf16 safetensors, and then computes
the references FROM THE SAVED FILES, loaded as a user loads them
(from_pretrained(dir, dtype=float32)): never by casting the in-memory model,
which would also round the rotary inv_freq buffer to bf16.

Writes DIR/models/<name>/ (a complete Hugging Face folder, with a small
byte-level BPE tokenizer trained here so servers can use the checkpoints too)
and DIR/model_golden/<name>.json with, for prompts of 5, 40 and 300 tokens:
the float32 log-softmax of the next token over the whole vocabulary and a
24-token greedy continuation with the top-2 logit margin of each step.
"""
import argparse
import json
import os
import random

import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoModelForCausalLM

VOCAB = 512
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
          "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")

BASE = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
            rms_norm_eps=1e-6, initializer_range=0.25)

# name -> (architecture, extra config, rope theta, rope scaling, how it is saved)
FIXTURES = {
    "llama": ("LlamaForCausalLM", {}, 10000.0, None, {}),
    "llama31": ("LlamaForCausalLM", {}, 500000.0,
                dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0,
                     high_freq_factor=4.0, original_max_position_embeddings=64),
                {"style4": True}),
    "qwen2": ("Qwen2ForCausalLM", dict(tie_word_embeddings=True), 1000000.0, None,
              {"shard": "60KB"}),
    "qwen2_yarn": ("Qwen2ForCausalLM", {}, 10000.0,
                   dict(rope_type="yarn", factor=4.0, original_max_position_embeddings=128),
                   {}),
    "qwen3": ("Qwen3ForCausalLM", dict(head_dim=32), 1000000.0, None, {}),
    "mistral": ("MistralForCausalLM", dict(sliding_window=None), 10000.0,
                dict(rope_type="linear", factor=2.0), {}),
}
PROMPT_LENS = [5, 40, 300]
STEPS = 24


def make_tokenizer(corpus_path, out_dir):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train([corpus_path], trainer)
    assert tok.get_vocab_size() <= VOCAB, tok.get_vocab_size()
    tok.save(os.path.join(out_dir, "tokenizer.json"))
    cfg = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": None,
           "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
           "unk_token": None, "model_max_length": 1024, "chat_template": CHATML}
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
        json.dump(cfg, f, indent=2, ensure_ascii=False)
    return tok


def make_config(cls, kw, theta, scaling):
    """transformers 5 keeps rope settings in rope_parameters; 4.x in rope_theta
    and rope_scaling. Build whichever this transformers understands, and check."""
    rp = dict(scaling or {"rope_type": "default"}, rope_theta=theta)
    cfg = cls(**kw, rope_parameters=rp)
    got = getattr(cfg, "rope_parameters", None)
    if isinstance(got, dict) and got.get("rope_theta") == theta and \
            got.get("rope_type") == rp["rope_type"]:
        return cfg
    cfg = cls(**kw, rope_theta=theta, rope_scaling=scaling)
    assert cfg.rope_theta == theta
    return cfg


def randomize(model, seed):
    """Random init is mostly std-0.25 normal; make norms and biases random too,
    so a loader that drops them produces different numbers."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
            elif "norm" in name:
                p.copy_(1.0 + torch.randn(p.shape, generator=g) * 0.2)


def to_style4(path):
    """Rewrite a saved config.json in transformers 4.x style: rope_theta at top
    level, rope_scaling instead of rope_parameters, torch_dtype instead of dtype."""
    with open(path) as f:
        c = json.load(f)
    rp = c.pop("rope_parameters", None) or {}
    c["rope_theta"] = rp.pop("rope_theta", c.get("rope_theta", 10000.0))
    if rp.get("rope_type", "default") != "default":
        c["rope_scaling"] = rp
    if "dtype" in c:
        c["torch_dtype"] = c.pop("dtype")
    c["transformers_version"] = "4.46.0"
    with open(path, "w") as f:
        json.dump(c, f, indent=2)


@torch.no_grad()
def reference(model_dir, prompts):
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.eval()
    out = []
    for ids in prompts:
        x = torch.tensor([ids])
        res = model(input_ids=x, use_cache=True)
        logits = res.logits[0, -1].float()
        first_lp = torch.log_softmax(logits.double(), -1)
        pkv = res.past_key_values
        greedy, margins = [], []
        for _ in range(STEPS):
            top2 = torch.topk(logits, 2)
            nxt = int(top2.indices[0])
            greedy.append(nxt)
            margins.append(float(top2.values[0] - top2.values[1]))
            res = model(input_ids=torch.tensor([[nxt]]), past_key_values=pkv, use_cache=True)
            pkv = res.past_key_values
            logits = res.logits[0, -1].float()
        out.append({"prompt": ids, "logprobs": [float(v) for v in first_lp],
                    "greedy": greedy, "margins": margins})
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.manual_seed(0)
    os.makedirs(os.path.join(args.out, "model_golden"), exist_ok=True)
    tok_dir = os.path.join(args.out, "tokenizer")
    os.makedirs(tok_dir, exist_ok=True)
    make_tokenizer(args.corpus, tok_dir)
    rng = random.Random(1234)
    prompts = [[rng.randrange(VOCAB) for _ in range(n)] for n in PROMPT_LENS]
    for i, (name, (arch, extra, theta, scaling, how)) in enumerate(FIXTURES.items()):
        cfg_cls = getattr(transformers, arch.replace("ForCausalLM", "Config"))
        cfg = make_config(cfg_cls, dict(**BASE, **extra, architectures=[arch],
                                         bos_token_id=None, eos_token_id=2, pad_token_id=0),
                          theta, scaling)
        torch.manual_seed(100 + i)
        model = getattr(transformers, arch)(cfg)
        randomize(model, 200 + i)
        model = model.to(torch.bfloat16)
        d = os.path.join(args.out, "models", name)
        kw = {"max_shard_size": how["shard"]} if "shard" in how else {}
        model.save_pretrained(d, safe_serialization=True, **kw)
        for f in ("tokenizer.json", "tokenizer_config.json"):
            with open(os.path.join(tok_dir, f)) as src, open(os.path.join(d, f), "w") as dst:
                dst.write(src.read())
        if how.get("style4"):
            to_style4(os.path.join(d, "config.json"))
        ref = reference(d, prompts)
        with open(os.path.join(args.out, "model_golden", name + ".json"), "w") as f:
            json.dump({"model": name, "architecture": arch,
                       "torch": torch.__version__, "transformers": transformers.__version__,
                       "cases": ref}, f)
        with open(os.path.join(d, "config.json")) as f:
            print(f.read())
        print(name, "files:", sorted(os.listdir(d)),
              "min margin:", min(min(c["margins"]) for c in ref),
              "top1:", [max(range(VOCAB), key=lambda t: c["logprobs"][t]) for c in ref])


if __name__ == "__main__":
    main()
