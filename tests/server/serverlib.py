"""Shared by the server's Python tests: start `inferd serve` on a free port
of loopback with a tiny fixture model, wait until it is ready, stop it with
SIGTERM and insist on exit status 0. Not a test itself (no test_ prefix)."""
import json
import os
import re
import signal
import subprocess
import tempfile
import time

import requests

INFERD = os.environ.get("INFERD", "build/inferd")
MODELS = "tests/fixtures/models"
failures = []


def check(name, cond, detail=""):
    print(("ok   " if cond else "FAIL ") + name, flush=True)
    if not cond:
        failures.append(name)
        if detail:
            print("     " + str(detail)[:600], flush=True)
    return cond


def finish():
    print(f"\n{len(failures)} failures" + (": " + ", ".join(failures) if failures else ""))
    raise SystemExit(1 if failures else 0)


class Server:
    """`inferd serve` as a user starts it; port 0 makes the kernel pick a
    free port, which the server prints on its first line."""

    def __init__(self, model="qwen3", args=(), env=None, wait_ready=True, model_dir=None):
        self.log = tempfile.NamedTemporaryFile(prefix="inferd-serve-", suffix=".log", delete=False)
        cmd = [INFERD, "serve", model_dir or f"{MODELS}/{model}", "--host", "127.0.0.1", "--port", "0",
               "--served-model-name", "tiny", "--kv-cache-memory", "64MiB", "--threads", "2",
               # e.g. "--device cuda": the same tests against a GPU server
               *os.environ.get("INFERD_SERVE_ARGS", "").split(), *args]
        e = dict(os.environ)
        e.pop("INFERD_API_KEY", None)
        e.update(env or {})
        self.p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.log, env=e, text=True)
        line = self.p.stdout.readline()
        m = re.search(r"listening on http://[^ ]*:(\d+)", line)
        if not m:
            self.p.wait(10)
            raise RuntimeError(f"server did not start: {line!r} {open(self.log.name).read()[-2000:]}")
        self.port = int(m.group(1))
        self.url = f"http://127.0.0.1:{self.port}"
        if wait_ready:
            self.wait_ready()

    def wait_ready(self, timeout=60):
        t0 = time.time()
        while time.time() - t0 < timeout:
            line = self.p.stdout.readline()
            if "ready" in line:
                self.p.stdout.readline()  # the curl example
                return
            if not line and self.p.poll() is not None:
                break
        raise RuntimeError("server never became ready: " + self.stderr()[-2000:])

    def stderr(self):
        return open(self.log.name, encoding="utf-8", errors="replace").read()

    def post(self, path, body, **kw):
        return requests.post(self.url + path, json=body, timeout=kw.pop("timeout", 120), **kw)

    def get(self, path, **kw):
        return requests.get(self.url + path, timeout=kw.pop("timeout", 60), **kw)

    def metrics(self):
        out = {}
        for line in self.get("/metrics").text.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            name, value = line.rsplit(" ", 1)
            name = re.sub(r'model_name="[^"]*",?', "", name).replace("{}", "")
            out[name] = float(value)
        return out

    def stop(self, timeout=30):
        """SIGTERM; returns the exit status."""
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
        try:
            rc = self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            rc = self.p.wait()
        self.p.stdout.close()
        return rc

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        rc = self.stop()
        check(f"server exits 0 on SIGTERM (got {rc})", rc == 0, self.stderr()[-1500:])
        os.unlink(self.log.name)


def sse_events(resp):
    """The JSON payloads of an SSE response, then the literal [DONE]."""
    out = []
    for line in resp.iter_lines(decode_unicode=False):
        if not line:
            continue
        assert line.startswith(b"data: "), line
        data = line[6:].decode()
        out.append(data if data == "[DONE]" else json.loads(data))
    return out
