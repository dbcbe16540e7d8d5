#!/usr/bin/env python3
"""Train inferd's bundled demo model: a small Qwen3 chat model that answers a
title or a theme with a classical Chinese poem.

Two stages, so the part that needs no torch can be checked anywhere:

  prep   chinese-poetry corpus -> conversations (JSONL, text only), held-out split
         python3 tools/demo/train.py prep --corpus tests/node_modules/chinese-poetry/dist \
             --out .cache/demo/data.jsonl
  train  conversations -> tokenizer.json + Qwen3 checkpoint (bf16) + held-out evaluation
         python3 tools/demo/train.py train --data .cache/demo/data.jsonl --out DIR

Everything is seeded (--seed); the same inputs on the same GPU give the same
model. The held-out loss is computed from the SAVED bf16 checkpoint, reloaded
in float32 on the CPU, the way inferd runs it, so inferd's number can be
compared with it (tests/demo/test_demo_ppl.sh).
"""
import argparse
import glob
import json
import math
import os
import random
import re
import sys
import time

IM_START, IM_END, EOT = "<|im_start|>", "<|im_end|>", "<|endoftext|>"

# Qwen's minimal ChatML template: no default system message.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# Qwen2/Qwen3 pre-tokenizer split, so the C tokenizer sees a familiar layout.
QWEN_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
              r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

# Theme: (characters looked for in the poem, traditional as in the corpus),
# how a user names it in Chinese, and in English.
THEMES = [
    ("春", "春天", "spring"), ("夏", "夏天", "summer"), ("秋", "秋天", "autumn"),
    ("冬", "冬天", "winter"), ("月", "月亮", "the moon"), ("雪", "雪", "snow"),
    ("雨", "雨", "rain"), ("風", "风", "the wind"), ("花", "花", "flowers"),
    ("酒", "饮酒", "wine"), ("山", "山", "mountains"), ("江", "江河", "the river"),
    ("柳", "杨柳", "willows"), ("梅", "梅花", "plum blossoms"), ("雁", "大雁", "wild geese"),
    ("別", "离别", "farewell"), ("鄉", "思乡", "home"), ("夜", "夜晚", "the night"),
    ("塞", "边塞", "the frontier"), ("竹", "竹子", "bamboo"), ("松", "松树", "pine trees"),
    ("菊", "菊花", "chrysanthemums"), ("舟", "小船", "a boat"), ("鶴", "仙鹤", "cranes"),
    ("寺", "寺庙", "a temple"), ("茶", "茶", "tea"), ("琴", "琴", "music"),
    ("海", "大海", "the sea"), ("雲", "云", "clouds"), ("燕", "燕子", "swallows"),
    ("友", "友情", "friendship"), ("愁", "忧愁", "sorrow"), ("田", "田园", "the countryside"),
    ("湖", "湖", "the lake"), ("禪", "禅", "zen"), ("老", "年老", "old age"),
]
FORMS = {(2, 5): ("五言绝句", "five-character quatrain"),
         (2, 7): ("七言绝句", "seven-character quatrain"),
         (4, 5): ("五言律诗", "five-character regulated verse"),
         (4, 7): ("七言律诗", "seven-character regulated verse")}

TITLE_ZH = ["题目：{t}", "以《{t}》为题写一首诗", "写一首诗，题目是《{t}》", "《{t}》", "{t}",
            "请以“{t}”为题作诗", "作诗一首：{t}", "写一首《{t}》"]
THEME_ZH = ["写一首关于{z}的诗", "请写一首{z}的诗", "来一首写{z}的诗", "以{z}为主题写一首诗",
            "关于{z}的诗", "写一首关于{z}的{f}", "{z}", "帮我写一首描写{z}的古诗"]
THEME_EN = ["a poem about {e}", "Write a poem about {e}.", "Write a Chinese poem about {e}",
            "Please write a classical Chinese poem about {e}.", "poem: {e}",
            "Write a {fe} about {e}."]
FORM_ONLY = ["写一首{f}", "写一首诗", "Write a poem.", "来一首{f}"]
SYSTEMS = ["你是一位古典诗人。", "You are a helpful assistant.", "你是一个会写诗的助手。"]

