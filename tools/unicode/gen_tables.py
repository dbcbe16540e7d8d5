#!/usr/bin/env python3
"""Generates tokenizer/tk_unitab.c: the Unicode tables the tokenizer needs in
the exact (old) Unicode versions the Rust `tokenizers` library uses, which
utf8proc (current Unicode) cannot give.

  python3 tools/unicode/gen_tables.py [--ucd /usr/share/unicode] \
      [--out tokenizer/tk_unitab.c] [--check tests/fixtures/tokenizer/unicode_ref.json]

Input: the Unicode Character Database of Debian's `unicode-data` package
(Scripts.txt, DerivedAge.txt, UnicodeData.txt). Only this tool needs it; the
generated .c is committed, so the build does not.

Tables:
- scripts: what the UnicodeScripts pre-tokenizer sees. The reference's table
  was generated (via SentencePiece's script) from Unicode 9.0's Scripts.txt,
  so code points assigned after 9.0 have no script there ("Any", like unlisted
  ones). It also folds Hiragana and Katakana into Han, maps U+30FC to Han and
  the space to Any; both are folded in here, so C only looks the table up.
- punct, other, mn: the reference's is_punctuation / is_other /
  is_mark_nonspacing come from the `unicode_categories` crate (0.1.1), whose
  tables list the characters of one old UnicodeData.txt (CATEGORIES_AGE).
  BertPreTokenizer and Punctuation split on punct; BertNormalizer's
  clean_text drops "other" (Cc, Cf, Co: the crate has no Cn or Cs entries);
  its strip_accents drops Mn.
- mark, nf_frozen: NFD/NFKD/NFC/NFKC and StripAccents' is_combining_mark come
  from `unicode_normalization_alignments`, whose tables are Unicode NORM_AGE:
  mark is M* of then; nf_frozen lists the later chars that utf8proc would
  decompose, reorder (combining class) or compose, which the reference
  leaves alone like any unassigned starter.
- numeric: Digits uses Rust's char::is_numeric, of a newer Unicode than
  Debian's: N* plus the chars the reference recorded as numeric that this
  UCD does not have yet.

Ages are taken from the current DerivedAge.txt; the few characters whose
script or category changed since are set back by OLD_SCRIPT / OLD_GC. The
versions and those lists were found with --check, which compares every code
point with the reference's behaviour recorded on the device by
tools/golden/tokenizer_unicode_golden.py (tests/fixtures/tokenizer/
unicode_ref.json); the C test tests/tokenizer/test_unicode.c does the same
for the compiled tables.
"""
import argparse
import json
import os
import sys
import unicodedata

SCRIPTS_AGE = (9, 0)
CATEGORIES_AGE = (8, 0)
# Values that changed in the UCD after those versions (so the current files
# give the wrong old value): script as of 9.0, general category as of 8.0.
# Found by --check against the reference, then confirmed in the UCD history.
NORM_AGE = (9, 0)
OLD_SCRIPT = {0x0589: "Common", 0x061C: "Common", 0x0953: "Devanagari", 0x0954: "Devanagari"}
OLD_GC = {0x166D: "Po", 0x111C9: "Po", 0x1734: "Mn", 0x1885: "Lo", 0x1886: "Lo", 0xA9BD: "Mc"}
# ... and as of NORM_AGE (9.0)
OLD_GC_NORM = {0x1CF2: "Mc", 0x1CF3: "Mc", 0x111C9: "Po"}


def parse_ranges(path):
    """Yields (lo, hi, value, comment) of a UCD 'lo..hi ; value # comment' file."""
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            body, _, comment = line.partition("#")
            body = body.strip()
            if not body:
                continue
            cps, val = [x.strip() for x in body.split(";")[:2]]
            lo, _, hi = cps.partition("..")
            yield int(lo, 16), int(hi or lo, 16), val, comment.strip()


def load_age(ucd):
    age = {}
    for lo, hi, v, _ in parse_ranges(os.path.join(ucd, "DerivedAge.txt")):
        t = tuple(int(x) for x in v.split("."))
        for c in range(lo, hi + 1):
            age[c] = t
    return age


def load_gc(ucd, nf=None):
    """General categories; nf (a dict) gets cp -> (ccc, decomposition field)."""
    gc = {}
    first = None
    with open(os.path.join(ucd, "UnicodeData.txt"), encoding="utf-8") as fh:
        for line in fh:
            f = line.split(";")
            c, name, cat = int(f[0], 16), f[1], f[2]
            if nf is not None and (int(f[3]) or f[5]):
                nf[c] = (int(f[3]), f[5])
            if name.endswith(", First>"):
                first = c
                continue
            if name.endswith(", Last>"):
                for x in range(first, c + 1):
                    gc[x] = cat
                continue
            gc[c] = cat
    return gc


