#!/usr/bin/python3
"""End-to-end tests of `inferd pull/list/rm` against real HTTP servers on
loopback (tests/hub/hubserver.py: the Hub's API and resolve endpoints, a CDN
with signed URLs, ModelScope's API). Checks the cache layout huggingface_hub
and modelscope read, that the token never reaches the CDN, cache reuse,
resume after a kill, checksum failures, offline mode, errors, include and
exclude, concurrent pulls.  Run: INFERD=build/inferd python3 tests/hub/test_pull.py
"""
import hashlib
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
INFERD = os.environ.get("INFERD") or os.path.join(HERE, "..", "..", "build", "inferd")
FIX = os.path.join(HERE, "..", "fixtures", "models")
QWEN2_FILES = sorted(os.listdir(os.path.join(FIX, "qwen2")))

tmp = tempfile.mkdtemp(prefix="inferd-hub-")
log_path = os.path.join(tmp, "requests.jsonl")
server = subprocess.Popen([sys.executable, os.path.join(HERE, "hubserver.py"), "--log", log_path],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
ports = json.loads(server.stdout.readline())
HF = "http://127.0.0.1:%d" % ports["hf"]
DEAD = "http://127.0.0.1:9"  # discard port: nothing listens, connection refused


def ctl(**kw):
    req = urllib.request.Request(HF + "/_ctl", data=json.dumps(kw).encode(), method="POST")
    urllib.request.urlopen(req).read()


def log_mark():
    return os.path.getsize(log_path) if os.path.exists(log_path) else 0


def log_since(mark):
    with open(log_path) as f:
        f.seek(mark)
        return [json.loads(l) for l in f if l.strip()]


def env_for(home, **extra):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HF_", "MODELSCOPE_", "INFERD_MODEL", "VLLM_"))}
    env.update({"HF_HOME": home, "HF_ENDPOINT": HF, "INFERD_HUB_BACKOFF": "0.05",
                "HOME": home})
    env.update({k: v for k, v in extra.items() if v is not None})
    return env


def pull(home, *args, ok=True, **envx):
    p = subprocess.run([INFERD, "pull", *args], env=env_for(home, **envx),
                       capture_output=True, text=True, timeout=60)
    if ok and p.returncode != 0:
        raise AssertionError("pull %s failed (%d): %s" % (args, p.returncode, p.stderr))
    if not ok and p.returncode == 0:
        raise AssertionError("pull %s should have failed; stderr: %s" % (args, p.stderr))
    return p


def fresh_home(name):
    d = os.path.join(tmp, name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    return d


def repo_root(home, repo):
    return os.path.join(home, "hub", "models--" + repo.replace("/", "--"))


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def git_sha1(path):
    with open(path, "rb") as f:
        d = f.read()
    return hashlib.sha1(b"blob %d\0" % len(d) + d).hexdigest()


# ---------------------------------------------------------------- tests

def test_fresh_pull_layout_and_auth():
    home = fresh_home("fresh")
    m = log_mark()
    p = pull(home, "inferd-test/qwen2", HF_TOKEN="hf_good")
    snap = p.stdout.strip()
    root = repo_root(home, "inferd-test/qwen2")
    commit = open(os.path.join(root, "refs", "main")).read()
    assert len(commit) == 40 and "\n" not in commit, commit
    assert snap == os.path.join(root, "snapshots", commit), snap
    # Exactly what serving needs: no .bin duplicate, no onnx/, no README.
    assert sorted(os.listdir(snap)) == QWEN2_FILES, os.listdir(snap)
    for f in QWEN2_FILES:
        link = os.path.join(snap, f)
        target = os.readlink(link)
        assert target.startswith("../../blobs/"), target  # relative, as huggingface_hub
        blob = os.path.join(root, "blobs", os.path.basename(target))
        assert os.path.isfile(blob) and not os.path.islink(blob)
        with open(link, "rb") as a, open(os.path.join(FIX, "qwen2", f), "rb") as b:
            assert a.read() == b.read(), f
        # Blob names: sha256 for LFS files, git blob sha1 for the others.
        want = sha256(blob) if f.endswith(".safetensors") else git_sha1(blob)
        assert os.path.basename(target) == want, (f, target)
    assert not [f for f in os.listdir(os.path.join(root, "blobs")) if f.endswith(".incomplete")]
    reqs = log_since(m)
    cdn = [r for r in reqs if r["server"] == "cdn"]
    hf = [r for r in reqs if r["server"] == "hf"]
    assert len(cdn) == 5, cdn  # the five shards came from the CDN
    assert all(r["auth"] is None for r in cdn), "token leaked to the CDN: %s" % cdn
    assert all(r["auth"] == "Bearer hf_good" for r in hf), hf
    assert any("/api/models/inferd-test/qwen2/revision/main" in r["path"] for r in hf)
    assert "downloaded" in p.stderr or "Fetching" in p.stderr, p.stderr
    return home


def test_second_pull_downloads_nothing(home):
    m = log_mark()
    p = pull(home, "inferd-test/qwen2")
    reqs = log_since(m)
    assert len(reqs) == 1 and "/api/models/" in reqs[0]["path"], reqs
    assert "already in the cache" in p.stderr, p.stderr


def test_offline(home):
    m = log_mark()
    root = repo_root(home, "inferd-test/qwen2")
    commit = open(os.path.join(root, "refs", "main")).read()
    p = pull(home, "inferd-test/qwen2", HF_HUB_OFFLINE="1")
    assert p.stdout.strip().endswith("/snapshots/" + commit)
    assert log_since(m) == [], "offline mode made requests"
    p = pull(home, "inferd-test/qwen2", "--offline", "--revision", commit)
    assert p.stdout.strip().endswith(commit)
    p = pull(home, "inferd-test/llama", ok=False, HF_HUB_OFFLINE="1")
    assert "offline" in p.stderr and "not in the cache" in p.stderr, p.stderr
    # Network down: the cached copy is used, with a warning.
    p = pull(home, "inferd-test/qwen2", HF_ENDPOINT=DEAD)
    assert p.stdout.strip().endswith(commit) and "cannot reach" in p.stderr, p.stderr
    # Network down, nothing cached: say which endpoint, suggest mirror / ModelScope.
    p = pull(home, "inferd-test/llama", ok=False, HF_ENDPOINT=DEAD)
    for w in ("cannot reach", DEAD, "HF_ENDPOINT", "--source modelscope"):
        assert w in p.stderr, (w, p.stderr)


def test_errors():
    home = fresh_home("errors")
    p = pull(home, "inferd-test/does-not-exist", ok=False)
    assert "not found" in p.stderr and "HF_TOKEN" in p.stderr, p.stderr
    p = pull(home, "inferd-test/llama", "--revision", "v9", ok=False)
    assert "revision 'v9' not found" in p.stderr, p.stderr
    p = pull(home, "inferd-test/gated", ok=False)
    assert "gated" in p.stderr and "HF_TOKEN" in p.stderr and "license" in p.stderr, p.stderr
    p = pull(home, "inferd-test/gated", "--token", "hf_noaccess", ok=False)
    assert "gated" in p.stderr and "403" in p.stderr, p.stderr
    pull(home, "inferd-test/gated", "--token", "hf_good")
    p = pull(home, "inferd-test/private", ok=False)
    assert "not found" in p.stderr and "private" in p.stderr, p.stderr
    pull(home, "inferd-test/private", HF_TOKEN="hf_good")
    p = pull(home, "not-a-repo-id", ok=False)
    assert "not a repo id" in p.stderr, p.stderr
    p = pull(home, "inferd-test/llama", "--include", "*.nothing", ok=False)
    assert "no file" in p.stderr, p.stderr
    p = pull(home, "inferd-test/llama", ok=False, HF_ENDPOINT="not a url")
    assert p.returncode == 1, p.stderr
    p = subprocess.run([INFERD, "pull", "--bogus"], capture_output=True, text=True)
    assert p.returncode == 2
    p = subprocess.run([INFERD, "pull", "--help"], capture_output=True, text=True)
    assert p.returncode == 0 and "HF_ENDPOINT" in p.stdout and "--include" in p.stdout


def test_renamed_repo():
    home = fresh_home("renamed")
    m = log_mark()
    snap = pull(home, "inferd-test/old-llama", HF_TOKEN="hf_good").stdout.strip()
    assert "/models--inferd-test--old-llama/snapshots/" in snap  # cached under the name asked
    assert sorted(os.listdir(snap)) == sorted(os.listdir(os.path.join(FIX, "llama")))
    reqs = log_since(m)
    assert any(r["path"].startswith("/api/models/inferd-test/llama/") for r in reqs), reqs
    assert all(r["auth"] is None for r in reqs if r["server"] == "cdn")


def test_token_file():
    home = fresh_home("tokenfile")
    with open(os.path.join(home, "token"), "w") as f:
        f.write("hf_good\n")
    pull(home, "inferd-test/gated")


def test_include_exclude():
    home = fresh_home("globs")
    snap = pull(home, "inferd-test/qwen2", "--include", "*.json").stdout.strip()
    # '*' crosses '/', as in huggingface_hub: onnx/config.json comes too.
    want = sorted([f for f in QWEN2_FILES if f.endswith(".json")] + ["onnx"])
    assert sorted(os.listdir(snap)) == want, os.listdir(snap)
    assert os.readlink(os.path.join(snap, "onnx", "config.json")).startswith("../../../blobs/")
    home = fresh_home("globs2")
    snap = pull(home, "inferd-test/qwen2", "--exclude", "*.safetensors").stdout.strip()
    assert sorted(os.listdir(snap)) == [f for f in QWEN2_FILES if not f.endswith(".safetensors")]
    home = fresh_home("globs3")
    snap = pull(home, "inferd-test/qwen2", "--include", "onnx/", "--include", "README.md",
                "--exclude", "*.json").stdout.strip()
    assert sorted(os.listdir(snap)) == ["README.md", "onnx"]
    assert os.listdir(os.path.join(snap, "onnx")) == ["model.onnx"]
    # A repo with only .bin weights gets them by default.
    home = fresh_home("binonly")
    snap = pull(home, "inferd-test/binonly").stdout.strip()
    assert "pytorch_model.bin" in os.listdir(snap)


def test_checksums():
    home = fresh_home("corrupt")
    # One corrupted transfer: detected, fetched again, success.
    shard = "model-00003-of-00005.safetensors"
    want = sha256(os.path.join(FIX, "qwen2", shard))
    ctl(corrupt={want: 1, "config.json": 1})
    m = log_mark()
    p = pull(home, "inferd-test/qwen2")
    assert p.stderr.count("checksum mismatch") == 2, p.stderr
    snap = p.stdout.strip()
    assert sha256(os.path.join(snap, shard)) == want
    assert len([r for r in log_since(m) if r["server"] == "cdn" and want in r["path"]]) == 2
    # A damaged blob in the cache (truncated) is noticed and re-fetched.
    blob = os.path.realpath(os.path.join(snap, shard))
    with open(blob, "r+b") as f:
        f.truncate(100)
    m = log_mark()
    p = pull(home, "inferd-test/qwen2")
    assert "damaged" in p.stderr, p.stderr
    assert sha256(blob) == want
    assert len([r for r in log_since(m) if r["server"] == "cdn"]) == 1
    # Same size, one flipped byte: only --verify re-hashes.
    with open(blob, "r+b") as f:
        f.write(b"\x00\x00")
    p = pull(home, "inferd-test/qwen2", "--verify")
    assert "fails its checksum" in p.stderr and sha256(blob) == want, p.stderr
    # Corrupted every time: a clear error, and nothing bad enters the cache.
    home = fresh_home("corrupt2")
    ctl(corrupt={want: 5})
    p = pull(home, "inferd-test/qwen2", ok=False)
    assert "mismatch twice" in p.stderr and shard in p.stderr, p.stderr
    assert not os.path.exists(os.path.join(repo_root(home, "inferd-test/qwen2"), "blobs", want))
    ctl(corrupt={})


def test_retry_5xx():
    home = fresh_home("retry")
    ctl(fail503={"api": 2, "config.json": 1})
    pull(home, "inferd-test/llama")
    ctl(fail503={})


def big_blob_sha():
    m = log_mark()
    # A HEAD tells the LFS sha like huggingface_hub reads it.
    req = urllib.request.Request(HF + "/inferd-test/big/resolve/main/model.safetensors",
                                 method="HEAD")

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *a, **k):
            return None
    try:
        urllib.request.build_opener(NoRedirect).open(req)
    except urllib.error.HTTPError as e:
        assert e.code == 302
        return e.headers["X-Linked-Etag"].strip('"'), int(e.headers["X-Linked-Size"])
    raise AssertionError("no redirect for an LFS file")


def test_resume_after_kill():
    home = fresh_home("resume")
    sha, size = big_blob_sha()
    ctl(throttle=1 << 20)  # 1 MiB/s: the 3 MiB file takes ~3 s
    part = os.path.join(repo_root(home, "inferd-test/big"), "blobs", sha + ".incomplete")
    proc = subprocess.Popen([INFERD, "pull", "inferd-test/big"], env=env_for(home),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    t0 = time.time()
    while time.time() - t0 < 20:
        if os.path.exists(part) and os.path.getsize(part) > 300000:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    have = os.path.getsize(part)
    assert 0 < have < size, have
    ctl(throttle=0)
    m = log_mark()
    p = pull(home, "inferd-test/big")
    cdn = [r for r in log_since(m) if r["server"] == "cdn"]
    assert len(cdn) == 1 and cdn[0]["range"] and cdn[0]["range"].startswith("bytes="), cdn
    assert int(cdn[0]["range"][6:].rstrip("-")) >= have, (cdn, have)
    blob = os.path.realpath(os.path.join(p.stdout.strip(), "model.safetensors"))
    assert sha256(blob) == sha and not os.path.exists(part)
    # Killed after the last byte, before the rename: no request needed.
    os.rename(blob, part)
    m = log_mark()
    pull(home, "inferd-test/big")
    assert [r for r in log_since(m) if r["server"] == "cdn"] == []
    assert sha256(blob) == sha and not os.path.exists(part)


def test_concurrent_pulls():
    home = fresh_home("concurrent")
    sha, _ = big_blob_sha()
    ctl(throttle=4 << 20)
    m = log_mark()
    procs = [subprocess.Popen([INFERD, "pull", "inferd-test/big"], env=env_for(home),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=60) for p in procs]
    ctl(throttle=0)
    assert all(p.returncode == 0 for p in procs), outs
    assert outs[0][0] == outs[1][0]
    blob = os.path.realpath(os.path.join(outs[0][0].strip(), "model.safetensors"))
    assert sha256(blob) == sha
    gets = [r for r in log_since(m) if r["server"] == "cdn" and sha in r["path"]]
    assert len(gets) == 1, "the blob was downloaded %d times" % len(gets)


def test_disk_full():
    home = fresh_home("diskfull")
    sha, _ = big_blob_sha()
    blobs = os.path.join(repo_root(home, "inferd-test/big"), "blobs")
    os.makedirs(blobs)
    os.symlink("/dev/full", os.path.join(blobs, sha + ".incomplete"))  # writes: ENOSPC
    p = pull(home, "inferd-test/big", ok=False)
    assert "disk is full" in p.stderr and "resume" in p.stderr, p.stderr
    assert p.stderr.count("retrying") == 0, p.stderr  # a full disk is not a network error


def test_mirror_without_blob_metadata():
    """Some mirrors answer the model API without per-file blob ids and sizes;
    inferd then asks each file with HEAD, as huggingface_hub does, and ends
    up with the same blobs."""
    home = fresh_home("noblobs")
    ctl(api_blobs=False)
    try:
        m = log_mark()
        snap = pull(home, "inferd-test/llama").stdout.strip()
        heads = [r for r in log_since(m) if r["method"] == "HEAD"]
        assert len(heads) == 5 and all(r["server"] == "hf" for r in heads), heads
    finally:
        ctl(api_blobs=True)
    ref = fresh_home("withblobs")
    snap2 = pull(ref, "inferd-test/llama").stdout.strip()
    for f in os.listdir(snap2):
        assert os.readlink(os.path.join(snap, f)) == os.readlink(os.path.join(snap2, f)), f


def test_modelscope():
    home = fresh_home("ms")
    cache = os.path.join(home, "mscache")
    msenv = {"MODELSCOPE_CACHE": cache, "MODELSCOPE_DOMAIN": "127.0.0.1:%d" % ports["ms"],
             "MODELSCOPE_URL_SCHEME": "http://", "HF_ENDPOINT": DEAD}
    m = log_mark()
    p = pull(home, "inferd-test/Qwen2.5-tiny", "--source", "modelscope", **msenv)
    d = p.stdout.strip()
    # modelscope writes '.' in a name as '___'.
    assert d == os.path.join(cache, "models", "inferd-test", "Qwen2___5-tiny"), d
    want = sorted(os.listdir(os.path.join(FIX, "qwen3")))
    assert sorted(f for f in os.listdir(d) if not f.startswith(".")) == want, os.listdir(d)
    # ... and the name as typed points at it, as modelscope links it.
    alias = os.path.join(cache, "models", "inferd-test", "Qwen2.5-tiny")
    assert os.path.islink(alias) and os.path.realpath(alias) == os.path.realpath(d)
    assert os.path.exists(os.path.join(cache, ".lock", "inferd-test___Qwen2.5-tiny"))
    for f in want:
        with open(os.path.join(d, f), "rb") as a, open(os.path.join(FIX, "qwen3", f), "rb") as b:
            assert a.read() == b.read()
    with open(os.path.join(d, ".msc"), "rb") as f:
        idx = pickle.load(f)
    assert sorted(e["Path"] for e in idx) == want and all(len(e["Revision"]) == 40 for e in idx)
    with open(os.path.join(d, ".mdl"), "rb") as f:
        assert pickle.load(f) == {"id": "inferd-test/Qwen2.5-tiny"}
    assert all(r["server"] == "ms" for r in log_since(m))
    # Again, chosen by VLLM_USE_MODELSCOPE: nothing downloaded.
    m = log_mark()
    p = pull(home, "inferd-test/Qwen2.5-tiny", VLLM_USE_MODELSCOPE="true", **msenv)
    assert p.stdout.strip() == d and len(log_since(m)) == 1, log_since(m)
    p = pull(home, "inferd-test/Qwen2.5-tiny", INFERD_MODEL_SOURCE="modelscope",
             HF_HUB_OFFLINE="1", **msenv)
    assert p.stdout.strip() == d
    p = pull(home, "inferd-test/nothing-here", "--source", "modelscope", ok=False, **msenv)
    assert "not found on ModelScope" in p.stderr, p.stderr
    # ModelScope unreachable: the cached copy, with a warning.
    dead = dict(msenv, MODELSCOPE_DOMAIN="127.0.0.1:9")
    p = pull(home, "inferd-test/Qwen2.5-tiny", "--source", "modelscope", **dead)
    assert p.stdout.strip() == d and "cannot reach" in p.stderr, p.stderr
    p = pull(home, "inferd-test/llama", "--source", "modelscope", ok=False, **dead)
    assert "cannot reach ModelScope" in p.stderr and "--source hf" in p.stderr, p.stderr
    # A corrupted ModelScope download is caught by its Sha256 too.
    ctl(corrupt={"ms:config.json": 1})
    home2 = fresh_home("ms2")
    msenv["MODELSCOPE_CACHE"] = os.path.join(home2, "c")
    p = pull(home2, "inferd-test/llama", "--source", "modelscope", **msenv)
    assert "checksum mismatch" in p.stderr, p.stderr
    ctl(corrupt={})
    return home, cache


def test_list_rm(home, mscache):
    env = env_for(home, MODELSCOPE_CACHE=mscache)
    out = subprocess.run([INFERD, "list"], env=env, capture_output=True, text=True, check=True).stdout
    assert "inferd-test/qwen2" in out and "inferd-test/Qwen2___5-tiny" in out, out
    subprocess.run([INFERD, "rm", "inferd-test/qwen2"], env=env, check=True, capture_output=True)
    assert not os.path.exists(repo_root(home, "inferd-test/qwen2"))
    p = subprocess.run([INFERD, "rm", "inferd-test/qwen2"], env=env, capture_output=True, text=True)
    assert p.returncode == 1 and "not in the hf cache" in p.stderr, p.stderr
    subprocess.run([INFERD, "rm", "--source", "modelscope", "inferd-test/Qwen2.5-tiny"], env=env,
                   check=True, capture_output=True)
    assert not os.path.exists(os.path.join(mscache, "models", "inferd-test", "Qwen2___5-tiny"))
    assert not os.path.lexists(os.path.join(mscache, "models", "inferd-test", "Qwen2.5-tiny"))


def main():
    failed = 0
    results = {}

    def run(fn, *args):
        nonlocal failed
        t0 = time.time()
        try:
            r = fn(*args)
            print("ok   %s (%.1fs)" % (fn.__name__, time.time() - t0), flush=True)
            return r
        except Exception:
            failed += 1
            print("FAIL %s" % fn.__name__, flush=True)
            traceback.print_exc()
            return None
    try:
        home = run(test_fresh_pull_layout_and_auth)
        if home:
            run(test_second_pull_downloads_nothing, home)
            run(test_offline, home)
        run(test_errors)
        run(test_token_file)
        run(test_renamed_repo)
        run(test_include_exclude)
        run(test_checksums)
        run(test_retry_5xx)
        run(test_resume_after_kill)
        run(test_concurrent_pulls)
        run(test_disk_full)
        run(test_mirror_without_blob_metadata)
        r = run(test_modelscope)
        if home and r:
            run(test_list_rm, home, r[1])
    finally:
        server.stdin.close()
        server.wait(timeout=10)
        if not failed:
            shutil.rmtree(tmp, ignore_errors=True)
    print("%d failed" % failed)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
