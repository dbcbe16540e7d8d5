#!/usr/bin/env python3
"""Records, for every code point, how the Rust `tokenizers` library's
Unicode-dependent components behave, so that the tables of
tools/unicode/gen_tables.py can be checked against the reference and not
against a Unicode version someone guessed. Runs on the device (needs the
`tokenizers` Python binding):

  python3 tools/golden/tokenizer_unicode_golden.py --out unicode_ref.json

Each property is read through the public API on long strings in which every
code point sits between two copies of a probe character, so a whole property
costs one call:
- scripts: UnicodeScripts. "Any" (never splits) = no split next to 'a' nor
  next to Greek alpha; the other code points, in order, split into runs of one
  script; runs are then grouped into scripts pairwise. Written as ranges
  [lo, hi, label], label = the first code point of the script's first run.
- punct: Punctuation() isolates exactly the punctuation chars.
- other: BertNormalizer(clean_text) drops c (besides NUL and U+FFFD) when
  is_other(c); it maps whitespace to a space ("ws").
- mn: BertNormalizer(strip_accents) drops Mn (after NFD; code points whose NFD
  is not themselves are left out of this probe).
- mark: StripAccents drops combining marks (same restriction).
- numeric: Digits(individual_digits=True) isolates numeric chars.
- nfd/nfkd/nfc/nfkc: the single-code-point mappings that differ from the
  identity (Hangul syllables left out: algorithmic), probed with U+0001.
- ccc_gt1: marks m for which NFD(m + U+0334) swaps them (canonical combining
  class of m above 1 in the reference's tables).
- script_cases: whole strings and their UnicodeScripts splits (edge cases:
  leading / only spaces, empty string; 400 random mixes of scripts).
"""
import argparse
import json
import sys
import time


def all_cps():
    return [c for c in range(0x110000) if not (0xD800 <= c <= 0xDFFF)]


def ranges(cps):
    out = []
    for c in sorted(cps):
        if out and out[-1][1] + 1 == c:
            out[-1][1] = c
        else:
            out.append([c, c])
    return out


def boundaries(pieces):
    """Char offsets where pieces start (pieces: list of (str, offsets))."""
    b, pos = set(), 0
    for s, _ in pieces:
        b.add(pos)
        pos += len(s)
    return b


def interleave(probe, cps):
    return probe + "".join(chr(c) + probe for c in cps)


def split_probe(pretok, probe, cps):
    """Code points that are split off when sitting between two probes."""
    s = interleave(probe, cps)
    pieces = pretok.pre_tokenize_str(s)
    # offsets in the Python binding are in chars; compute from the strings
    b = boundaries(pieces)
    return {c for i, c in enumerate(cps) if (2 * i + 1) in b or (2 * i + 2) in b}


def slots(norm, probe, cps):
    """normalize(probe c1 probe c2 ...) cut back into one slot per code point."""
    out = norm.normalize_str(interleave(probe, cps))
    parts = out.split(probe)
    if len(parts) != len(cps) + 2:
        raise ValueError("slots: %d parts for %d code points" % (len(parts), len(cps)))
    return parts[1:-1]


