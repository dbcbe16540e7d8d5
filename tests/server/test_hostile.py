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

finish()