CJK = "\u4e00-\u9fff"
LINE = re.compile(rf"^([{CJK}]{{5}}|[{CJK}]{{7}})，([{CJK}]{{5}}|[{CJK}]{{7}})。$")
TITLE_OK = re.compile(rf"^[{CJK}　 ·（）()《》、，0-9一二三四五六七八九十]+$")


def load_poems(corpus):
    """Regular quatrains and eight-line verses (five or seven characters a
    line) with a short clean title, from the Tang and Song shi collections."""
    out = {"tang": [], "song": []}
    for kind in out:
        files = sorted(glob.glob(os.path.join(corpus, "quantangshi", f"poet.{kind}.*.json")),
                       key=lambda f: int(f.split(".")[-2]))
        if not files:
            sys.exit(f"train.py: no quantangshi/poet.{kind}.*.json under {corpus}")
        for f in files:
            with open(f, encoding="utf-8") as fh:
                for p in json.load(fh):
                    paras = [x.strip() for x in p.get("paragraphs", [])]
                    if len(paras) not in (2, 4):
                        continue
                    ms = [LINE.match(x) for x in paras]
                    if not all(ms):
                        continue
                    n = {len(m.group(1)) for m in ms} | {len(m.group(2)) for m in ms}
                    if len(n) != 1:
                        continue
                    title = re.sub(r"\s+", " ", p.get("title", "")).strip()
                    if not title or len(title) > 14 or not TITLE_OK.match(title):
                        continue
                    out[kind].append({"title": title, "lines": paras,
                                      "form": [len(paras), n.pop()]})
    return out


def user_prompt(rng, poem):
    """A title or theme request that the poem answers."""
    f_zh, f_en = FORMS[tuple(poem["form"])]
    body = "".join(poem["lines"])
    in_title = [t for t in THEMES if t[0] in poem["title"]]
    in_body = [t for t in THEMES if t[0] in body]
    r = rng.random()
    if r < 0.40 or not (in_title or in_body):
        if r > 0.97:
            return rng.choice(FORM_ONLY).format(f=f_zh)
        return rng.choice(TITLE_ZH).format(t=poem["title"])
    theme = rng.choice(in_title or in_body)
    if r < 0.82:
        return rng.choice(THEME_ZH).format(z=theme[1], f=f_zh)
    return rng.choice(THEME_EN).format(e=theme[2], fe=f_en)


def answer(poem):
    return "《" + poem["title"] + "》\n" + "\n".join(poem["lines"])


def conversation(rng, poems, i, pool):
    """messages for poem i; sometimes a system message, sometimes a second
    turn with another poem from the same split (pool)."""
    msgs = []
    if rng.random() < 0.10:
        msgs.append({"role": "system", "content": rng.choice(SYSTEMS)})
    msgs += [{"role": "user", "content": user_prompt(rng, poems[i])},
             {"role": "assistant", "content": answer(poems[i])}]
    if rng.random() < 0.15:
        j = rng.choice(pool)
        msgs += [{"role": "user", "content": user_prompt(rng, poems[j])},
                 {"role": "assistant", "content": answer(poems[j])}]
    return msgs


def cmd_prep(a):
    rng = random.Random(a.seed)
    by = load_poems(a.corpus)
    tang, song = by["tang"], by["song"]
    rng.shuffle(tang)
    rng.shuffle(song)
    poems = tang[:a.n_tang] + song[:a.n_song]
    rng.shuffle(poems)
    n_held = max(1, round(len(poems) * a.heldout_frac))
    held, train = list(range(n_held)), list(range(n_held, len(poems)))
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    n_conv = {"train": 0, "heldout": 0}
    with open(a.out, "w", encoding="utf-8") as fh:
        for split, idx in (("heldout", held), ("train", train)):
            for i in idx:
                # held-out conversations are single-turn: one poem, one loss
                msgs = (conversation(rng, poems, i, idx) if split == "train" else
                        [{"role": "user", "content": user_prompt(rng, poems[i])},
                         {"role": "assistant", "content": answer(poems[i])}])
                fh.write(json.dumps({"split": split, "messages": msgs},
                                    ensure_ascii=False) + "\n")
                n_conv[split] += 1
    print(f"prep: {len(tang)} tang + {len(song)} song poems pass the filter; using "
          f"{min(len(tang), a.n_tang)} + {min(len(song), a.n_song)}; "
          f"{n_conv['train']} train / {n_conv['heldout']} held-out conversations -> {a.out}")


