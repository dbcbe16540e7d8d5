"""What a hostile or unusual client sends, against a real `inferd serve
models/demo` on loopback: each check is a defect of issue 23 that once got
a wrong answer, an over-read or a crash (run under build-san too)."""
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time

import requests

sys.path.insert(0, os.path.dirname(__file__))
from serverlib import Server, check, finish  # noqa: E402

DEMO = "models/demo"
vocab = json.load(open(f"{DEMO}/tokenizer.json", encoding="utf-8"))["model"]["vocab"]
id_to_str = {i: s for s, i in vocab.items()}



def raw_request(port, path, body, half_close=False, close_after=None, timeout=60):
    """One HTTP/1.1 request on its own socket; half_close: shutdown(SHUT_WR)
    once sent, as some clients and proxies do; close_after: hang up after
    that many seconds instead of reading. Returns (status, headers, body)
    of the final response, skipping interim 1xx ones."""
    data = json.dumps(body).encode()
    return exchange(port, b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (path.encode(), len(data), data),
                    half_close, close_after, timeout)[0]


def exchange(port, data, half_close=False, close_after=None, timeout=60):
    """Sends bytes on a socket of its own and reads to EOF: the list of
    final responses as (status, lower-case head, body)."""
    c = socket.create_connection(("127.0.0.1", port))
    c.sendall(data)
    if half_close:
        c.shutdown(socket.SHUT_WR)
    if close_after is not None:
        time.sleep(close_after)
        c.close()
        return [None]
    c.settimeout(timeout)
    out = b""
    try:
        while True:
            d = c.recv(65536)
            if not d:
                break
            out += d
    except (socket.timeout, ConnectionResetError):
        pass
    c.close()
    answers = []
    while out.startswith(b"HTTP/"):
        head, _, out = out.partition(b"\r\n\r\n")
        status = int(head.split(b" ")[1])
        if 100 <= status < 200:  # interim responses come before the answer
            continue
        h = head.decode("latin-1").lower()
        n = re.search(r"content-length: *(\d+)", h)
        n = int(n.group(1)) if n and b"HEAD" not in data[:4] else (0 if n else len(out))
        answers.append((status, h, out[:n]))
        out = out[n:]
    return answers or [(0, "", out)]


def dechunk(body):
    """The payload of a chunked transfer-coded body."""
    out = b""
    while body:
        size, _, body = body.partition(b"\r\n")
        n = int(size.split(b";")[0] or b"0", 16)
        if n == 0:
            break
        out, body = out + body[:n], body[n + 2:]
    return out


