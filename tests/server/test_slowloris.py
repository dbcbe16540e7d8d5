"""Slowloris against a real `inferd serve models/demo` on loopback: one
address opens many connections and trickles its requests a byte at a time.
It gets --max-connections-per-ip of them, each closed when its request is
not in whole by --request-read-timeout (a deadline, not renewed by each
byte), while another address (127.0.0.2: loopback answers all of 127/8)
is served at once: /health and a chat completion."""
import http.client
import json
import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from serverlib import Server, check, finish  # noqa: E402

PER_IP, DEADLINE = 16, 2.0


def closed_by_server(c):
    """True once the server has closed c (EOF or reset), without waiting."""
    c.setblocking(False)
    try:
        return c.recv(4096) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def other_address(port, method, path, body=None, timeout=10):
    h = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout, source_address=("127.0.0.2", 0))
    t0 = time.time()
    h.request(method, path, body=json.dumps(body) if body else None,
              headers={"Content-Type": "application/json"})
    r = h.getresponse()
    data = r.read()
    h.close()
    return r.status, data, time.time() - t0


with Server(model_dir="models/demo", args=["--max-connections-per-ip", str(PER_IP),
                                           "--request-read-timeout", str(DEADLINE)]) as s:
    # The attack: 3x the per-address cap, half trickling headers, half a
    # body they announced, a byte every 0.3 s.
    conns, stop = [], threading.Event()
    for i in range(3 * PER_IP):
        try:
            c = socket.create_connection(("127.0.0.1", s.port), timeout=5)
        except OSError:
            continue
        c.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n" +
                  (b"Content-Length: 100000\r\n\r\n{" if i % 2 else b"X-Slow: "))
        conns.append(c)
    t_open = time.time()

    def trickle():
        while not stop.is_set():
            for c in conns:
                try:
                    c.send(b"a")
                except OSError:
                    pass
            stop.wait(0.3)
    th = threading.Thread(target=trickle)
    th.start()
    time.sleep(0.5)
    held = [c for c in conns if not closed_by_server(c)]
    check(f"one address holds at most --max-connections-per-ip ({len(held)} of {len(conns)} held)",
          0 < len(held) <= PER_IP, len(held))

    st, body, took = other_address(s.port, "GET", "/health")
    check(f"/health from another address under the attack: 200 in {took:.2f}s", st == 200 and took < 2)
    st, body, took = other_address(s.port, "POST", "/v1/chat/completions",
                                   {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8})
    check(f"a chat completion from another address: 200 in {took:.2f}s", st == 200 and took < 5, body[:200])

    # Every slow connection is gone by the deadline, trickling or not.
    while time.time() - t_open < DEADLINE + 1.5 and not all(closed_by_server(c) for c in held):
        time.sleep(0.1)
    open_left = [c for c in held if not closed_by_server(c)]
    check(f"slow connections closed by the deadline ({time.time() - t_open:.1f}s, {len(open_left)} open)",
          not open_left)
    stop.set()
    th.join()
    for c in conns:
        c.close()

    # The address is served again once its slots are free; an idle
    # keep-alive connection is closed by the same deadline.
    time.sleep(0.3)
    st = s.get("/health").status_code
    check("after the attack, the attacking address is served again", st == 200)
    idle = socket.create_connection(("127.0.0.1", s.port))
    idle.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    time.sleep(0.2)
    first = idle.recv(4096)
    t0 = time.time()
    while time.time() - t0 < DEADLINE + 1.5 and not closed_by_server(idle):
        time.sleep(0.1)
    check(f"an idle keep-alive connection is closed by the deadline ({time.time() - t0:.1f}s)",
          first.startswith(b"HTTP/1.1 200") and closed_by_server(idle))
    idle.close()

    # A request that arrives in time is unaffected: a slow but whole one.
    c = socket.create_connection(("127.0.0.1", s.port))
    for piece in (b"GET /health HTT", b"P/1.1\r\nHost: x\r\n", b"Connection: close\r\n\r\n"):
        c.sendall(piece)
        time.sleep(0.3)
    c.settimeout(5)
    check("a request sent in pieces within the deadline is answered", c.recv(4096).startswith(b"HTTP/1.1 200"))
    c.close()

finish()