# ---------------------------------------------------------------- training

def render(msgs):
    """(text pieces, is-target flags): assistant content and its <|im_end|>
    are targets, everything else is context. Matches CHAT_TEMPLATE exactly."""
    parts = []
    for m in msgs:
        parts.append((IM_START + m["role"] + "\n", False))
        if m["role"] == "assistant":
            parts.append((m["content"] + IM_END, True))
            parts.append(("\n", False))
        else:
            parts.append((m["content"] + IM_END + "\n", False))
    # the newline after the last <|im_end|> is never predicted: drop it so a
    # conversation ends on its last target
    if parts[-1] == ("\n", False):
        parts.pop()
    return parts


def train_tokenizer(texts, vocab_size):
    from tokenizers import Tokenizer, Regex, models, normalizers, pre_tokenizers, decoders, trainers
    from tokenizers import AddedToken
    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    specials = [AddedToken(s, special=True, normalized=False) for s in (EOT, IM_START, IM_END)]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False,
                                  special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    # Spell the byte-level parts exactly as Qwen's tokenizer.json does, so
    # any loader that reads Qwen's files reads ours the same way.
    j = json.loads(tok.to_str())
    bl = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}
    j["pre_tokenizer"]["pretokenizers"][1] = dict(bl)
    j["decoder"] = dict(bl)
    j["post_processor"] = dict(bl)
    return Tokenizer.from_str(json.dumps(j, ensure_ascii=False))


def encode_convs(tok, convs):
    """[(ids, is-target flags)] per conversation; one batched encode call
    (the Rust side runs it in parallel)."""
    rendered = [render(m) for m in convs]
    flat = [t for r in rendered for t, _ in r]
    encs = tok.encode_batch(flat, add_special_tokens=False)
    out, k = [], 0
    for r in rendered:
        ids, tgt = [], []
        for _, is_t in r:
            piece = encs[k].ids
            k += 1
            ids += piece
            tgt += [is_t] * len(piece)
        out.append((ids, tgt))
    return out


def write_hf_files(out, tok, a, vocab):
    tok.save(os.path.join(out, "tokenizer.json"))
    added = {}
    for s in (EOT, IM_START, IM_END):
        added[str(tok.token_to_id(s))] = {"content": s, "lstrip": False, "normalized": False,
                                          "rstrip": False, "single_word": False, "special": True}
    tcfg = {"add_bos_token": False, "add_prefix_space": False, "added_tokens_decoder": added,
            "additional_special_tokens": [IM_START, IM_END], "bos_token": None,
            "chat_template": CHAT_TEMPLATE, "clean_up_tokenization_spaces": False,
            "eos_token": IM_END, "errors": "replace", "model_max_length": a.max_pos,
            "pad_token": EOT, "split_special_tokens": False,
            "tokenizer_class": "PreTrainedTokenizerFast", "unk_token": None}
    with open(os.path.join(out, "tokenizer_config.json"), "w", encoding="utf-8") as fh:
        json.dump(tcfg, fh, ensure_ascii=False, indent=2)
    gcfg = {"bos_token_id": tok.token_to_id(EOT), "eos_token_id": [tok.token_to_id(IM_END),
            tok.token_to_id(EOT)], "pad_token_id": tok.token_to_id(EOT), "do_sample": True,
            "temperature": 0.7, "top_p": 0.9, "top_k": 40, "repetition_penalty": 1.0,
            "max_new_tokens": 256}
    with open(os.path.join(out, "generation_config.json"), "w") as fh:
        json.dump(gcfg, fh, indent=2)


