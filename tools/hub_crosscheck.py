#!/usr/bin/env python3
"""Cross-check inferd's model cache against Python's huggingface_hub and
transformers (issue 9). Debian has no python3-huggingface-hub, so this runs
on the GPU machine, which has both; nothing there reaches the internet.

    python3 tools/hub_crosscheck.py --inferd-cache inferd_home.tar \
        --server tests/hub/hubserver.py --fixtures tests/fixtures/models --out DIR

1. inferd -> Python: inferd_home.tar is an HF_HOME that `inferd pull` filled
   (made on the build machine from tests/hub/hubserver.py). With
   HF_HUB_OFFLINE=1, AutoConfig / AutoTokenizer.from_pretrained(repo_id,
   local_files_only=True) and snapshot_download(local_files_only=True) must
   find it, and scan_cache_dir must see it without warnings.
2. Python -> inferd: the same loopback hub server runs here, and
   huggingface_hub.snapshot_download pulls the same repos through it (its real
   HEAD / 302-to-CDN / resolve code path) into a fresh HF_HOME, which is
   compared with inferd's tree (same blob names, same symlink targets, same
   refs) and packed into DIR/hf_home.tar so inferd can read it back offline.
Writes DIR/crosscheck.json and DIR/crosscheck.log.
"""
import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import traceback

REPOS = ["inferd-test/qwen2", "inferd-test/llama"]
PATTERNS = ["*.json", "*.safetensors"]  # what inferd's default selection takes here