def to_ranges(pairs):
    """[(cp, value)] sorted by cp -> [(lo, hi, value)] merging neighbours."""
    out = []
    for c, v in pairs:
        if out and out[-1][1] + 1 == c and out[-1][2] == v:
            out[-1][1] = c
        else:
            out.append([c, c, v])
    return out


def build(ucd, ref_path):
    age = load_age(ucd)
    nf = {}
    gc = load_gc(ucd, nf)
    script = {}
    for lo, hi, v, _ in parse_ranges(os.path.join(ucd, "Scripts.txt")):
        for c in range(lo, hi + 1):
            if age.get(c, (99,)) <= SCRIPTS_AGE:
                script[c] = v
    script.update(OLD_SCRIPT)
    gc_norm = dict(gc)
    gc_norm.update(OLD_GC_NORM)
    gc.update(OLD_GC)
    # The reference pre-tokenizer's own adjustments.
    for c, v in list(script.items()):
        if v in ("Hiragana", "Katakana"):
            script[c] = "Han"
    script[0x30FC] = "Han"
    script.pop(0x20, None)
    names = sorted(set(script.values()))
    sid = {n: i + 1 for i, n in enumerate(names)}  # 0 = Any
    scr = to_ranges((c, sid[script[c]]) for c in sorted(script))

    def cat_set(cats):
        cs = sorted(c for c, k in gc.items() if k in cats and age.get(c, (99,)) <= CATEGORIES_AGE)
        return [(lo, hi) for lo, hi, _ in to_ranges((c, 1) for c in cs)]

    # StripAccents: unicode_normalization_alignments' is_combining_mark, M*
    # as of NORM_AGE.
    mark = sorted(c for c, k in gc_norm.items() if k[0] == "M" and age.get(c, (99,)) <= NORM_AGE)
    # Digits: Rust's char::is_numeric, whose Unicode can be newer than
    # Debian's: N*, plus the numeric chars the reference knows that are not
    # in this UCD at all (read from the reference's recorded behaviour).
    numeric = set(c for c, k in gc_norm.items() if k[0] == "N")
    newer = 0
    if ref_path and os.path.exists(ref_path):
        with open(ref_path, encoding="utf-8") as fh:
            ref = json.load(fh)
        for lo, hi in ref.get("numeric", []):
            for c in range(lo, hi + 1):
                if c not in age:
                    numeric.add(c)
                    newer += 1
    # Normalization: the reference's tables are Unicode NORM_AGE. A later
    # char with a decomposition, a combining class or a part in a canonical
    # composition is, for it, an unassigned starter that nothing touches:
    # inferd normalizes around such chars ("frozen") with utf8proc.
    frozen = set()
    for c, (ccc, dec) in nf.items():
        if age.get(c, (99,)) > NORM_AGE:
            frozen.add(c)
        if dec and not dec.startswith("<"):
            for x in dec.split():
                if age.get(int(x, 16), (99,)) > NORM_AGE:
                    frozen.add(int(x, 16))
    return {
        "mark": [(lo, hi) for lo, hi, _ in to_ranges((c, 1) for c in mark)],
        "numeric": [(lo, hi) for lo, hi, _ in to_ranges((c, 1) for c in sorted(numeric))],
        "numeric_newer": newer,
        "nf_frozen": [(lo, hi) for lo, hi, _ in to_ranges((c, 1) for c in sorted(frozen))],
        "script_names": ["Any"] + names,
        "scripts": scr,
        "punct": cat_set({"Pc", "Pd", "Ps", "Pe", "Pi", "Pf", "Po"}),
        "other": cat_set({"Cc", "Cf", "Co"}),
        "mn": cat_set({"Mn"}),
    }


