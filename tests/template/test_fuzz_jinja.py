"""Differential test against Jinja2 itself: thousands of random templates
(expressions, filters, tests, methods, loops, macros, whitespace control;
tools/golden/template_fuzz.py) rendered by Debian's python3-jinja2 in
transformers' environment and by `inferd chat-template --raw-jsonl` must
agree: the same text, or both failing (raise_exception with the same
message). Then random conversations through the real model templates."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../tools/golden"))
import template_fuzz  # noqa: E402

inferd = os.environ.get("INFERD", "build/inferd")
rc = 0
for seed in (1, 2):
    rc |= template_fuzz.main(["--n", "2500", "--seed", str(seed), "--inferd", inferd, "--show", "10"])
# random conversations (roles, tool calls, reasoning, unicode, whitespace)
# through every model template of the fixtures
rc |= template_fuzz.main(["--chat", "--n", "500", "--seed", "1", "--inferd", inferd, "--show", "5"])
sys.exit(rc)