def tree(home):
    """{relative path: symlink target or file size} of an HF cache, minus locks."""
    out = {}
    hub = os.path.join(home, "hub")
    for d, dirs, files in os.walk(hub):
        dirs[:] = [x for x in dirs if x != ".locks"]
        for f in files:
            p = os.path.join(d, f)
            rel = os.path.relpath(p, hub)
            out[rel] = ("-> " + os.readlink(p)) if os.path.islink(p) else os.path.getsize(p)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--inferd-cache", required=True)
    ap.add_argument("--server", required=True)
    ap.add_argument("--fixtures", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    report = {"python": sys.version.split()[0]}
    log = open(os.path.join(a.out, "crosscheck.log"), "w")

    def step(name, fn):
        try:
            report[name] = {"ok": True, "result": fn()}
        except Exception as e:  # keep going: one report with every answer
            report[name] = {"ok": False, "error": repr(e)}
            traceback.print_exc(file=log)
        log.write("%s: %s\n" % (name, json.dumps(report[name])[:2000]))
        log.flush()

    import huggingface_hub
    import transformers
    report["huggingface_hub"] = huggingface_hub.__version__
    report["transformers"] = transformers.__version__
    work = tempfile.mkdtemp()
    inferd_home = os.path.join(work, "inferd_home")
    with tarfile.open(a.inferd_cache) as t:
        t.extractall(inferd_home)

    # ---- 1. inferd -> Python, offline
    def offline_load():
        env_keep = dict(os.environ)
        os.environ.update({"HF_HOME": inferd_home, "HF_HUB_OFFLINE": "1"})
        os.environ.pop("HF_HUB_CACHE", None)
        os.environ.pop("HF_ENDPOINT", None)
        try:
            code = r"""
import json, sys
from transformers import AutoConfig, AutoTokenizer
from huggingface_hub import snapshot_download, scan_cache_dir, try_to_load_from_cache
out = {}
for repo in %r:
    cfg = AutoConfig.from_pretrained(repo, local_files_only=True)
    tok = AutoTokenizer.from_pretrained(repo, local_files_only=True)
    snap = snapshot_download(repo, local_files_only=True)
    out[repo] = {"model_type": cfg.model_type, "vocab_size": cfg.vocab_size,
                 "tokenizer": type(tok).__name__, "ids_hello": tok("hello world")["input_ids"],
                 "snapshot": snap,
                 "cached_config": try_to_load_from_cache(repo, "config.json")}
info = scan_cache_dir()
out["scan"] = {"repos": sorted((r.repo_id, r.nb_files, r.size_on_disk) for r in info.repos),
               "warnings": [str(w) for w in info.warnings]}
print(json.dumps(out))
""" % (REPOS,)
            p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                               timeout=120)
            log.write(p.stderr[-4000:])
            if p.returncode:
                raise RuntimeError(p.stderr[-1500:])
            return json.loads(p.stdout.strip().splitlines()[-1])
        finally:
            os.environ.clear()
            os.environ.update(env_keep)
    step("inferd_cache_read_by_transformers", offline_load)

    # ---- 2. Python -> inferd: huggingface_hub downloads from the loopback hub
    srv_log = os.path.join(work, "requests.jsonl")
    env = dict(os.environ, HUBSERVER_FIXTURES=a.fixtures)
    srv = subprocess.Popen([sys.executable, a.server, "--log", srv_log], env=env,
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    ports = json.loads(srv.stdout.readline())
    hf_home = os.path.join(work, "hf_home")

    def hf_download():
        code = r"""
import json
from huggingface_hub import snapshot_download, hf_hub_download
out = {}
for repo in %r:
    out[repo] = snapshot_download(repo, allow_patterns=%r)
out["single"] = hf_hub_download("inferd-test/llama", "config.json")
try:
    hf_hub_download("inferd-test/gated", "config.json")
    out["gated"] = "no error"
except Exception as e:
    out["gated"] = type(e).__name__ + ": " + str(e)[:300]
try:
    snapshot_download("inferd-test/llama", revision="v9")
    out["bad_revision"] = "no error"
except Exception as e:
    out["bad_revision"] = type(e).__name__ + ": " + str(e)[:300]
print(json.dumps(out))
""" % (REPOS, PATTERNS)
        e2 = dict(os.environ, HF_HOME=hf_home, HF_ENDPOINT="http://127.0.0.1:%d" % ports["hf"],
                  HF_HUB_DISABLE_XET="1", HF_HUB_ENABLE_HF_TRANSFER="0")
        e2.pop("HF_HUB_OFFLINE", None)
        e2.pop("HF_HUB_CACHE", None)
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           timeout=120, env=e2)
        log.write(p.stderr[-4000:])
        if p.returncode:
            raise RuntimeError(p.stderr[-1500:])
        return json.loads(p.stdout.strip().splitlines()[-1])
    step("huggingface_hub_pull_from_loopback_hub", hf_download)

    def requests_seen():
        with open(srv_log) as f:
            reqs = [json.loads(l) for l in f]
        return {"count": len(reqs),
                "cdn_with_auth": sum(1 for r in reqs if r["server"] == "cdn" and r["auth"]),
                "sample": [(r["server"], r["method"], r["path"][:100]) for r in reqs[:12]]}
    step("server_requests", requests_seen)
    srv.stdin.close()
    srv.wait(timeout=10)

    def compare():
        a_t, b_t = tree(inferd_home), tree(hf_home)
        only_inferd = sorted(set(a_t) - set(b_t))
        only_hf = sorted(set(b_t) - set(a_t))
        differ = sorted(k for k in set(a_t) & set(b_t) if a_t[k] != b_t[k])
        return {"inferd_entries": len(a_t), "hf_entries": len(b_t), "only_inferd": only_inferd,
                "only_hf": only_hf, "differ": [(k, a_t[k], b_t[k]) for k in differ],
                "identical": not (only_inferd or only_hf or differ)}
    step("tree_compare", compare)

    def pack():
        with tarfile.open(os.path.join(a.out, "hf_home.tar"), "w") as t:
            t.add(hf_home, arcname=".")
        return os.path.getsize(os.path.join(a.out, "hf_home.tar"))
    step("pack_hf_home", pack)

    try:
        import modelscope  # noqa: F401
        report["modelscope"] = modelscope.__version__
    except Exception as e:
        report["modelscope"] = "not installed: %r" % e
    with open(os.path.join(a.out, "crosscheck.json"), "w") as f:
        json.dump(report, f, indent=1)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
