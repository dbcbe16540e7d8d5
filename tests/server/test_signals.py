"""Signals and the shutdown flag against a real `inferd serve models/demo`:
SIGHUP drains like SIGTERM (as uvicorn, and so vLLM, treat it), a second
SIGTERM or SIGINT during the drain stops at once, and --shutdown-timeout
takes only a finite number of seconds >= 0."""
import os
import signal
import subprocess
import sys
import threading
import time

import requests

sys.path.insert(0, os.path.dirname(__file__))
from serverlib import INFERD, Server, check, finish  # noqa: E402

DEMO = "models/demo"
LONG = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 900, "ignore_eos": True}


def stopped(s, timeout):
    """Exit status, or None if still running after timeout seconds."""
    try:
        return s.p.wait(timeout)
    except subprocess.TimeoutExpired:
        return None


def finish_server(s):
    if s.p.poll() is None:
        s.p.kill()
        s.p.wait()
    s.p.stdout.close()
    os.unlink(s.log.name)


# SIGHUP: the stream in flight ends with [DONE], then a clean exit.
s = Server(model_dir=DEMO)
r = requests.post(s.url + "/v1/chat/completions", json=dict(LONG, max_tokens=300, stream=True),
                  stream=True, timeout=60)
lines = r.iter_lines()
first = next(lines)
s.p.send_signal(signal.SIGHUP)
rest = [first]
try:
    rest += list(lines)
except requests.exceptions.RequestException as e:  # the stream was cut
    rest.append(repr(e).encode())
events = [x for x in rest if x]
check("SIGHUP: the stream in flight still ends with [DONE]", events[-1:] == [b"data: [DONE]"], events[-2:])
rc = stopped(s, 30)
check(f"SIGHUP: serve exits 0 after the drain (got {rc})", rc == 0, s.stderr()[-600:])
check("SIGHUP: the log names it", "SIGHUP" in s.stderr(), s.stderr()[-600:])
finish_server(s)

# A second SIGTERM / SIGINT while draining: stop now, cancelling the rest.
for sig in (signal.SIGTERM, signal.SIGINT):
    s = Server(model_dir=DEMO, args=["--shutdown-timeout", "120", "--max-num-seqs", "1"])
    done = []
    def client():
        try:
            done.append(requests.post(s.url + "/v1/chat/completions", json=LONG, timeout=120).status_code)
        except requests.exceptions.RequestException:
            done.append(None)  # cut off by the stop: expected
    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    s.p.send_signal(sig)
    time.sleep(0.3)
    draining = s.p.poll() is None
    t0 = time.time()
    s.p.send_signal(sig)
    rc = stopped(s, 10)
    took = time.time() - t0
    name = signal.Signals(sig).name
    check(f"{name}: the first one drains (still running with requests in flight)", draining)
    check(f"a second {name} stops at once ({took:.2f}s, exit {rc})", rc == 0 and took < 2, s.stderr()[-600:])
    check(f"a second {name}: the log says so", "second" in s.stderr(), s.stderr()[-600:])
    for t in threads:
        t.join()
    finish_server(s)

# --shutdown-timeout: finite seconds >= 0 only.
for bad in ("nan", "-1", "inf", "-inf", "1e400", "5s"):
    try:
        p = subprocess.run([INFERD, "serve", DEMO, "--host", "127.0.0.1", "--port", "0",
                            "--shutdown-timeout", bad], capture_output=True, text=True, timeout=10)
        rc, err = p.returncode, p.stderr
    except subprocess.TimeoutExpired:  # accepted: it served
        rc, err = None, ""
    check(f"--shutdown-timeout {bad}: refused (exit 2) naming the flag",
          rc == 2 and "--shutdown-timeout" in err, (rc, err[-300:]))
with Server(model_dir=DEMO, args=["--shutdown-timeout", "0"]) as s:
    check("--shutdown-timeout 0 is accepted", s.get("/health").status_code == 200)

finish()