def emit_c(t, out):
    L = []
    w = L.append
    w("/* GENERATED by tools/unicode/gen_tables.py from Debian's unicode-data")
    w(" * (Scripts.txt, DerivedAge.txt, UnicodeData.txt); do not edit. The")
    w(" * Unicode versions the Rust `tokenizers` library uses: scripts as of %d.%d" % SCRIPTS_AGE)
    w(" * (UnicodeScripts), categories as of %d.%d (unicode_categories: punct," % CATEGORIES_AGE)
    w(" * other, mn), normalization as of %d.%d (unicode_normalization_alignments:" % NORM_AGE)
    w(" * mark, nf_frozen); numeric as Rust's char::is_numeric. */")
    w('#include "tokenizer/tk_int.h"')
    w("")
    w("/* script ids: " + ", ".join("%d %s" % (i, n) for i, n in enumerate(t["script_names"])) + " */")
    # wrap the comment
    L[-1] = wrap_comment(L[-1])
    w("const tk_urange tk_uni_scripts[] = {")
    for lo, hi, v in t["scripts"]:
        w("    {0x%04X, 0x%04X, %d}," % (lo, hi, v))
    w("};")
    w("const size_t tk_uni_scripts_n = sizeof tk_uni_scripts / sizeof tk_uni_scripts[0];")
    sc = {}
    for lo, hi, v in t["scripts"]:
        for c in range(lo, min(hi, 127) + 1):
            sc[c] = v
    w("const uint8_t tk_uni_script_ascii[128] = {")
    row = ["%d," % sc.get(c, 0) for c in range(128)]
    for i in range(0, 128, 16):
        w("    " + " ".join(row[i:i + 16]))
    w("};")
    for name in ("punct", "other", "mn", "mark", "numeric", "nf_frozen"):
        w("")
        w("const tk_urange tk_uni_%s[] = {" % name)
        rows = ["{0x%04X, 0x%04X, 1}," % (lo, hi) for lo, hi in t[name]]
        for i in range(0, len(rows), 3):
            w("    " + " ".join(rows[i:i + 3]))
        w("};")
        w("const size_t tk_uni_%s_n = sizeof tk_uni_%s / sizeof tk_uni_%s[0];" % (name, name, name))
    with open(out, "w", encoding="ascii") as fh:
        fh.write("\n".join(L) + "\n")


def wrap_comment(s, width=96):
    words = s.split(" ")
    lines, cur = [], ""
    for wd in words:
        if len(cur) + len(wd) + 1 > width:
            lines.append(cur)
            cur = " *"
        cur = (cur + " " + wd) if cur else wd
    lines.append(cur)
    return "\n".join(lines)


def check(t, ref_path):
    """Compares the tables with the reference's recorded behaviour; returns the
    number of differing code points."""
    with open(ref_path, encoding="utf-8") as fh:
        ref = json.load(fh)
    bad = 0
    # scripts: same partition (ids are arbitrary labels on both sides)
    mine = {}
    for lo, hi, v in t["scripts"]:
        for c in range(lo, hi + 1):
            mine[c] = v
    theirs = {}
    for lo, hi, v in ref["scripts"]:
        for c in range(lo, hi + 1):
            theirs[c] = v
    f, g = {}, {}
    diffs = []
    for c in range(0x110000):
        if 0xD800 <= c <= 0xDFFF:
            continue
        a, b = mine.get(c, 0), theirs.get(c)
        ok = (a == 0) == (b is None)
        if ok and a:
            ok = f.setdefault(a, b) == b and g.setdefault(b, a) == a
        if not ok:
            diffs.append(c)
    if diffs:
        print("scripts: %d code points differ, e.g. %s" % (len(diffs), ", ".join("U+%04X" % c for c in diffs[:12])))
    bad += len(diffs)
    for name in ("punct", "other", "mn", "mark", "numeric"):
        if name not in ref:
            continue
        a = set(c for lo, hi in t[name] for c in range(lo, hi + 1))
        b = set(c for lo, hi in ref[name] for c in range(lo, hi + 1))
        if name == "punct":  # ASCII punctuation is checked apart by the reference
            a |= set(c for c in range(0x80) if chr(c) in "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
        if name == "other":  # clean_text: NUL and U+FFFD always go, \t \n \r never
            a = (a - {9, 10, 13}) | {0, 0xFFFD}
        if name in ("mn", "mark"):  # the probe covers the code points that NFD leaves alone
            a = set(c for c in a if unicodedata.normalize("NFD", chr(c)) == chr(c))
        d = sorted(a ^ b)
        if d:
            print("%s: %d code points differ, e.g. %s" % (name, len(d), ", ".join(
                "U+%04X(%s)" % (c, "ours" if c in a else "ref") for c in d[:12])))
        bad += len(d)
    return bad


REF = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "tokenizer", "unicode_ref.json")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ucd", default="/usr/share/unicode")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "..", "tokenizer", "tk_unitab.c"))
    ap.add_argument("--check", help="reference behaviour (unicode_ref.json) to compare with")
    args = ap.parse_args()
    t = build(args.ucd, args.check or REF)
    emit_c(t, args.out)
    print("%s: %d script ranges; ranges: %d punct, %d other, %d mn, %d mark, %d numeric (%d chars newer"
          " than the UCD), %d nf_frozen" % (
              os.path.normpath(args.out), len(t["scripts"]), len(t["punct"]), len(t["other"]), len(t["mn"]),
              len(t["mark"]), len(t["numeric"]), t["numeric_newer"], len(t["nf_frozen"])))
    if args.check:
        sys.exit(1 if check(t, args.check) else 0)


if __name__ == "__main__":
    main()
