#!/usr/bin/env python3
"""Golden fixtures for encoder models (issue 11). Runs on the GPU machine,
which has torch and transformers:

    python3 tools/golden/encoder_texts.py --out .cache/encoder      # here, no torch
    python3 tools/golden/encoder_golden.py --inputs .cache/encoder --out DIR

Makes tiny randomly initialised (seeded) checkpoints as the hubs publish them
and computes the references FROM THE SAVED FILES, loaded back as a user
loads them:

  models/bert          BertModel, model.safetensors + vocab.txt + tokenizer files
  models/bert_f16_bin  the same weights as a float16 pytorch_model.bin only
  models/xlmr_st       XLMRobertaModel + sentence-transformers files (mean pooling,
                       Normalize)
  models/bert_cls_bin  BertForSequenceClassification (2 labels, id2label 不相似/相似)
                       as ONLY pytorch_model.bin (with the int64 position_ids buffer
                       old checkpoints carry) + config.json + vocab.txt + a ModelScope
                       configuration.json (task sentence-similarity)
  models/xlmr_rerank   XLMRobertaForSequenceClassification, 1 label (cross-encoder)
  torch/views.bin, torch/views_legacy.bin   torch.save of views (transposed,
                       offset, strided, shared storage), f16/bf16/int64, 0-d, empty;
                       zip and legacy formats; values in golden/views.json
  golden/<model>.json  inputs (token ids, token types) and references: CLS, masked
                       mean and pooler_output vectors / logits, computed on a PADDED
                       batch with attention masks
  golden/bert_tokenizer.json  BertTokenizer ids of every text in texts.json for four
                       settings (lower-case, cased, no Chinese split, accents kept) and
                       of sentence pairs (with token_type_ids)

Everything is written under DIR and packed into DIR/encoder_golden.tar.gz.
"""
import argparse
import collections
import json
import os
import shutil
import sys
import tarfile
import traceback

import torch
import transformers
from transformers import (BertConfig, BertForSequenceClassification, BertModel,
                          XLMRobertaConfig, XLMRobertaForSequenceClassification,
                          XLMRobertaModel)

LOG = []


def log(*a):
    msg = " ".join(str(x) for x in a)
    LOG.append(msg)
    print(msg, flush=True)


