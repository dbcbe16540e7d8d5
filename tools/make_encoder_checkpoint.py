#!/usr/bin/env python3
"""Writes a BERT-base-shaped encoder folder with random float32 weights
(numpy only, seeded) for benchmarks: the numbers are meaningless, the sizes
and the layout are bert-base-chinese's (21128 x 768, 12 layers, 3072 MLP).

    tools/make_encoder_checkpoint.py --out DIR [--format bin|safetensors]

`bin` writes pytorch_model.bin in torch.save's zip layout (64-byte aligned
entries, keys with the "bert." prefix and old gamma/beta LayerNorm names, as
the original bert-base-chinese checkpoint has them), using the torch-format
writer of tests/encoder/make_pytorch_files.py; `safetensors` writes
model.safetensors with transformers' current names. Also writes ids.json: 32
sequences of 128 random token ids ([CLS] ... [SEP])."""
import argparse
import collections
import json
import os
import struct
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "encoder"))
import make_pytorch_files as tf  # noqa: E402

H, LAYERS, INTER, VOCAB, POS = 768, 12, 3072, 21128, 512


def shapes(old_names):
    g, b = ("gamma", "beta") if old_names else ("weight", "bias")
    s = collections.OrderedDict()
    s["embeddings.word_embeddings.weight"] = (VOCAB, H)
    s["embeddings.position_embeddings.weight"] = (POS, H)
    s["embeddings.token_type_embeddings.weight"] = (2, H)
    s[f"embeddings.LayerNorm.{g}"] = (H,)
    s[f"embeddings.LayerNorm.{b}"] = (H,)
    for l in range(LAYERS):
        p = f"encoder.layer.{l}."
        for n in ("query", "key", "value"):
            s[p + f"attention.self.{n}.weight"] = (H, H)
            s[p + f"attention.self.{n}.bias"] = (H,)
        s[p + "attention.output.dense.weight"] = (H, H)
        s[p + "attention.output.dense.bias"] = (H,)
        s[p + f"attention.output.LayerNorm.{g}"] = (H,)
        s[p + f"attention.output.LayerNorm.{b}"] = (H,)
        s[p + "intermediate.dense.weight"] = (INTER, H)
        s[p + "intermediate.dense.bias"] = (INTER,)
        s[p + "output.dense.weight"] = (H, INTER)
        s[p + "output.dense.bias"] = (H,)
        s[p + f"output.LayerNorm.{g}"] = (H,)
        s[p + f"output.LayerNorm.{b}"] = (H,)
    s["pooler.dense.weight"] = (H, H)
    s["pooler.dense.bias"] = (H,)
    return s


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--format", choices=("bin", "safetensors"), default="bin")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    rng = np.random.default_rng(a.seed)
    arrays = collections.OrderedDict()
    for name, shape in shapes(a.format == "bin").items():
        v = rng.standard_normal(int(np.prod(shape)), dtype=np.float32) * 0.02
        if name.endswith(("gamma", "LayerNorm.weight")):
            v += 1
        arrays[name] = (shape, v.astype("<f4"))
    if a.format == "bin":
        sd, stor = collections.OrderedDict(), {}
        for i, (name, (shape, v)) in enumerate(arrays.items()):
            stride = (shape[1], 1) if len(shape) == 2 else (1,)
            sd["bert." + name] = tf.T(tf.Ref(str(i), tf.FloatStorage, v.size), 0, shape, stride)
            stor[str(i)] = v.tobytes()
        with open(os.path.join(a.out, "pytorch_model.bin"), "wb") as f:
            f.write(tf.zip_bytes(tf.dumps(sd), stor, prefix="pytorch_model", align=True))
    else:
        header, off = {}, 0
        for name, (shape, v) in arrays.items():
            header[name] = {"dtype": "F32", "shape": list(shape),
                            "data_offsets": [off, off + v.nbytes]}
            off += v.nbytes
        hj = json.dumps(header).encode()
        hj += b" " * (-len(hj) % 8)
        with open(os.path.join(a.out, "model.safetensors"), "wb") as f:
            f.write(struct.pack("<Q", len(hj)) + hj)
            for _, v in arrays.values():
                f.write(v.tobytes())
    cfg = {"architectures": ["BertForMaskedLM"], "model_type": "bert", "vocab_size": VOCAB,
           "hidden_size": H, "num_hidden_layers": LAYERS, "num_attention_heads": 12,
           "intermediate_size": INTER, "max_position_embeddings": POS, "type_vocab_size": 2,
           "layer_norm_eps": 1e-12, "hidden_act": "gelu", "pad_token_id": 0}
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    ids = [[101] + rng.integers(1000, 20000, 126).tolist() + [102] for _ in range(32)]
    with open(os.path.join(a.out, "ids.json"), "w") as f:
        json.dump(ids, f)


if __name__ == "__main__":
    main()
