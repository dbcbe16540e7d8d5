#!/usr/bin/env python3
"""/v1/embeddings refuses a field it does not know with a 400 that names it,
as chat and completions do: a client that sends one believes it does
something. OpenAI's own fields and truncate_prompt_tokens are served."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "server"))
from serverlib import Server, check, finish  # noqa: E402

with Server(model_dir="tests/fixtures/encoder/models/xlmr_st") as srv:
    ids = [0, 100, 200, 2]
    r = srv.post("/v1/embeddings", {"model": "tiny", "input": [ids], "encoding_format": "float",
                                    "user": "u1", "truncate_prompt_tokens": 8})
    check("embeddings with OpenAI's fields: 200", r.status_code == 200, r.text[:300])
    r = srv.post("/v1/embeddings", {"input": [ids], "input_type": "query"})
    e = r.json().get("error", {})
    check("embeddings with an unknown field: 400 naming it", r.status_code == 400
          and e.get("param") == "input_type" and "input_type" in e.get("message", ""), r.text[:300])
finish()
