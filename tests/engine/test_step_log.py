"""INFERD_STEP_LOG end to end: the real `inferd serve` on the bundled demo
model writes one line per engine step to the file the variable names. Three
greedy /v1/completions requests (Python requests), one after the other, then
SIGTERM; the file has its header and one well-formed line per step: step
numbers strictly increasing, per request prefill steps of at most 512 tokens
(the CPU's default --max-num-batched-tokens) whose prompt_tokens add up to
the prompt's length (usage.prompt_tokens, prefix caching off so every
prompt token is computed), decode-only steps with the context growing by one,
and the prompt tokens over all lines adding up to those of the requests.
The lines are in the file while the server still runs (line-buffered).
A variable naming a file in a folder that does not exist stops `inferd
serve` at start with exit status 1 and a message naming the variable."""
import os
import re
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "server"))
from serverlib import Server, check, finish  # noqa: E402

HEADER = "# step seqs prompt_tokens decode_rows max_ctx idle_ms schedule_ms forward_ms emit_ms"


def start(step_log, wait_ready=True):
    return Server(model_dir="models/demo", args=("--no-enable-prefix-caching",),
                  env={"INFERD_STEP_LOG": step_log}, wait_ready=wait_ready)


def complete(srv, prompt, max_tokens):
    r = srv.post("/v1/completions", {"model": "tiny", "prompt": prompt,
                                     "max_tokens": max_tokens, "temperature": 0,
                                     "ignore_eos": True})
    assert r.status_code == 200, r.text
    return r.json()["usage"]


tmp = tempfile.mkdtemp(prefix="inferd-steplog-")
step_log = os.path.join(tmp, "steps.log")

# --- The log of a serving run -------------------------------------------
with start(step_log) as srv:
    # the third prompt is longer than the CPU's default step of 512 tokens
    usages = [complete(srv, "题目：静夜思", 5), complete(srv, "写一首关于春天的诗，要有花", 3),
              complete(srv, "春" * 300 + "秋" * 300, 2)]
    want_steps = sum(u["completion_tokens"] + (u["prompt_tokens"] - 1) // 512 for u in usages)
    # a step's line follows its emit, which can reach the client first: wait a
    # little, but with the server still running
    for _ in range(50):
        live = open(step_log).read().splitlines()
        if len(live) >= 1 + want_steps:
            break
        time.sleep(0.1)
    check(f"while the server runs the file holds every step ({want_steps})",
          len(live) == 1 + want_steps, live)
print("usages:", usages)
text = open(step_log).read()
print(text, end="")
lines = text.splitlines()
check("the first line is the header", lines and lines[0] == HEADER, lines[:1])
check("the header appears once", sum(1 for l in lines if l.startswith("#")) == 1)
steps = lines[1:]
check("at least one step line", len(steps) >= 1)

INT, MS = r"(0|[1-9]\d*)", r"(\d+\.\d{3})"
shape = re.compile(r"^" + r" ".join([INT] * 5 + [MS] * 4) + r"$")
rows = []
for l in steps:
    if check(f"well-formed: {l!r}", shape.match(l) is not None):
        f = l.split()
        rows.append([int(x) for x in f[:5]] + [float(x) for x in f[5:]])
check("9 fields on every line", all(len(l.split()) == 9 for l in steps))
nums = [r[0] for r in rows]
check("step numbers start at 1 and strictly increase",
      nums and nums[0] >= 1 and all(a < b for a, b in zip(nums, nums[1:])), nums)
check("seqs >= 1 and max_ctx >= 1 on every line", all(r[1] >= 1 and r[4] >= 1 for r in rows))
check("every line is a prefill or decode step", all(r[2] > 0 or r[3] > 0 for r in rows))
check("times are non-negative ms", all(min(r[5:]) >= 0 for r in rows))
check("forward_ms > 0 on every line (a forward pass ran)", all(r[7] > 0 for r in rows))
check("the first step has no previous step to idle after", rows and rows[0][5] == 0)
prefill = [r for r in rows if r[2] > 0]
decode = [r for r in rows if r[2] == 0 and r[3] > 0]
check("some step carries prompt tokens", len(prefill) >= 1)
check("some step is decode-only", len(decode) >= 1)
want = sum(u["prompt_tokens"] for u in usages)
check(f"prompt tokens over all lines = usage.prompt_tokens summed ({want})",
      sum(r[2] for r in rows) == want, [r[2] for r in rows])

# The requests ran one after the other, so the steps are: per request, its
# prompt in steps of at most 512 tokens (the CPU's default
# --max-num-batched-tokens; seqs 1, max_ctx = the tokens so far), then
# completion_tokens - 1 decode steps of one row whose context grows by one.
check("the long prompt is longer than one step", usages[2]["prompt_tokens"] > 512, usages)
expect = []
for u in usages:
    n = u["prompt_tokens"]
    expect += [[1, min(512, n - d), 0, min(n, d + 512)] for d in range(0, n, 512)]
    expect += [[1, 0, 1, n + k] for k in range(1, u["completion_tokens"])]
check("steps match the three requests (seqs prompt_tokens decode_rows max_ctx)",
      [r[1:5] for r in rows] == expect, ([r[1:5] for r in rows], expect))

# --- A log that cannot be opened ----------------------------------------
bad = os.path.join(tmp, "no-such-dir", "steps.log")
srv = start(bad, wait_ready=False)
rc = srv.p.wait(60)
srv.p.stdout.close()
out = srv.stderr()
os.unlink(srv.log.name)
print(out, end="")
check(f"serve with an unwritable INFERD_STEP_LOG exits 1 (got {rc})", rc == 1, out[-1500:])
check("the message names INFERD_STEP_LOG and the path",
      f"INFERD_STEP_LOG: cannot write {bad}" in out, out[-1500:])
check("no sanitizer report", "Sanitizer" not in out and "runtime error" not in out, out[-1500:])
check("no file is created", not os.path.exists(os.path.dirname(bad)))

os.unlink(step_log)
os.rmdir(tmp)
finish()
