#!/usr/bin/env python3
"""Writes a Hugging Face checkpoint of a real model's shape with random bf16
weights (numpy only, seeded), for benchmarks: the numbers are meaningless, the
sizes and the layout are the real ones.

    tools/make_checkpoint.py --shape qwen2.5-0.5b --out DIR [--seed 0] [--fast]

--fast fills every matrix from one pool of 16M random values at random
offsets instead of drawing each value (an 8B shape in seconds, not minutes;
still random data, never zeros).
"""
import argparse
import json
import os
import struct

import numpy as np

SHAPES = {
    "qwen2.5-0.5b": dict(architectures=["Qwen2ForCausalLM"], model_type="qwen2",
                         vocab_size=151936, hidden_size=896, intermediate_size=4864,
                         num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                         max_position_embeddings=32768, rms_norm_eps=1e-6,
                         rope_theta=1000000.0, tie_word_embeddings=True, bias=True),
    "llama-3.1-8b": dict(architectures=["LlamaForCausalLM"], model_type="llama",
                         vocab_size=128256, hidden_size=4096, intermediate_size=14336,
                         num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                         max_position_embeddings=131072, rms_norm_eps=1e-5,
                         rope_theta=500000.0, tie_word_embeddings=False, bias=False,
                         rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0,
                                           high_freq_factor=4.0,
                                           original_max_position_embeddings=8192)),
}


POOL = None


def bf16(rng, shape, std=0.02, const=None):
    if POOL is not None and const is None:
        n = int(np.prod(shape))
        start = int(rng.integers(0, POOL.size))
        reps = (start + n + POOL.size - 1) // POOL.size
        return np.tile(POOL, reps)[start:start + n].reshape(shape) if reps > 1 else \
            POOL[start:start + n].reshape(shape).copy()
    if const is not None:
        x = np.full(shape, const, dtype=np.float32)
    else:
        x = (rng.standard_normal(shape, dtype=np.float32) * std)
    u = x.view(np.uint32)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return u.astype(np.uint16)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", choices=sorted(SHAPES), required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fast", action="store_true")
    a = ap.parse_args()
    s = dict(SHAPES[a.shape])
    bias = s.pop("bias")
    rng = np.random.default_rng(a.seed)
    if a.fast:
        global POOL
        POOL = bf16(rng, (1 << 24,))
    hid, inter, hd = s["hidden_size"], s["intermediate_size"], s["hidden_size"] // s["num_attention_heads"]
    qd, kvd = s["num_attention_heads"] * hd, s["num_key_value_heads"] * hd
    tensors = {"model.embed_tokens.weight": bf16(rng, (s["vocab_size"], hid)),
               "model.norm.weight": bf16(rng, (hid,), const=1.0)}
    if not s["tie_word_embeddings"]:
        tensors["lm_head.weight"] = bf16(rng, (s["vocab_size"], hid))
    for i in range(s["num_hidden_layers"]):
        p = f"model.layers.{i}."
        tensors[p + "input_layernorm.weight"] = bf16(rng, (hid,), const=1.0)
        tensors[p + "post_attention_layernorm.weight"] = bf16(rng, (hid,), const=1.0)
        for name, shape in (("q_proj", (qd, hid)), ("k_proj", (kvd, hid)), ("v_proj", (kvd, hid))):
            tensors[p + f"self_attn.{name}.weight"] = bf16(rng, shape)
            if bias:
                tensors[p + f"self_attn.{name}.bias"] = bf16(rng, (shape[0],))
        tensors[p + "self_attn.o_proj.weight"] = bf16(rng, (hid, qd))
        tensors[p + "mlp.gate_proj.weight"] = bf16(rng, (inter, hid))
        tensors[p + "mlp.up_proj.weight"] = bf16(rng, (inter, hid))
        tensors[p + "mlp.down_proj.weight"] = bf16(rng, (hid, inter))
    os.makedirs(a.out, exist_ok=True)
    header, off = {}, 0
    for name, t in tensors.items():
        header[name] = {"dtype": "BF16", "shape": list(t.shape), "data_offsets": [off, off + t.nbytes]}
        off += t.nbytes
    hj = json.dumps(header, separators=(",", ":")).encode()
    hj += b" " * ((8 - len(hj) % 8) % 8)
    with open(os.path.join(a.out, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(hj)))
        f.write(hj)
        for t in tensors.values():
            t.tofile(f)
    cfg = dict(s, torch_dtype="bfloat16", hidden_act="silu", bos_token_id=None, eos_token_id=0)
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    print(f"wrote {a.out}: {sum(t.size for t in tensors.values()) / 1e6:.1f}M parameters")


if __name__ == "__main__":
    main()
