#!/usr/bin/env python3
"""Summarises INFERD_STEP_LOG files (one line per engine step: step seqs
prompt_tokens decode_rows max_ctx idle_ms schedule_ms forward_ms emit_ms).

    python3 bench/steps_report.py STEPLOG...

Per file: steps split into decode-only steps and steps that carry prompt
tokens, by batch size; mean and p50/p99 of the forward pass (launch + device
+ wait) and the host parts (idle, schedule, emit). The host parts are time
the device waits, since a step's work is launched only after them."""
import statistics
import sys


def pct(v, q):
    v = sorted(v)
    return v[min(len(v) - 1, int(q * len(v)))] if v else 0.0


def summary(name, rows):
    if not rows:
        return
    fw = [r[7] for r in rows]
    host = [r[5] + r[6] + r[8] for r in rows]
    print(f"  {name:<22} {len(rows):6d} steps  seqs {statistics.mean(r[1] for r in rows):6.1f}"
          f"  prompt tok {statistics.mean(r[2] for r in rows):7.1f}"
          f"  ctx {statistics.mean(r[4] for r in rows):6.0f}"
          f"  forward ms mean {statistics.mean(fw):7.2f} p50 {pct(fw, .5):7.2f}"
          f" p99 {pct(fw, .99):7.2f}"
          f"  host ms {statistics.mean(host):6.2f}"
          f" (idle {statistics.mean(r[5] for r in rows):.2f}"
          f" sched {statistics.mean(r[6] for r in rows):.2f}"
          f" emit {statistics.mean(r[8] for r in rows):.2f})")


for path in sys.argv[1:]:
    rows = []
    with open(path) as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            p = line.split()
            rows.append([int(x) for x in p[:5]] + [float(x) for x in p[5:9]])
    if not rows:
        continue
    total = sum(r[5] + r[6] + r[7] + r[8] for r in rows)
    print(f"{path}: {len(rows)} steps, {total / 1e3:.2f} s;"
          f" forward {100 * sum(r[7] for r in rows) / total:.1f} %,"
          f" host {100 * sum(r[5] + r[6] + r[8] for r in rows) / total:.1f} %")
    dec = [r for r in rows if r[2] == 0]
    mix = [r for r in rows if r[2] > 0]
    summary("decode-only", dec)
    for lo, hi in ((1, 8), (9, 64), (65, 128), (129, 256)):
        summary(f"  decode {lo}-{hi} seqs", [r for r in dec if lo <= r[1] <= hi])
    summary("with prompt tokens", mix)
    for lo, hi in ((1, 512), (513, 1024), (1025, 2048)):
        summary(f"  prompt {lo}-{hi} tok", [r for r in mix if lo <= r[2] <= hi])
