#!/usr/bin/python3
"""A local stand-in for the Hugging Face Hub, its CDN, and ModelScope, for the
hub tests. Three real HTTP servers on loopback:

  hf   /api/models/{id}/revision/{rev}[?blobs=true]  model info (sha, siblings)
       HEAD|GET /{id}/resolve/{rev}/{path}            small files: 200 + ETag (git
            blob sha1); LFS files: 302 to the CDN with a signed query string,
            X-Linked-Etag (sha256) and X-Linked-Size; X-Repo-Commit always;
            errors with X-Error-Code / X-Error-Message as the Hub sends them
            (RepoNotFound 401/404, RevisionNotFound 404, EntryNotFound 404,
            GatedRepo 401/403)
  cdn  GET /blobs/{sha256}?Expires=..&Signature=..    403 unless the signature is
            right; Range requests answered 206
  ms   /api/v1/models/{id}/repo/files?Revision=..     ModelScope's file list
       /api/v1/models/{id}/repo?Revision=..&FilePath=  ModelScope's download

Every request is appended to --log as a JSON line (server, method, path,
authorization header, range) so tests can check what went where. POST
/_ctl on the hf server changes behaviour (corrupt a file's bytes N times,
answer 503 N times, throttle the CDN).

Repos are the project's fixture models plus synthetic files (a .bin
duplicate, onnx/, a README) so the default selection has something to skip.
Prints {"hf": port, "cdn": port, "ms": port} on stdout once listening.
"""
import argparse
import hashlib
import hmac
import json
import os
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROOT = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.environ.get("HUBSERVER_FIXTURES") or os.path.join(ROOT, "..", "fixtures", "models")
SECRET = b"cdn-signing-key"
TOKENS_WITH_ACCESS = {"hf_good"}
VALID_TOKENS = {"hf_good", "hf_noaccess"}
LFS_EXT = (".safetensors", ".bin", ".pth", ".onnx", ".gguf")

lock = threading.Lock()
ctl = {"corrupt": {}, "fail503": {}, "throttle": 0, "api_blobs": True}
log_file = None


def git_blob_sha1(data):
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def make_repo(files, gated=False, private=False):
    files = dict(sorted(files.items()))
    commit = hashlib.sha1(json.dumps({k: hashlib.sha256(v).hexdigest()
                                      for k, v in files.items()}).encode()).hexdigest()
    meta = {}
    for path, data in files.items():
        m = {"size": len(data), "git": git_blob_sha1(data)}
        if path.endswith(LFS_EXT):
            m["sha256"] = hashlib.sha256(data).hexdigest()
            pointer = ("version https://git-lfs.github.com/spec/v1\noid sha256:%s\nsize %d\n"
                       % (m["sha256"], len(data))).encode()
            m["pointer"] = git_blob_sha1(pointer)
            m["pointer_size"] = len(pointer)
        meta[path] = m
    return {"files": files, "meta": meta, "commit": commit, "gated": gated,
            "private": private, "refs": {"main": commit, "v1.0": commit}}


def fixture_files(name):
    d = os.path.join(FIXTURES, name)
    out = {}
    for f in os.listdir(d):
        with open(os.path.join(d, f), "rb") as fh:
            out[f] = fh.read()
    return out


