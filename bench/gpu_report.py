#!/usr/bin/env python3
"""Joins the two phases of bench/gpu.sh (inferd, llama.cpp) into rows of
bench/results.jsonl and a dated table in bench/RESULTS.md with the ratios
inferd / llama.cpp and issue 8's goals.
    bench/gpu_report.py OUT_INFERD OUT_LLAMA COMMIT [--sweep=OUT_SWEEP] [--append]
OUT_SWEEP: a `bench/gpu.sh sweep` run of the same commit (serve-64 at several
--max-num-batched-tokens), added as its own rows and table."""
import datetime
import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOALS = {"decode-b1": "≥ 170 tok/s", "decode-tg128": "> llama-bench tg128", "prefill-1024": "≥ 30,000 prompt tok/s",
         "prefill-1024x8": "≥ 30,000 prompt tok/s",
         "serve-64": "≥ 2,500 tok/s, TTFT p50 ≤ 300 ms, ITL p99 ≤ 60 ms",
         "serve-256": "≥ 12,000 tok/s", "prefix-64": "≥ 2× noprefix-64",
         "startup": "≤ 5 s"}


# progress bars and sample lines the test scripts print between their results
NOISE = ("Loading weights", "Writing model shards", "transformers [(")


def load(d):
    rows = {}
    try:
        for line in open(os.path.join(d, "bench.jsonl")):
            r = json.loads(line)
            rows[r.get("label") or r.get("workload")] = r
    except FileNotFoundError:
        pass
    return rows


def first_line(d, name):
    try:
        return open(os.path.join(d, name)).read().strip().splitlines()[0]
    except (FileNotFoundError, IndexError):
        return ""