def scripts(cps):
    from tokenizers.pre_tokenizers import UnicodeScripts
    us = UnicodeScripts()
    cps_ = [c for c in cps if c not in (ord("a"), 0x3B1)]
    not_latin = split_probe(us, "a", cps_)
    not_greek = split_probe(us, "\u03b1", cps_)
    anyset = {c for c in cps_ if c not in not_latin and c not in not_greek}
    rest = [c for c in cps if c not in anyset]
    pieces = us.pre_tokenize_str("".join(chr(c) for c in rest))
    runs, i = [], 0
    for s, _ in pieces:
        runs.append(rest[i:i + len(s)])
        i += len(s)
    if i != len(rest):
        raise ValueError("scripts: pieces cover %d of %d" % (i, len(rest)))
    reps = []  # first code point of each script
    label = {}
    for run in runs:
        r = run[0]
        for q in reps:
            if len(us.pre_tokenize_str(chr(q) + chr(r))) == 1:
                lab = q
                break
        else:
            reps.append(r)
            lab = r
        for c in run:
            label[c] = lab
    out = []
    for c in rest:
        v = label[c]
        if out and out[-1][1] + 1 == c and out[-1][2] == v:
            out[-1][1] = c
        else:
            out.append([c, c, v])
    cases = {}
    for s in ["", " ", "   ", " abc", "  abc def", "abc ", "\u3000x", " \u65e5\u672c a",
              "\u3069\u3053\u3067\u751f\u308c\u3002Yes", "Apples are \u308a\u3093\u3054 \u6797\u6a8e",
              "a\u0301b", "\u0301a", "1a", "a1", "\u30fcx"]:
        cases[s] = [p for p, _ in us.pre_tokenize_str(s)]
    # random mixes: Latin, Greek, Cyrillic, Han, kana, Hangul, Arabic, digits,
    # punctuation, marks (Inherited), spaces, unassigned and post-9.0 chars
    import random
    rng = random.Random(4)
    pool = ("abcXYZ\u03b1\u03b2\u0436\u0444\u65e5\u672c\u3042\u30a2\u30fc\u309b\u3099\uac00\u0627"
            "\u0628012\uff10.,!?\u3002\u3001-\u0301\u0308\u200d   \t\n\u3000\u00a0\u0378\u2e47\U0001f600"
            "\U0001f3fb\ufe0f\u0e01\u0915\u094d\U00011f00\U0001e030\u1c80\u0860\U000e0001")
    for _ in range(400):
        s = "".join(rng.choice(pool) for _ in range(rng.randint(1, 12)))
        cases[s] = [p for p, _ in us.pre_tokenize_str(s)]
    return out, len(reps), cases


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    import tokenizers
    from tokenizers import normalizers, pre_tokenizers
    cps = all_cps()
    res = {"tokenizers": tokenizers.__version__}
    t0 = time.time()

    def step(name, fn):
        try:
            res[name] = fn()
        except Exception as ex:  # one probe failing must not cost the others
            import traceback
            traceback.print_exc()
            res[name + "_error"] = repr(ex)
        print(name, round(time.time() - t0, 1), "s", flush=True)

    def do_scripts():
        out, n, cases = scripts(cps)
        res["script_count"] = n
        res["script_cases"] = cases
        return out
    step("scripts", do_scripts)
    nona = [c for c in cps if c != ord("a")]
    step("punct", lambda: ranges(split_probe(pre_tokenizers.Punctuation(), "a", nona)))
    step("numeric", lambda: ranges(split_probe(pre_tokenizers.Digits(individual_digits=True), "a", nona)))

    def bert_clean():
        n = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=False,
                                       strip_accents=False, lowercase=False)
        sl = slots(n, "a", nona)
        res["ws"] = ranges(c for c, s in zip(nona, sl) if s == " " and c != 0x20)
        odd = {("%04X" % c): s for c, s in zip(nona, sl) if s not in ("", " ", chr(c))}
        if odd:
            res["other_odd"] = odd
        return ranges(c for c, s in zip(nona, sl) if s == "")
    step("other", bert_clean)

    import unicodedata
    ident = [c for c in nona if unicodedata.normalize("NFD", chr(c)) == chr(c)]

    def mn():
        n = normalizers.BertNormalizer(clean_text=False, handle_chinese_chars=False,
                                       strip_accents=True, lowercase=False)
        sl = slots(n, "a", ident)
        return ranges(c for c, s in zip(ident, sl) if s == "")
    step("mn", mn)

    def mark():
        sl = slots(normalizers.StripAccents(), "a", ident)
        return ranges(c for c, s in zip(ident, sl) if s == "")
    step("mark", mark)

    for form in ("NFD", "NFKD", "NFC", "NFKC"):
        def nf(form=form):
            n = getattr(normalizers, form)()
            # U+0001: composes with nothing and is in no decomposition
            cs = [c for c in cps if not (0xAC00 <= c <= 0xD7A3) and c != 1]
            sl = slots(n, "\x01", cs)
            return {("%04X" % c): s for c, s in zip(cs, sl) if s != chr(c)}
        step(form.lower(), nf)

    def ccc():
        n = normalizers.NFD()
        marks = [c for c in ident if unicodedata.category(chr(c)).startswith("M") or unicodedata.combining(chr(c))]
        s = "".join("a" + chr(c) + "\u0334" for c in marks)
        out = n.normalize_str(s)
        parts = out.split("a")[1:]
        return ranges(c for c, p in zip(marks, parts) if p == "\u0334" + chr(c))
    step("ccc_gt1", ccc)
    res["python_unicodedata"] = unicodedata.unidata_version
    with open(args.out, "w", encoding="utf-8") as fh:
        json.dump(res, fh, ensure_ascii=True, separators=(",", ":"))
    print("done", round(time.time() - t0, 1), "s")


if __name__ == "__main__":
    sys.exit(main())