def perturb(model, seed):
    """Random init gives LayerNorm weight 1 / bias 0 and zero biases, which
    would hide bugs in those terms; make every parameter matter."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm" in name and name.endswith("weight"):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))


def vec(t):
    return [float(x) for x in t.reshape(-1).tolist()]


def run_padded(model, seqs, pad_id, want_types):
    n = max(len(s["input_ids"]) for s in seqs)
    ids = torch.full((len(seqs), n), pad_id, dtype=torch.long)
    tt = torch.zeros((len(seqs), n), dtype=torch.long)
    mask = torch.zeros((len(seqs), n), dtype=torch.long)
    for i, s in enumerate(seqs):
        L = len(s["input_ids"])
        ids[i, :L] = torch.tensor(s["input_ids"])
        mask[i, :L] = 1
        if want_types and "token_type_ids" in s:
            tt[i, :L] = torch.tensor(s["token_type_ids"])
    kw = dict(input_ids=ids, attention_mask=mask)
    if want_types:
        kw["token_type_ids"] = tt
    with torch.no_grad():
        return model(**kw), mask


def encoder_refs(model, seqs, pad_id, want_types=True):
    out, mask = run_padded(model, seqs, pad_id, want_types)
    h = out.last_hidden_state
    m = mask.unsqueeze(-1).float()
    mean = (h * m).sum(1) / m.sum(1)
    ref = {"cls": [vec(h[i, 0]) for i in range(len(seqs))],
           "mean": [vec(mean[i]) for i in range(len(seqs))],
           "mean_normalized": [vec(torch.nn.functional.normalize(mean, dim=-1)[i])
                               for i in range(len(seqs))],
           "last": [vec(h[i, len(s["input_ids"]) - 1]) for i, s in enumerate(seqs)]}
    if getattr(out, "pooler_output", None) is not None:
        ref["pooler"] = [vec(out.pooler_output[i]) for i in range(len(seqs))]
    # each sequence alone, unpadded: the padding mask must make no difference
    alone = []
    for s in seqs[:3]:
        o, _ = run_padded(model, [s], pad_id, want_types)
        alone.append(vec(o.last_hidden_state[0, 0]))
    ref["cls_alone_first3"] = alone
    return ref


def load_back(cls, path, state_dict_fallback=None):
    try:
        return cls.from_pretrained(path, attn_implementation="eager").eval()
    except Exception as ex:  # noqa: BLE001 - record and fall back
        log(f"from_pretrained({path}) failed: {ex!r}; loading the state dict by hand")
        cfg = cls.config_class.from_pretrained(path)
        m = cls(cfg).eval()
        sd = torch.load(os.path.join(path, "pytorch_model.bin"), weights_only=True)
        sd = {k: v.float() for k, v in sd.items() if v.is_floating_point()}
        missing, unexpected = m.load_state_dict(sd, strict=False)
        log("missing", missing, "unexpected", unexpected)
        return m


def bert_tokenizer(vocab, **kw):
    """transformers 4 had a Python BertTokenizer built from vocab_file;
    transformers 5 has only the tokenizers-backed one, which ignores
    vocab_file but builds from a folder holding vocab.txt. Try both ways and
    keep the one that really loaded the whole vocabulary."""
    from transformers import BertTokenizer
    with open(vocab, encoding="utf-8") as f:
        words = f.read().split("\n")[:-1]
    d = os.path.join("/tmp", "bert_tok_" + "_".join(f"{k}{v}" for k, v in sorted(kw.items())))
    os.makedirs(d, exist_ok=True)
    shutil.copy(vocab, os.path.join(d, "vocab.txt"))
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "BertTokenizer", **kw}, f)
    tried = []
    for how, make in (("vocab_file", lambda: BertTokenizer(vocab_file=vocab, **kw)),
                      ("from_pretrained", lambda: BertTokenizer.from_pretrained(d)),
                      ("vocab dict", lambda: BertTokenizer(
                          vocab={w: i for i, w in enumerate(words)}, **kw))):
        try:
            t = make()
        except Exception as ex:  # noqa: BLE001
            tried.append(f"{how}: {ex!r}")
            continue
        if len(t) == len(words):
            log(f"BertTokenizer {kw} built by {how}: {type(t).__module__}.{type(t).__name__}")
            return t
        tried.append(f"{how}: only {len(t)} of {len(words)} tokens")
    raise RuntimeError("could not build BertTokenizer: " + "; ".join(tried))


def bert_tokenizer_fast(vocab, **kw):
    try:
        from transformers import BertTokenizerFast
        return BertTokenizerFast(vocab_file=vocab, **kw)
    except Exception as ex:  # noqa: BLE001
        log(f"BertTokenizerFast unavailable: {ex!r}")
        return None


PAIRS = [("今天天气很好", "今天是个好天气"), ("今天天气很好", "明月几时有"),
         ("床前明月光", "疑是地上霜"), ("The jury said Friday", "an investigation of Atlanta"),
         ("北京欢迎你 Welcome", "Paris 2024"), ("好", "好")]


def make_bert(args, vocab_path, tok):
    seqs = [dict(tok(a, b)) for a, b in PAIRS]
    seqs += [dict(tok(t)) for t in args.texts[:4]]
    g = torch.Generator().manual_seed(5)
    vocab_n = len(tok)
    for L in (1, 3, 17, 100):
        ids = [2] + torch.randint(5, vocab_n, (L,), generator=g).tolist() + [3]
        seqs.append({"input_ids": ids, "token_type_ids": [0] * len(ids)})
    seqs = [{"input_ids": list(s["input_ids"]), "token_type_ids": list(s["token_type_ids"])}
            for s in seqs]
    return seqs


def save_bert(args, vocab_path, tok):
    torch.manual_seed(1)
    cfg = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2,
                     num_attention_heads=4, intermediate_size=64, max_position_embeddings=128,
                     type_vocab_size=2, initializer_range=0.2, layer_norm_eps=1e-12,
                     pad_token_id=0, hidden_act="gelu")
    model = BertModel(cfg, add_pooling_layer=True).eval()
    perturb(model, 2)
    d = os.path.join(args.out, "models", "bert")
    model.save_pretrained(d)
    tok.save_pretrained(d)
    shutil.copy(vocab_path, os.path.join(d, "vocab.txt"))
    seqs = make_bert(args, vocab_path, tok)
    ref = load_back(BertModel, d)
    golden = {"model": "bert", "inputs": seqs, **encoder_refs(ref, seqs, 0)}
    dump(args, "bert", golden)

    # the same weights as float16 pytorch_model.bin only
    d16 = os.path.join(args.out, "models", "bert_f16_bin")
    os.makedirs(d16, exist_ok=True)
    sd = collections.OrderedDict((k, v.half()) for k, v in model.state_dict().items())
    torch.save(sd, os.path.join(d16, "pytorch_model.bin"))
    cfg16 = cfg.to_dict()
    cfg16["torch_dtype"] = "float16"
    cfg16["architectures"] = ["BertModel"]
    with open(os.path.join(d16, "config.json"), "w") as f:
        json.dump(cfg16, f, indent=2)
    m16 = BertModel(cfg, add_pooling_layer=True).eval()
    m16.load_state_dict({k: v.float() for k, v in sd.items()})
    dump(args, "bert_f16_bin", {"model": "bert_f16_bin", "inputs": seqs,
                                **encoder_refs(m16, seqs, 0)})


def save_bert_cls(args, vocab_path, tok):
    torch.manual_seed(3)
    cfg = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2,
                     num_attention_heads=4, intermediate_size=64, max_position_embeddings=128,
                     type_vocab_size=2, initializer_range=0.2, num_labels=2,
                     id2label={0: "不相似", 1: "相似"}, label2id={"不相似": 0, "相似": 1})
    cfg.architectures = ["BertForSequenceClassification"]
    model = BertForSequenceClassification(cfg).eval()
    perturb(model, 4)
    d = os.path.join(args.out, "models", "bert_cls_bin")
    os.makedirs(d, exist_ok=True)
    sd = collections.OrderedDict(model.state_dict())
    if "bert.embeddings.position_ids" not in sd:  # as checkpoints of transformers < 4.31 carry
        sd["bert.embeddings.position_ids"] = torch.arange(128).unsqueeze(0)
    torch.save(sd, os.path.join(d, "pytorch_model.bin"))
    cfg.save_pretrained(d)
    shutil.copy(vocab_path, os.path.join(d, "vocab.txt"))
    with open(os.path.join(d, "configuration.json"), "w") as f:
        json.dump({"framework": "pytorch", "task": "sentence-similarity",
                   "model": {"type": "bert"},
                   "pipeline": {"type": "sentence-similarity"},
                   "preprocessor": {"type": "sen-sim-tokenizer",
                                    "first_sequence": "first_sequence",
                                    "second_sequence": "second_sequence",
                                    "sequence_length": 128}}, f, ensure_ascii=False, indent=2)
    for name in os.listdir(d):
        assert name in ("pytorch_model.bin", "config.json", "vocab.txt", "configuration.json"), name
    seqs = [{"input_ids": list(e["input_ids"]), "token_type_ids": list(e["token_type_ids"])}
            for e in (tok(a, b) for a, b in PAIRS)]
    seqs += make_bert(args, vocab_path, tok)[6:]
    ref = load_back(BertForSequenceClassification, d)
    out, _ = run_padded(ref, seqs, 0, True)
    logits = out.logits
    dump(args, "bert_cls_bin", {"model": "bert_cls_bin", "inputs": seqs,
                                "logits": [vec(l) for l in logits],
                                "probs": [vec(torch.softmax(l, -1)) for l in logits],
                                "id2label": {"0": "不相似", "1": "相似"}})


def xlmr_seqs(vocab_n, seed):
    g = torch.Generator().manual_seed(seed)
    seqs = []
    for L in (1, 4, 9, 30, 60):
        ids = [0] + torch.randint(3, vocab_n, (L,), generator=g).tolist() + [2]
        seqs.append({"input_ids": ids, "token_type_ids": [0] * len(ids)})
    # a pair as the cross-encoders see it: <s> A </s></s> B </s>
    a = torch.randint(3, vocab_n, (6,), generator=g).tolist()
    b = torch.randint(3, vocab_n, (8,), generator=g).tolist()
    ids = [0] + a + [2, 2] + b + [2]
    seqs.append({"input_ids": ids, "token_type_ids": [0] * len(ids)})
    return seqs


def xlmr_config(**kw):
    return XLMRobertaConfig(vocab_size=600, hidden_size=32, num_hidden_layers=2,
                            num_attention_heads=4, intermediate_size=64,
                            max_position_embeddings=130, type_vocab_size=1, pad_token_id=1,
                            bos_token_id=0, eos_token_id=2, initializer_range=0.2,
                            layer_norm_eps=1e-5, **kw)


def save_xlmr(args):
    torch.manual_seed(6)
    model = XLMRobertaModel(xlmr_config(), add_pooling_layer=True).eval()
    perturb(model, 7)
    d = os.path.join(args.out, "models", "xlmr_st")
    model.save_pretrained(d)
    with open(os.path.join(d, "modules.json"), "w") as f:
        json.dump([{"idx": 0, "name": "0", "path": "",
                    "type": "sentence_transformers.models.Transformer"},
                   {"idx": 1, "name": "1", "path": "1_Pooling",
                    "type": "sentence_transformers.models.Pooling"},
                   {"idx": 2, "name": "2", "path": "2_Normalize",
                    "type": "sentence_transformers.models.Normalize"}], f, indent=2)
    os.makedirs(os.path.join(d, "1_Pooling"), exist_ok=True)
    with open(os.path.join(d, "1_Pooling", "config.json"), "w") as f:
        json.dump({"word_embedding_dimension": 32, "pooling_mode_cls_token": False,
                   "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": False,
                   "pooling_mode_mean_sqrt_len_tokens": False,
                   "pooling_mode_weightedmean_tokens": False, "pooling_mode_lasttoken": False,
                   "include_prompt": True}, f, indent=2)
    with open(os.path.join(d, "sentence_bert_config.json"), "w") as f:
        json.dump({"max_seq_length": 128, "do_lower_case": False}, f)
    seqs = xlmr_seqs(600, 8)
    ref = load_back(XLMRobertaModel, d)
    dump(args, "xlmr_st", {"model": "xlmr_st", "inputs": seqs,
                           **encoder_refs(ref, seqs, 1, want_types=False)})


def save_xlmr_rerank(args):
    torch.manual_seed(9)
    cfg = xlmr_config(num_labels=1)
    cfg.architectures = ["XLMRobertaForSequenceClassification"]
    model = XLMRobertaForSequenceClassification(cfg).eval()
    perturb(model, 10)
    d = os.path.join(args.out, "models", "xlmr_rerank")
    model.save_pretrained(d)
    seqs = xlmr_seqs(600, 11)
    ref = load_back(XLMRobertaForSequenceClassification, d)
    out, _ = run_padded(ref, seqs, 1, False)
    dump(args, "xlmr_rerank", {"model": "xlmr_rerank", "inputs": seqs,
                               "logits": [vec(l) for l in out.logits],
                               "scores": [vec(torch.sigmoid(l)) for l in out.logits]})


def save_views(args):
    d = os.path.join(args.out, "torch")
    os.makedirs(d, exist_ok=True)
    g = torch.Generator().manual_seed(12)
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6) * 0.5 - 3
    sd = collections.OrderedDict()
    sd["base"] = base
    sd["transposed"] = base.t()
    sd["rows_1_3"] = base[1:3]
    sd["column_2"] = base[:, 2]
    sd["f16"] = torch.randn(3, 5, generator=g).half()
    sd["bf16"] = torch.randn(2, 7, generator=g).bfloat16()
    sd["i64"] = torch.arange(10) * 1000003
    sd["scalar"] = torch.tensor(3.25)
    sd["empty"] = torch.zeros(0, 4)
    sd["f16_t"] = sd["f16"].t()
    torch.save(sd, os.path.join(d, "views.bin"))
    torch.save(sd, os.path.join(d, "views_legacy.bin"), _use_new_zipfile_serialization=False)
    back = torch.load(os.path.join(d, "views.bin"), weights_only=True)
    names = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
             torch.int64: "I64"}
    ref = {k: {"dtype": names[v.dtype], "shape": list(v.shape),
               "values": [float(x) for x in v.reshape(-1).float().tolist()]}
           for k, v in back.items()}
    dump(args, "views", ref)


def save_tokenizer_ids(args, vocab_path):
    settings = {"lower": {}, "cased": {"do_lower_case": False},
                "no_chinese_split": {"tokenize_chinese_chars": False},
                "lower_keep_accents": {"strip_accents": False}}
    out = {"transformers": transformers.__version__, "vocab": "vocab.txt", "texts": args.texts,
           "settings": {}}
    for name, kw in settings.items():
        slow = bert_tokenizer(vocab_path, **kw)
        fast = bert_tokenizer_fast(vocab_path, **kw)
        if fast is not None and (type(fast) is type(slow) or len(fast) != len(slow)):
            fast = None  # transformers 5: one (tokenizers-backed) BertTokenizer only
        ids = [slow(t)["input_ids"] for t in args.texts]
        entry = {"kwargs": kw, "class": type(slow).__name__, "ids": ids,
                 "pairs": [{"a": a, "b": b, **{k: list(v) for k, v in slow(a, b).items()
                                               if k in ("input_ids", "token_type_ids")}}
                           for a, b in PAIRS]}
        if fast is not None:
            fids = [fast(t)["input_ids"] for t in args.texts]
            entry["fast_class"] = type(fast).__name__
            entry["fast_differs"] = {str(i): f for i, (s, f) in enumerate(zip(ids, fids))
                                     if s != f}
        out["settings"][name] = entry
        log(f"tokenizer {name}: {sum(len(x) for x in ids)} ids, "
            f"fast differs on {len(entry.get('fast_differs', {}))} texts")
    lo, ca = out["settings"]["lower"]["ids"], out["settings"]["cased"]["ids"]
    log(f"lower vs cased differ on {sum(x != y for x, y in zip(lo, ca))} texts; "
        f"[UNK] share {sum(i == 1 for x in lo for i in x) / sum(len(x) for x in lo):.3f}")
    dump(args, "bert_tokenizer", out)


def dump(args, name, obj):
    os.makedirs(os.path.join(args.out, "golden"), exist_ok=True)
    with open(os.path.join(args.out, "golden", name + ".json"), "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False)
    log("wrote golden", name)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--inputs", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    with open(os.path.join(args.inputs, "texts.json"), encoding="utf-8") as f:
        args.texts = json.load(f)
    vocab_path = os.path.join(args.inputs, "vocab.txt")
    log("torch", torch.__version__, "transformers", transformers.__version__)
    torch.set_grad_enabled(False)
    tok = bert_tokenizer(vocab_path)
    failed = 0
    for step in (lambda: save_bert(args, vocab_path, tok),
                 lambda: save_bert_cls(args, vocab_path, tok),
                 lambda: save_xlmr(args), lambda: save_xlmr_rerank(args),
                 lambda: save_views(args), lambda: save_tokenizer_ids(args, vocab_path)):
        try:
            step()
        except Exception:  # noqa: BLE001 - one failing part must not lose the others
            failed += 1
            log(traceback.format_exc())
    with open(os.path.join(args.out, "log.txt"), "w") as f:
        f.write("\n".join(LOG) + "\n")
    with tarfile.open(os.path.join(args.out, "encoder_golden.tar.gz"), "w:gz") as t:
        for sub in ("models", "torch", "golden", "log.txt"):
            p = os.path.join(args.out, sub)
            if os.path.exists(p):
                t.add(p, arcname=sub)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