def main():
    oi, ol, commit = sys.argv[1:4]
    append = "--append" in sys.argv
    sweep = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--sweep=")), None)
    date = datetime.date.today().isoformat()
    gpu = first_line(oi, "machine.txt") or first_line(ol, "machine.txt")
    model = "Llama-3.1-8B shape, bf16 random (tools/make_checkpoint.py --fast)"
    out, eng = [], {"inferd": load(oi), "llama.cpp": load(ol)}
    sw = load(sweep) if sweep else {}
    for engine, rows in list(eng.items()) + [("inferd", sw)]:
        cmd = first_line(oi if engine == "inferd" else ol, "command.txt")
        for label, r in rows.items():
            if rows is sw:
                label = label + " (sweep)"
                cmd = re.sub(r"--max-num-batched-tokens \d+", "--max-num-batched-tokens " +
                             label.split("@mbt")[1].split()[0], cmd)
            row = dict(date=date, commit=commit, device=gpu, model=model, engine=engine,
                       workload=label)
            if label == "startup":
                row.update(seconds=r["seconds"], command=cmd)
            else:
                row.update(concurrency=r["concurrency"], requests=r["requests"],
                           input_len=r["input_len"], output_len=r["output_len"],
                           prefix_len=r["prefix_len"],
                           output_tok_per_s=round(r["output_tok_s"], 1),
                           total_tok_per_s=round(r["output_tok_s"] + r["input_tok_s"], 1),
                           prompt_tok_per_s=round(r["input_tok_s"], 1),
                           ttft_p50_ms=round(r["ttft_p50_ms"], 1),
                           ttft_p99_ms=round(r["ttft_p99_ms"], 1),
                           itl_p50_ms=round(r["itl_p50_ms"], 2),
                           itl_p99_ms=round(r["itl_p99_ms"], 2),
                           command=cmd + f"; inferd bench --concurrency {r['concurrency']} "
                           f"--requests {r['requests']} --input-len {r['input_len']} "
                           f"--output-len {r['output_len']} --prefix-len {r['prefix_len']}")
            out.append(row)
    try:
        lb = json.load(open(os.path.join(ol, "llama_bench.json")))
        for r in lb:
            label = f"llama-bench pp{r['n_prompt']}" if r["n_prompt"] else f"llama-bench tg{r['n_gen']}"
            out.append(dict(date=date, commit=commit, device=gpu, model=model, engine="llama.cpp",
                            workload=label, tok_per_s=round(r["avg_ts"], 1),
                            command="llama-bench -m l8b-bf16.gguf -ngl 99 -fa 1 -p 1024 -n 128 -r 3"))
    except (FileNotFoundError, ValueError, KeyError) as e:
        print("no llama-bench numbers:", e)

    def fig(engine, label):
        r = eng[engine].get(label)
        if not r:
            return None
        if label == "startup":
            return r["seconds"]
        return r["input_tok_s"] if label.startswith("prefill") else r["output_tok_s"]

    m = re.search(r"--max-num-batched-tokens (\d+)", first_line(oi, "command.txt"))
    mbt = m.group(1) if m else "2048"
    lines = [f"\n## {date} — GPU side by side, inferd {commit} vs llama.cpp (bench/gpu.sh)\n",
             f"Machine: {gpu}. Model: {model}. Both engines measured with the same `inferd bench` "
             "workloads (closed loop, streaming, token-id prompts, temperature 0, ignore_eos). "
             "inferd with --matmul-precision bfloat16 (the "
             "activation precision llama.cpp and vLLM use); rows marked @float32 are inferd's "
             f"default precision; @mbtN: --max-num-batched-tokens N instead of {mbt}.\n" +
             (os.environ.get("REPORT_NOTE", "") + "\n" if os.environ.get("REPORT_NOTE") else ""),
             "| workload | figure | inferd | llama.cpp | inferd / llama.cpp | TTFT p50 ms (inferd / llama.cpp) | ITL p99 ms (inferd / llama.cpp) | goal |",
             "|---|---|---|---|---|---|---|---|"]
    order = ["startup", "decode-b1", "decode-tg128", "prefill-1024", "prefill-1024x8", "serve-64", "serve-256",
             "prefix-64", "noprefix-64", "serve-64@mbt1024", "serve-64@mbt2048", "decode-b1@float32", "prefill-1024@float32",
             "prefill-1024x8@float32", "serve-64@float32"]
    for label in order:
        a, b = fig("inferd", label), fig("llama.cpp", label)
        if a is None and b is None:
            continue
        what = "seconds" if label == "startup" else (
            "prompt tok/s" if label.startswith("prefill") else "output tok/s")
        ratio = f"{a / b:.2f}" if a and b else "-"
        ri, rl = eng["inferd"].get(label, {}), eng["llama.cpp"].get(label, {})
        def pair(key, f):
            return " / ".join(f.format(r[key]) if key in r else "-" for r in (ri, rl))
        tt = pair("ttft_p50_ms", "{:.0f}") if label != "startup" else "-"
        it = pair("itl_p99_ms", "{:.1f}") if label != "startup" else "-"
        fa = f"{a:,.1f}" if a is not None else "-"
        fb = f"{b:,.1f}" if b is not None else "-"
        lines.append(f"| {label} | {what} | {fa} | {fb} | {ratio} | {tt} | {it} | {GOALS.get(label.split('@')[0], '')} |")
    a, b = fig("inferd", "prefix-64"), fig("inferd", "noprefix-64")
    if a and b:
        lines.append(f"\nPrefix caching: inferd prefix-64 / noprefix-64 = {a / b:.2f}× (goal ≥ 2×).")
    lbr = [r for r in out if r["workload"].startswith("llama-bench")]
    if lbr:
        lines.append("llama-bench: " + ", ".join(f"{r['workload'][12:]} {r['tok_per_s']:,.1f} tok/s" for r in lbr) + ".")
    tg, a = next((r["tok_per_s"] for r in lbr if r["workload"] == "llama-bench tg128"), None), fig("inferd", "decode-tg128")
    if tg and a:
        lines.append(f"Decode from a short context (16-token prompt, 128 tokens, through HTTP) against "
                     f"llama-bench tg128 (empty context, no server): inferd {a:,.1f} / {tg:,.1f} tok/s = {a / tg:.2f}.")
        st = eng["inferd"].get("decode-tg128", {}).get("stream_tok_s_p50")
        if st:
            lines.append(f"Counted from each stream's first token to its last, as tg128 counts (no "
                         f"prompt): inferd {st:,.1f} / {tg:,.1f} tok/s = {st / tg:.2f}.")
    if sw:
        lines.append("\nserve-64 against --max-num-batched-tokens (the prompt tokens one step may "
                     "carry), `bench/gpu.sh sweep` (a fresh server for each):\n")
        lines.append("| --max-num-batched-tokens | output tok/s | TTFT p50 ms | ITL p50 ms | ITL p99 ms |")
        lines.append("|---|---|---|---|---|")
        for label, r in sw.items():
            lines.append(f"| {label.split('@mbt')[1]} | {r['output_tok_s']:,.1f} | "
                         f"{r['ttft_p50_ms']:.0f} | {r['itl_p50_ms']:.1f} | {r['itl_p99_ms']:.1f} |")
        lines.append("")
    kv = first_line(oi, "kv.txt")
    if kv:
        lines.append(f"inferd KV pool: {kv.strip()}")
    gold = os.path.join(oi, "golden.log")
    if os.path.exists(gold):
        lines.append("GPU tests at this commit (tests/cuda/test_cuda_golden.py, then "
                     "test_prefill_mma.py and test_decode_batch.py where the phase ran them): " +
                     "; ".join(l.strip() for l in open(gold)
                               if l.strip() and not any(n in l for n in NOISE)))
    text = "\n".join(lines) + "\n"
    print(text)
    if append:
        with open(os.path.join(ROOT, "bench", "RESULTS.md"), "a") as f:
            f.write(text)
        with open(os.path.join(ROOT, "bench", "results.jsonl"), "a") as f:
            for r in out:
                f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
