"""What a hostile or unusual client sends, against a real `inferd serve
models/demo` on loopback: each check is a defect of issue 23 that once got
a wrong answer, an over-read or a crash (run under build-san too)."""
import json
import os
import sys

import requests

sys.path.insert(0, os.path.dirname(__file__))
from serverlib import Server, check, finish  # noqa: E402

DEMO = "models/demo"
vocab = json.load(open(f"{DEMO}/tokenizer.json", encoding="utf-8"))["model"]["vocab"]
id_to_str = {i: s for s, i in vocab.items()}

with Server(model_dir=DEMO) as s:
    # /tokenize return_token_strs: each string is its vocabulary entry, not
    # the vocabulary's storage from that entry to the next NUL.
    text = "hello world, this is a test of the tokenizer " * 40
    r = s.post("/tokenize", {"prompt": text, "return_token_strs": True, "add_special_tokens": False})
    j = r.json()
    check("/tokenize return_token_strs: 200", r.status_code == 200, r.text[:300])
    check("token_strs are exactly the tokens' vocabulary strings",
          j["token_strs"] == [id_to_str[i] for i in j["tokens"]],
          [(i, id_to_str.get(i), len(t)) for i, t in zip(j["tokens"], j["token_strs"])
           if id_to_str.get(i) != t][:3])
    check(f"the response stays small ({len(r.content)} bytes for {len(j['tokens'])} tokens)",
          len(r.content) < 64 * len(j["tokens"]) + 512)

    # content: [] is "" joined from no text parts, as vLLM renders it (an
    # empty user message), not the heap bytes an unterminated buffer held.
    def chat_ids(content):
        r = s.post("/tokenize", {"messages": [{"role": "user", "content": content}]})
        return r.status_code, r.json().get("tokens")
    st, empty_list = chat_ids([])
    check("messages[0].content [] tokenizes (200)", st == 200, empty_list)
    check("content [] renders as an empty user message", empty_list == chat_ids("")[1],
          (empty_list, chat_ids("")[1]))
    r = s.post("/v1/chat/completions", {"messages": [{"role": "user", "content": []}], "max_tokens": 2})
    check("chat with content [] answers 200", r.status_code == 200, r.text[:300])

    # Values nested deep: the template's walks stop at 200 levels with a 400
    # that says so; jansson stops parsing at 2048 levels. Either way the
    # connection thread's 1 MiB stack holds (build-san checks it).
    def nested(depth, obj=False):
        return ('{"a":' * depth + "1" + "}" * depth) if obj else ("[" * depth + "]" * depth)

    def post_raw(body):
        return requests.post(s.url + "/v1/chat/completions", data=body, timeout=60,
                             headers={"Content-Type": "application/json"})
    for depth, obj in ((1500, False), (1500, True), (2000, False), (100000, False)):
        r = post_raw('{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1, '
                     '"chat_template_kwargs": {"deep": ' + nested(depth, obj) + "}}")
        msg = r.json().get("error", {}).get("message", "") if r.headers.get("content-type") == "application/json" else ""
        check(f"chat_template_kwargs nested {depth} deep ({'dicts' if obj else 'lists'}): 400 saying so",
              r.status_code == 400 and ("deeper than 200 levels" in msg or "maximum parsing depth" in msg), r.text[:300])
    r = post_raw('{"messages": [{"role": "user", "content": "hi", "x": ' + nested(1500) + '}], "max_tokens": 1}')
    check("a message nested 1500 deep: 400", r.status_code == 400 and "deeper than 200" in r.text, r.text[:300])
    r = s.post("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1,
                                        "chat_template_kwargs": {"deep": json.loads(nested(150))}})
    check("kwargs nested 150 deep still render", r.status_code == 200, r.text[:300])

finish()
