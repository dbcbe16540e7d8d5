"""The bundled demo model behind `inferd serve`, asked as the README asks it:
a chat request over HTTP (Python requests) gets a poem of at least 20 CJK
characters, and greedy output is the same across requests and across two
server runs."""
import os, socket, subprocess, sys, time
import requests

INFERD = os.environ["INFERD"]


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


def serve():
    port = free_port()
    p = subprocess.Popen([INFERD, "serve", "models/demo", "--host", "127.0.0.1", "--port", str(port),
                          "--threads", "1", "--kv-cache-memory", "64MiB", "--disable-log-requests"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if requests.get(url + "/health", timeout=1).status_code == 200:
                return p, url
        except requests.ConnectionError:
            pass
        time.sleep(0.1)
    p.kill(); print(p.stdout.read()); sys.exit("server did not become healthy in 60 s")


def ask(url, content, **kw):
    r = requests.post(url + "/v1/chat/completions", timeout=120, json={
        "model": "models/demo", "messages": [{"role": "user", "content": content}], **kw})
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["message"]["content"]


def cjk(s):
    return sum(1 for ch in s if "\u4e00" <= ch <= "\u9fff")


outs = []
for run in range(2):
    p, url = serve()
    try:
        a = ask(url, "写一首关于春天的诗", temperature=0, max_tokens=96)
        b = ask(url, "写一首关于春天的诗", temperature=0, max_tokens=96)
        print(f"run {run}: {a!r}")
        assert a == b, (a, b)
        assert cjk(a) >= 20, f"only {cjk(a)} CJK characters: {a!r}"
        s = ask(url, "题目：静夜思", temperature=0.7, top_p=0.9, seed=3, max_tokens=96)
        assert cjk(s) >= 20, f"sampled answer has only {cjk(s)} CJK characters: {s!r}"
        outs.append(a)
    finally:
        p.terminate(); p.wait(timeout=30)
assert outs[0] == outs[1], outs
print("ok: demo answers with poems, greedy output stable across requests and server runs")