def build_repos():
    qwen2 = fixture_files("qwen2")
    # Files a serving pull must skip.
    qwen2["pytorch_model.bin"] = b"\x80\x02not really a pickle" * 100
    qwen2["onnx/model.onnx"] = b"onnx" * 256
    qwen2["onnx/config.json"] = b"{}"
    qwen2["README.md"] = b"# tiny qwen2\n"
    qwen2[".gitattributes"] = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
    big = {"config.json": fixture_files("llama")["config.json"],
           # Deterministic pseudo-random bytes: 3 MiB, an LFS file.
           "model.safetensors": b"".join(hashlib.sha256(b"%d" % i).digest()
                                         for i in range(3 * 1024 * 1024 // 32))}
    binonly = {"config.json": b'{"model_type": "llama"}',
               "pytorch_model.bin": b"weights" * 1000, "tokenizer.json": b"{}"}
    repos = {
        "inferd-test/qwen2": make_repo(qwen2),
        "inferd-test/llama": make_repo(fixture_files("llama")),
        "inferd-test/gated": make_repo(fixture_files("llama"), gated=True),
        "inferd-test/private": make_repo({"config.json": b"{}"}, private=True),
        "inferd-test/big": make_repo(big),
        "inferd-test/binonly": make_repo(binonly),
        "inferd-test/Qwen2.5-tiny": make_repo(fixture_files("qwen3")),
    }
    return repos


REPOS = build_repos()
RENAMED = {"inferd-test/old-llama": "inferd-test/llama"}
BLOBS = {}
for _r in REPOS.values():
    for _p, _m in _r["meta"].items():
        if "sha256" in _m:
            BLOBS[_m["sha256"]] = _r["files"][_p]


def sign(path_and_query):
    """Like a CDN's signed URL: the signature covers the path and the query
    exactly as written, so a client that re-encodes the URL is refused."""
    return hmac.new(SECRET, path_and_query.encode(), hashlib.sha256).hexdigest()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_name = "?"

    def handle(self):
        # A client that gives up mid-answer (inferd aborting its other
        # transfers after a fatal error, a killed pull) is normal here.
        try:
            super().handle()
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, fmt, *args):  # quiet; the JSON log is the record
        pass

    def record(self):
        entry = {"server": self.server_name, "method": self.command, "path": self.path,
                 "auth": self.headers.get("Authorization"),
                 "range": self.headers.get("Range"), "t": time.time()}
        with lock:
            log_file.write(json.dumps(entry) + "\n")
            log_file.flush()

    def send(self, status, body=b"", headers=None, head=False):
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head and body:
            self.wfile.write(body)

    def send_json(self, status, obj, headers=None):
        h = {"Content-Type": "application/json; charset=utf-8"}
        h.update(headers or {})
        self.send(status, json.dumps(obj).encode(), h)

    def token(self):
        a = self.headers.get("Authorization", "")
        return a[7:] if a.startswith("Bearer ") else None

    def hf_error(self, status, code, msg, head=False):
        self.send(status, json.dumps({"error": msg}).encode(),
                  {"X-Error-Code": code, "X-Error-Message": msg,
                   "Content-Type": "application/json"}, head)

    def serve_bytes(self, data, headers, head, key=None, throttle=0):
        """200 or 206 (Range), the way the CDN and the Hub answer."""
        headers = dict(headers)
        headers["Accept-Ranges"] = "bytes"
        rng = self.headers.get("Range")
        start, status = 0, 200
        if key is not None:
            with lock:
                n = ctl["corrupt"].get(key, 0)
                if n:
                    ctl["corrupt"][key] = n - 1
            if n:
                data = bytes([data[0] ^ 0xFF]) + data[1:]
        if rng and rng.startswith("bytes="):
            first = rng[6:].split("-")[0]
            start = int(first or 0)
            if start >= len(data):
                return self.send(416, b"", {"Content-Range": "bytes */%d" % len(data)}, head)
            status = 206
            headers["Content-Range"] = "bytes %d-%d/%d" % (start, len(data) - 1, len(data))
        body = data[start:]
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if head:
            return
        if not throttle:
            self.wfile.write(body)
            return
        chunk = max(1024, throttle // 20)
        try:
            for i in range(0, len(body), chunk):
                self.wfile.write(body[i:i + chunk])
                self.wfile.flush()
                time.sleep(chunk / throttle)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def fail503(self, key):
        with lock:
            n = ctl["fail503"].get(key, 0)
            if n:
                ctl["fail503"][key] = n - 1
        if n:
            self.send(503, b"busy", {"Retry-After": "0"})
        return bool(n)


class HFHandler(Handler):
    server_name = "hf"

    def do_POST(self):
        self.record()
        if self.path != "/_ctl":
            return self.send(404)
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with lock:
            ctl.update(json.loads(body))
        self.send_json(200, ctl)

    def do_HEAD(self):
        self.handle_get(head=True)

    def do_GET(self):
        self.handle_get(head=False)

    def renamed(self, parts, i, head):
        """A renamed repo: the Hub answers with a relative redirect to the new name."""
        repo_id = parts[i] + "/" + parts[i + 1]
        if repo_id not in RENAMED:
            return False
        new = RENAMED[repo_id].split("/")
        loc = "/".join(parts[:i] + new + parts[i + 2:])
        u = urllib.parse.urlsplit(self.path)
        self.send(307, b"", {"Location": urllib.parse.quote(loc) + ("?" + u.query if u.query else "")},
                  head)
        return True

    def repo_access(self, repo_id, head=False, files=False):
        """The Hub's answers for a repo the caller may not see."""
        repo = REPOS.get(repo_id)
        tok = self.token()
        if tok is not None and tok not in VALID_TOKENS:
            self.hf_error(401, "Unauthorized", "Invalid credentials in Authorization header", head)
            return None
        if repo is None or (repo["private"] and tok not in TOKENS_WITH_ACCESS):
            # Unknown and private repos look the same, on purpose.
            self.hf_error(401 if tok is None else 404, "RepoNotFound", "Repository not found", head)
            return None
        if files and repo["gated"] and tok not in TOKENS_WITH_ACCESS:
            msg = ("Access to model %s is restricted. You must have access to it and be "
                   "authenticated to access it. Please log in." % repo_id) if tok is None else (
                   "Access to model %s is restricted and you are not in the authorized list. "
                   "Visit https://huggingface.co/%s to ask for access." % (repo_id, repo_id))
            self.hf_error(401 if tok is None else 403, "GatedRepo", msg, head)
            return None
        return repo

    def handle_get(self, head):
        self.record()
        u = urllib.parse.urlsplit(self.path)
        parts = [urllib.parse.unquote(p) for p in u.path.split("/")]
        q = urllib.parse.parse_qs(u.query)
        # /api/models/{org}/{name}/revision/{rev}
        if len(parts) >= 5 and parts[1:3] == ["api", "models"] and self.renamed(parts, 3, head):
            return
        if len(parts) >= 4 and parts[3] == "resolve" and self.renamed(parts, 1, head):
            return
        if len(parts) >= 7 and parts[1:3] == ["api", "models"] and parts[5] == "revision":
            repo_id = parts[3] + "/" + parts[4]
            rev = "/".join(parts[6:])
            if self.fail503("api"):
                return
            repo = self.repo_access(repo_id, head)
            if repo is None:
                return
            commit = repo["refs"].get(rev, rev if rev == repo["commit"] else None)
            if commit is None:
                return self.hf_error(404, "RevisionNotFound", "Invalid rev id: %s" % rev, head)
            blobs = q.get("blobs", ["false"])[0].lower() in ("1", "true") and ctl["api_blobs"]
            sib = []
            for path, m in repo["meta"].items():
                s = {"rfilename": path}
                if blobs:
                    s["blobId"] = m["pointer"] if "sha256" in m else m["git"]
                    s["size"] = m["size"]
                    if "sha256" in m:
                        s["lfs"] = {"sha256": m["sha256"], "size": m["size"],
                                    "pointerSize": m["pointer_size"]}
                sib.append(s)
            return self.send_json(200, {
                "_id": hashlib.md5(repo_id.encode()).hexdigest()[:24], "id": repo_id,
                "modelId": repo_id, "author": repo_id.split("/")[0], "sha": commit,
                "lastModified": "2025-01-01T00:00:00.000Z", "private": repo["private"],
                "gated": "manual" if repo["gated"] else False, "disabled": False,
                "tags": ["safetensors"], "library_name": "transformers", "siblings": sib})
        # /api/models/{org}/{name}/tree/{rev}[/{path}]?recursive=true: what
        # huggingface_hub >= 1.0 lists a snapshot with.
        if len(parts) >= 7 and parts[1:3] == ["api", "models"] and parts[5] == "tree":
            repo_id = parts[3] + "/" + parts[4]
            repo = self.repo_access(repo_id, head)
            if repo is None:
                return
            rev = parts[6]
            prefix = "/".join(parts[7:]).strip("/")
            if repo["refs"].get(rev, rev if rev == repo["commit"] else None) is None:
                return self.hf_error(404, "RevisionNotFound", "Invalid rev id: %s" % rev, head)
            recursive = q.get("recursive", ["false"])[0].lower() in ("1", "true")
            entries, dirs = [], set()
            for path, m in repo["meta"].items():
                if prefix and not path.startswith(prefix + "/"):
                    continue
                rest = path[len(prefix) + 1:] if prefix else path
                segs = rest.split("/")
                for i in range(1, len(segs)):
                    d = "/".join(([prefix] if prefix else []) + segs[:i])
                    if d not in dirs and (recursive or i == 1):
                        dirs.add(d)
                        entries.append({"type": "directory", "oid": hashlib.sha1(d.encode()).hexdigest(),
                                        "size": 0, "path": d})
                if len(segs) > 1 and not recursive:
                    continue
                e = {"type": "file", "oid": m["pointer"] if "sha256" in m else m["git"],
                     "size": m["size"], "path": path}
                if "sha256" in m:
                    e["lfs"] = {"oid": m["sha256"], "size": m["size"],
                                "pointerSize": m["pointer_size"]}
                entries.append(e)
            return self.send_json(200, entries)
        # /{org}/{name}/resolve/{rev}/{path...}
        if len(parts) >= 6 and parts[3] == "resolve":
            repo_id = parts[1] + "/" + parts[2]
            rev, path = parts[4], "/".join(parts[5:])
            repo = self.repo_access(repo_id, head, files=True)
            if repo is None:
                return
            commit = repo["refs"].get(rev, rev if rev == repo["commit"] else None)
            if commit is None:
                return self.hf_error(404, "RevisionNotFound", "Invalid rev id: %s" % rev, head)
            if path not in repo["files"]:
                return self.hf_error(404, "EntryNotFound", "Entry not found", head)
            m, data = repo["meta"][path], repo["files"][path]
            if self.fail503(path):
                return
            h = {"X-Repo-Commit": commit}
            if "sha256" in m:
                expires = int(time.time()) + 3600
                cdn_path = "/blobs/%s" % m["sha256"]
                query = urllib.parse.urlencode({
                    "response-content-disposition":
                        "inline; filename*=UTF-8''%s; filename=\"%s\";" % (
                            urllib.parse.quote(path.split("/")[-1]), path.split("/")[-1]),
                    "Expires": expires, "Key-Pair-Id": "K3ESJI6DHPFC7"})
                signed = "%s?%s" % (cdn_path, query)
                loc = "http://127.0.0.1:%d%s&Signature=%s" % (CDN_PORT, signed, sign(signed))
                h.update({"Location": loc, "ETag": '"%s"' % m["pointer"],
                          "X-Linked-Etag": '"%s"' % m["sha256"],
                          "X-Linked-Size": str(m["size"]), "Content-Type": "text/plain"})
                return self.send(302, b"Found. Redirecting to " + loc.encode(), h, head)
            h.update({"ETag": '"%s"' % m["git"], "Content-Type": "application/octet-stream"})
            return self.serve_bytes(data, h, head, key=path)
        self.send(404, b"Not Found")


class CDNHandler(Handler):
    server_name = "cdn"

    def do_HEAD(self):
        self.handle_get(True)

    def do_GET(self):
        self.handle_get(False)

    def handle_get(self, head):
        self.record()
        u = urllib.parse.urlsplit(self.path)
        q = urllib.parse.parse_qs(u.query)
        unsigned, _, sig = u.query.rpartition("&Signature=")
        try:
            expires = int(q["Expires"][0])
            good = hmac.compare_digest(sig, sign("%s?%s" % (u.path, unsigned)))
        except (KeyError, ValueError):
            good = False
        if not good or expires < time.time():
            return self.send(403, b"<Error><Code>AccessDenied</Code></Error>",
                             {"Content-Type": "application/xml"}, head)
        sha = u.path.rsplit("/", 1)[-1]
        if sha not in BLOBS:
            return self.send(404, b"NoSuchKey", {}, head)
        if self.fail503(sha):
            return
        self.serve_bytes(BLOBS[sha], {"ETag": '"%s"' % sha,
                                      "Content-Type": "application/octet-stream"},
                         head, key=sha, throttle=ctl["throttle"])


class MSHandler(Handler):
    server_name = "ms"

    def do_GET(self):
        self.record()
        u = urllib.parse.urlsplit(self.path)
        parts = [urllib.parse.unquote(p) for p in u.path.split("/")]
        q = urllib.parse.parse_qs(u.query)
        if len(parts) >= 7 and parts[1:4] == ["api", "v1", "models"] and parts[6] == "repo":
            repo_id = parts[4] + "/" + parts[5]
            repo = REPOS.get(repo_id)
            rev = q.get("Revision", ["master"])[0]
            if repo is None or repo["private"] or repo["gated"]:
                return self.send_json(404, {"Code": 10010205001, "Message": "模型不存在 (model not found)",
                                            "RequestId": "test", "Success": False})
            if rev not in ("master", "v1.0"):
                return self.send_json(404, {"Code": 10010205002,
                                            "Message": "revision %s not found" % rev,
                                            "RequestId": "test", "Success": False})
            if len(parts) == 8 and parts[7] == "files":
                files = []
                for path, m in repo["meta"].items():
                    files.append({"CommitMessage": "upload", "CommittedDate": 1735689600,
                                  "CommitterName": "tester", "InCheck": False,
                                  "IsLFS": "sha256" in m, "Mode": "33188",
                                  "Name": path.split("/")[-1], "Path": path,
                                  "Revision": repo["commit"],
                                  "Sha256": hashlib.sha256(repo["files"][path]).hexdigest(),
                                  "Size": m["size"], "Type": "blob"})
                return self.send_json(200, {"Code": 200, "Data": {"Files": files,
                                            "LatestCommitter": {"CommitterName": "tester"}},
                                            "Message": "success", "RequestId": "test",
                                            "Success": True})
            if len(parts) == 7:
                path = q.get("FilePath", [""])[0]
                if path not in repo["files"]:
                    return self.send_json(404, {"Code": 10010205003, "Message": "file not found",
                                                "Success": False})
                return self.serve_bytes(repo["files"][path],
                                        {"Content-Type": "application/octet-stream"}, False,
                                        key="ms:" + path)
        self.send(404, b"Not Found")


CDN_PORT = 0


def main():
    global log_file, CDN_PORT
    ap = argparse.ArgumentParser()
    ap.add_argument("--log", required=True)
    args = ap.parse_args()
    log_file = open(args.log, "a")
    servers = {}
    for name, h in (("cdn", CDNHandler), ("hf", HFHandler), ("ms", MSHandler)):
        # A listen backlog of 5 (socketserver's default) drops the SYNs of
        # 8 parallel downloads and costs each a 1 s retransmit.
        ThreadingHTTPServer.request_queue_size = 128
        s = ThreadingHTTPServer(("127.0.0.1", 0), h)
        s.daemon_threads = True
        servers[name] = s
        if name == "cdn":
            CDN_PORT = s.server_address[1]
        threading.Thread(target=s.serve_forever, daemon=True).start()
    print(json.dumps({k: s.server_address[1] for k, s in servers.items()}), flush=True)
    try:
        sys.stdin.read()  # run until the test closes our stdin (or dies)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