def cmd_train(a):
    import torch
    import torch.nn.functional as F
    from transformers import Qwen3Config, Qwen3ForCausalLM

    t_start = time.time()
    random.seed(a.seed)
    torch.manual_seed(a.seed)
    torch.backends.cuda.matmul.allow_tf32 = True
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    os.makedirs(a.out, exist_ok=True)
    os.makedirs(a.eval_out, exist_ok=True)
    log = open(os.path.join(a.eval_out, "train_log.txt"), "w")

    def say(*x):
        s = " ".join(str(v) for v in x)
        print(s, flush=True)
        log.write(s + "\n")
        log.flush()

    convs = {"train": [], "heldout": []}
    with open(a.data, encoding="utf-8") as fh:
        for line in fh:
            r = json.loads(line)
            convs[r["split"]].append(r["messages"])
    if a.limit_train:
        convs["train"] = convs["train"][:a.limit_train]
    texts = ["".join(t for t, _ in render(m)) for m in convs["train"]]
    tok = train_tokenizer(texts, a.vocab)
    vocab = tok.get_vocab_size()
    im_start, im_end, eot = (tok.token_to_id(s) for s in (IM_START, IM_END, EOT))
    say(f"tokenizer: {vocab} tokens, {time.time() - t_start:.1f}s")

    enc = {k: encode_convs(tok, v) for k, v in convs.items()}
    # piecewise encoding must equal encoding the rendered chat as one string
    # (what inferd does with the chat template)
    for m, (ids, _) in zip(convs["heldout"][:500] + convs["train"][:500],
                           enc["heldout"][:500] + enc["train"][:500]):
        whole = tok.encode("".join(t for t, _ in render(m)), add_special_tokens=False).ids
        assert whole == ids, (m, whole, ids)
    enc["train"] = [x for x in enc["train"] if len(x[0]) <= a.seq]
    n_tok = sum(len(x[0]) for x in enc["train"])
    n_tgt = sum(sum(x[1]) for x in enc["train"])
    say(f"data: {len(enc['train'])} train conversations, {n_tok} tokens ({n_tgt} targets), "
        f"{len(enc['heldout'])} held out; {time.time() - t_start:.1f}s")

    rp = {"rope_type": "default", "rope_theta": 10000.0}
    cfg = Qwen3Config(rope_parameters=rp, vocab_size=vocab, hidden_size=a.hidden, intermediate_size=a.ffn,
                      num_hidden_layers=a.layers, num_attention_heads=a.heads,
                      num_key_value_heads=a.kv_heads, head_dim=a.hidden // a.heads,
                      max_position_embeddings=a.max_pos, rms_norm_eps=1e-6,
                      tie_word_embeddings=True, bos_token_id=eot, eos_token_id=im_end,
                      pad_token_id=eot, use_cache=True,
                      attention_dropout=0.0)
    got = getattr(cfg, "rope_parameters", None)
    if not (isinstance(got, dict) and got.get("rope_theta") == 10000.0):
        cfg.rope_theta = 10000.0  # transformers 4.x keeps it at the top level
    model = Qwen3ForCausalLM(cfg).to(dev)
    n_param = sum(p.numel() for p in model.parameters())
    say(f"model: Qwen3 {a.layers}x{a.hidden} ffn {a.ffn} heads {a.heads}/{a.kv_heads} "
        f"vocab {vocab}: {n_param / 1e6:.2f}M parameters")

    # Right padding needs no attention mask under a causal mask: real tokens
    # never see the pad that follows them.
    def batch_of(items):
        L = max(len(x[0]) for x in items)
        ids = torch.full((len(items), L), eot, dtype=torch.long)
        lab = torch.full((len(items), L), -100, dtype=torch.long)
        for r, (x, t) in enumerate(items):
            ids[r, :len(x)] = torch.tensor(x)
            # label at position p is the token p+1 when that token is a target
            lab[r, :len(x) - 1] = torch.tensor([x[p + 1] if t[p + 1] else -100
                                                for p in range(len(x) - 1)])
        return ids, lab

    train = enc["train"]
    g = random.Random(a.seed + 1)
    steps = a.steps
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, betas=(0.9, 0.95), weight_decay=0.1,
                            fused=dev == "cuda")
    warm = max(1, steps // 25)

    def lr_at(s):
        if s < warm:
            return a.lr * (s + 1) / warm
        return a.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (s - warm) / (steps - warm))))

    order, pos = [], 0
    # batches are drawn from length-sorted chunks so padding stays small
    def next_batch():
        nonlocal order, pos
        if pos + a.batch > len(order):
            idx = list(range(len(train)))
            g.shuffle(idx)
            chunks = [sorted(idx[i:i + a.batch * 32], key=lambda j: len(train[j][0]))
                      for i in range(0, len(idx), a.batch * 32)]
            bs = [c[i:i + a.batch] for c in chunks for i in range(0, len(c), a.batch)]
            bs = [b for b in bs if len(b) == a.batch]
            g.shuffle(bs)
            order, pos = [j for b in bs for j in b], 0
        b = order[pos:pos + a.batch]
        pos += a.batch
        return batch_of([train[j] for j in b])

    # the training curve tracks the first 1024 held-out chats (time is short)
    held_batches = [batch_of(enc["heldout"][i:i + 256]) for i in range(0, min(1024, len(enc["heldout"])), 256)]

    def held_loss():
        model.eval()
        tot, n = 0.0, 0
        with torch.no_grad(), torch.autocast(dev, dtype=torch.bfloat16, enabled=dev == "cuda"):
            for ids, lab in held_batches:
                lg = model(input_ids=ids.to(dev)).logits.float()
                l = F.cross_entropy(lg.view(-1, lg.size(-1)), lab.to(dev).view(-1),
                                    ignore_index=-100, reduction="sum")
                tot += l.item()
                n += (lab != -100).sum().item()
        model.train()
        return tot / n

    say(f"train: {steps} steps, batch {a.batch}, lr {a.lr}, warmup {warm}; "
        f"setup took {time.time() - t_start:.1f}s")
    model.train()
    t0 = time.time()
    curve = []
    for s in range(steps):
        for pg in opt.param_groups:
            pg["lr"] = lr_at(s)
        ids, lab = next_batch()
        ids, lab = ids.to(dev, non_blocking=True), lab.to(dev, non_blocking=True)
        with torch.autocast(dev, dtype=torch.bfloat16, enabled=dev == "cuda"):
            lg = model(input_ids=ids).logits
        loss = F.cross_entropy(lg.float().view(-1, lg.size(-1)), lab.view(-1), ignore_index=-100)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if s + 1 in (20, 100):
            torch.cuda.synchronize() if dev == "cuda" else None
            say(f"step {s + 1}: {time.time() - t0:.1f}s since training began")
        if (s + 1) % a.eval_every == 0 or s + 1 == steps:
            hl = held_loss()
            el = time.time() - t0
            curve.append({"step": s + 1, "train_loss": loss.item(), "heldout_loss": hl,
                          "seconds": round(el, 1)})
            say(f"step {s + 1}/{steps} train {loss.item():.4f} heldout {hl:.4f} "
                f"ppl {math.exp(hl):.2f} lr {lr_at(s):.2e} {el:.0f}s")
        if time.time() - t_start > a.time_limit:
            say(f"time limit {a.time_limit}s reached at step {s + 1}; stopping early")
            break
    train_s = time.time() - t0

    model.to(torch.bfloat16).save_pretrained(a.out, safe_serialization=True)
    write_hf_files(a.out, tok, a, vocab)
    say(f"saved {a.out}: " + ", ".join(f"{f} {os.path.getsize(os.path.join(a.out, f))}"
                                       for f in sorted(os.listdir(a.out))))
    del model, opt

    # Held-out evaluation from the saved checkpoint, float32 on the CPU: the
    # same weights and the same arithmetic width inferd uses.
    torch.set_num_threads(min(16, os.cpu_count() or 1))
    try:  # transformers 5 spells it dtype, 4.x torch_dtype
        m32 = Qwen3ForCausalLM.from_pretrained(a.out, dtype=torch.float32).eval()
    except TypeError:
        m32 = Qwen3ForCausalLM.from_pretrained(a.out, torch_dtype=torch.float32).eval()
    assert next(m32.parameters()).dtype == torch.float32
    sel = enc["heldout"][:a.n_heldout_ids]
    rows, tot, n = [], 0.0, 0
    with torch.no_grad():
        for ids, tgt in sel:
            x = torch.tensor([ids])
            lg = m32(input_ids=x).logits[0]
            lp = torch.log_softmax(lg.double(), dim=-1)
            # targets are one contiguous run at the end for single-turn chats
            first = tgt.index(True)
            assert all(tgt[first:]) and not any(tgt[:first])
            nll = -lp[torch.arange(first - 1, len(ids) - 1), torch.tensor(ids[first:])]
            tot += nll.sum().item()
            n += len(ids) - first
            rows.append({"ids": ids, "n_prompt": first, "nll_sum": nll.sum().item()})
    mean = tot / n
    with open(os.path.join(a.eval_out, "heldout.jsonl"), "w") as fh:
        for r in rows:
            fh.write(json.dumps({"ids": r["ids"], "n_prompt": r["n_prompt"]}) + "\n")
    ref = {"conversations": len(rows), "tokens": n, "mean_loss": mean, "perplexity": math.exp(mean),
           "nll_sum": [r["nll_sum"] for r in rows],
           "how": "PyTorch float32 on CPU from the saved bf16 model.safetensors; mean natural-log "
                  "loss over assistant tokens (answer + <|im_end|>), pooled over all conversations"}
    with open(os.path.join(a.eval_out, "heldout_ref.json"), "w") as fh:
        json.dump(ref, fh, indent=1)
    say(f"heldout (saved bf16 checkpoint, fp32 CPU): {len(rows)} conversations, {n} tokens, "
        f"mean loss {mean:.5f}, perplexity {math.exp(mean):.3f}")

    # A few greedy and sampled answers, for the README and as a later check.
    samples = []
    prompts = ["写一首关于春天的诗", "题目：静夜思", "a poem about the moon", "写一首关于离别的七言绝句",
               "Write a poem about autumn."]
    for p in prompts:
        ids = encode_convs(tok, [[{"role": "user", "content": p}]])[0][0]
        ids += tok.encode(IM_START + "assistant\n", add_special_tokens=False).ids
        x = torch.tensor([ids])
        with torch.no_grad():
            out = m32.generate(x, max_new_tokens=96, do_sample=False, eos_token_id=im_end,
                               pad_token_id=eot)
        gen = out[0, len(ids):].tolist()
        samples.append({"prompt": p, "prompt_ids": ids, "greedy_ids": gen,
                        "greedy_text": tok.decode(gen, skip_special_tokens=True)})
        say(f"greedy [{p}] -> {samples[-1]['greedy_text']!r}")
    with open(os.path.join(a.eval_out, "samples.json"), "w") as fh:
        json.dump(samples, fh, ensure_ascii=False, indent=1)
    summary = {"args": vars(a), "device": torch.cuda.get_device_name(0) if dev == "cuda" else "cpu",
               "torch": torch.__version__, "params": n_param, "vocab": vocab,
               "train_seconds": round(train_s, 1), "total_seconds": round(time.time() - t_start, 1),
               "curve": curve, "heldout_mean_loss": mean, "heldout_ppl": math.exp(mean)}
    import transformers, tokenizers
    summary["transformers"] = transformers.__version__
    summary["tokenizers"] = tokenizers.__version__
    with open(os.path.join(a.eval_out, "summary.json"), "w") as fh:
        json.dump(summary, fh, indent=1)
    say(f"total {time.time() - t_start:.1f}s")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prep")
    p.add_argument("--corpus", default="tests/node_modules/chinese-poetry/dist")
    p.add_argument("--out", default=".cache/demo/data.jsonl")
    p.add_argument("--n-tang", type=int, default=35000)
    p.add_argument("--n-song", type=int, default=120000)
    p.add_argument("--heldout-frac", type=float, default=0.02)
    p.add_argument("--seed", type=int, default=1234)
    t = sub.add_parser("train")
    t.add_argument("--data", default=".cache/demo/data.jsonl")
    t.add_argument("--out", required=True, help="model folder to write")
    t.add_argument("--eval-out", required=True, help="folder for heldout.jsonl, logs, samples")
    t.add_argument("--seed", type=int, default=1234)
    t.add_argument("--vocab", type=int, default=8192)
    t.add_argument("--hidden", type=int, default=384)
    t.add_argument("--ffn", type=int, default=1024)
    t.add_argument("--layers", type=int, default=6)
    t.add_argument("--heads", type=int, default=6)
    t.add_argument("--kv-heads", type=int, default=2)
    t.add_argument("--max-pos", type=int, default=1024)
    t.add_argument("--seq", type=int, default=320, help="longest training conversation (tokens)")
    t.add_argument("--steps", type=int, default=4500)
    t.add_argument("--batch", type=int, default=128)
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--eval-every", type=int, default=250)
    t.add_argument("--n-heldout-ids", type=int, default=200)
    t.add_argument("--limit-train", type=int, default=0, help="use only N train conversations (smoke)")
    t.add_argument("--time-limit", type=float, default=360,
                   help="stop training early after this many seconds in all (safety)")
    a = ap.parse_args()
    {"prep": cmd_prep, "train": cmd_train}[a.cmd](a)


if __name__ == "__main__":
    main()