with Server(model_dir=DEMO, args=["--max-num-seqs", "1"]) as s:
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

    # A client that half-closes after sending still gets its whole answer,
    # blocking or streamed; streamed while it waits behind another request
    # (--max-num-seqs 1), when no tokens come for a while.
    chat = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 200, "ignore_eos": True}
    st, head, body = raw_request(s.port, "/v1/chat/completions", chat, half_close=True)
    j = json.loads(body) if st == 200 else {}
    check("half-closed client, not streaming: the whole answer",
          st == 200 and j.get("usage", {}).get("completion_tokens") == 200, (st, body[:200]))
    blocker = threading.Thread(target=lambda: s.post("/v1/chat/completions", dict(chat, max_tokens=300)))
    blocker.start()
    time.sleep(0.3)
    st, head, body = raw_request(s.port, "/v1/chat/completions",
                                 dict(chat, stream=True, stream_options={"include_usage": True}), half_close=True)
    blocker.join()
    events = [line[6:] for line in dechunk(body).split(b"\n") if line.startswith(b"data: ")]
    usage = json.loads(events[-2]).get("usage") if len(events) > 1 else None
    check("half-closed client, streaming behind another request: every token and [DONE]",
          st == 200 and events[-1:] == [b"[DONE]"] and usage and usage["completion_tokens"] == 200,
          (st, len(events), body[-300:]))

    # ...while a client that closes its socket still cancels its request.
    def aborted():
        return s.metrics().get('inferd:request_success_total{finished_reason="abort"}', 0)
    for stream in (False, True):
        a0, t0 = aborted(), time.time()
        raw_request(s.port, "/v1/chat/completions", dict(chat, max_tokens=900, stream=stream), close_after=0.2)
        while aborted() == a0 and time.time() - t0 < 5:
            time.sleep(0.05)
        check(f"a client that closes its socket cancels its request ({'streaming' if stream else 'blocking'}, "
              f"{time.time() - t0:.2f}s)", aborted() == a0 + 1 and time.time() - t0 < 1.5)

    # Request smuggling: two different Content-Length headers are 400 and
    # the connection ends there, so the bytes after are no second request.
    two_cl = (b"POST /tokenize HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: 2\r\nContent-Length: 37\r\n\r\n{}GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    got = exchange(s.port, two_cl, timeout=10)
    check("two different Content-Length headers: one 400, nothing smuggled",
          [a[0] for a in got] == [400] and b"Content-Length" in got[0][2], got)
    for cl in (b"Content-Length: 7, 2", b"Content-Length: 2\r\nContent-Length: +2"):
        got = exchange(s.port, b"POST /tokenize HTTP/1.1\r\nHost: x\r\n%s\r\n\r\n{}" % cl, timeout=10)
        check(f"{cl!r}: 400", [a[0] for a in got] == [400], got)
    body = b'{"prompt": "a"}'
    got = exchange(s.port, b"POST /tokenize HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n"
                   b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), len(body), body), timeout=10)
    check("the same Content-Length twice is one length (RFC 9112 6.3): 200", [a[0] for a in got] == [200], got)

    # A percent-encoded NUL does not cut the path short.
    for path in (b"/health%00/x", b"/v1/models%00", b"/metrics%00.txt"):
        got = exchange(s.port, b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path, timeout=10)
        check(f"GET {path.decode()}: 404", [a[0] for a in got] == [404], got)
    r = s.get("/health?probe=%00")
    check("a %00 in the query string does not matter to /health", r.status_code == 200, r.text)

    # HEAD is GET without a body (RFC 9110 9.3.2); POST routes still 405.
    models = s.get("/v1/models").content
    got = exchange(s.port, b"HEAD /v1/models HTTP/1.1\r\nHost: x\r\n\r\n"
                   b"HEAD /health HTTP/1.1\r\nHost: x\r\n\r\n"
                   b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", timeout=10)
    check("HEAD /v1/models and /health: 200, the GET's length, no body; the connection goes on",
          [(a[0], a[2]) for a in got] == [(200, b""), (200, b""), (200, b"")]
          and f"content-length: {len(models)}" in got[0][1], got)
    got = exchange(s.port, b"HEAD /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                   timeout=10)
    check("HEAD on a POST route: 405", [a[0] for a in got] == [405], got)

# A tokenizer of 3 tokens for the demo's 8,192-token model: refused at
# start, saying why, instead of chat answering 500 on the first id past 3.
with tempfile.TemporaryDirectory() as d:
    for f in ("config.json", "generation_config.json", "model.safetensors", "tokenizer_config.json"):
        os.symlink(os.path.abspath(f"{DEMO}/{f}"), f"{d}/{f}")
    json.dump({"model": {"type": "WordLevel", "unk_token": "<unk>", "vocab": {"<unk>": 0, "a": 1, "b": 2}},
               "pre_tokenizer": {"type": "Whitespace"}}, open(f"{d}/tokenizer.json", "w"))
    bad = Server(model_dir=d, wait_ready=False)
    try:
        rc = bad.p.wait(30)
    except subprocess.TimeoutExpired:  # it started serving
        rc = bad.stop()
    bad.p.stdout.close()
    err = bad.stderr()
    check(f"a 3-token tokenizer for an 8192-token model: serve exits 1 (got {rc})", rc == 1, err[-800:])
    check("the message gives both sizes", "3 tokens" in err and "8192" in err, err[-800:])
    os.unlink(bad.log.name)

finish()
