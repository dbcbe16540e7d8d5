#!/usr/bin/env python3
"""Encode throughput of the Rust `tokenizers` library (Python binding), one
thread, on the corpus joined into one text. Prints one JSON line per
tokenizer: name, bytes, best seconds of REPEAT runs, MB/s, token count.
Usage: tokenizer_bench.py CORPUS.jsonl TOKDIR NAME... [--repeat N]"""
import json
import os
import sys
import time

os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
from tokenizers import Tokenizer  # noqa: E402


def main():
    args = sys.argv[1:]
    repeat = 5
    if "--repeat" in args:
        i = args.index("--repeat")
        repeat = int(args[i + 1])
        del args[i:i + 2]
    corpus, tokdir, names = args[0], args[1], args[2:]
    with open(corpus, encoding="utf-8") as fh:
        text = "\n".join(json.loads(l)["text"] for l in fh)
    data = text.encode()
    for name in names:
        tok = Tokenizer.from_file(os.path.join(tokdir, name, "tokenizer.json"))
        best = 1e9
        n = 0
        for _ in range(repeat):
            t0 = time.perf_counter()
            n = len(tok.encode(text, add_special_tokens=False).ids)
            best = min(best, time.perf_counter() - t0)
        print(json.dumps({"name": name, "impl": "hf-tokenizers", "bytes": len(data), "seconds": best,
                          "mb_s": len(data) / best / 1e6, "tokens": n}), flush=True)


if __name__ == "__main__":
    main()
