"""GET /metrics under vLLM's names: a real server on loopback answers a few
completions, its Prometheus text is parsed here (a tiny parser, so the test
checks the exposition itself: TYPE lines, label names, one family per
name), and each family that dashboards, KEDA scalers and routers read under
vllm: has vLLM's type, the model_name label, and counts that moved."""
import os
import re
import sys

sys.path.insert(0, os.path.dirname(__file__))
from serverlib import Server, check, finish  # noqa: E402

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)",?')


def parse(text):
    """Prometheus text 0.0.4 -> {family: {"type": t, "samples": [(name, labels, value)]}}."""
    fams, types = {}, {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, t = line.split(" ", 3)
            assert name not in types, f"family {name} declared twice"
            types[name] = t
            fams[name] = {"type": t, "samples": []}
            continue
        if not line.strip() or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        assert m, f"bad sample line {line!r}"
        name, labels, value = m.group(1), m.group(2) or "", float(m.group(3))
        lab = dict(LABEL.findall(labels))
        fam = name
        for suffix in ("_bucket", "_sum", "_count"):
            if name.endswith(suffix) and name[: -len(suffix)] in types:
                fam = name[: -len(suffix)]
        assert fam in fams, f"sample {name} before its TYPE line"
        fams[fam]["samples"].append((name, lab, value))
    return fams


def total(fams, fam, sample=None):
    return sum(v for n, _, v in fams[fam]["samples"] if n == (sample or fam))


GAUGES = ["vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
          "vllm:gpu_cache_usage_perc"]
COUNTERS = ["vllm:request_success_total", "vllm:prompt_tokens_total",
            "vllm:generation_tokens_total"]
HISTS = ["vllm:time_to_first_token_seconds", "vllm:time_per_output_token_seconds",
         "vllm:inter_token_latency_seconds", "vllm:e2e_request_latency_seconds",
         "vllm:request_decode_time_seconds"]

with Server() as s:
    before = parse(s.get("/metrics").text)
    for i in range(3):
        r = s.post("/v1/completions", {"model": "tiny", "prompt": f"Hello number {i}",
                                       "max_tokens": 5, "temperature": 0, "ignore_eos": True})
        check(f"completion {i} answered", r.status_code == 200, r.text)
    after = parse(s.get("/metrics").text)

    for fam, want in [(f, "gauge") for f in GAUGES] + [(f, "counter") for f in COUNTERS] + \
                     [(f, "histogram") for f in HISTS] + [("vllm:cache_config_info", "gauge")]:
        ok = fam in after and after[fam]["type"] == want
        check(f"{fam} is a {want}", ok, after.get(fam, {}).get("type"))
        if not ok:
            continue
        check(f"{fam} has model_name=\"tiny\" on every sample",
              all(lab.get("model_name") == "tiny" for _, lab, _ in after[fam]["samples"]
                  if fam != "vllm:cache_config_info"), after[fam]["samples"][:3])
    if "vllm:request_success_total" in after:
        reasons = {lab.get("finished_reason") for _, lab, _ in after["vllm:request_success_total"]["samples"]}
        check("request_success_total is labelled by finished_reason", {"stop", "length", "abort"} <= reasons,
              reasons)
        length = [v for _, lab, v in after["vllm:request_success_total"]["samples"]
                  if lab.get("finished_reason") == "length"]
        check("3 requests finished by length", length == [3.0], length)
    if "vllm:prompt_tokens_total" in before:
        check("prompt tokens moved", total(after, "vllm:prompt_tokens_total")
              > total(before, "vllm:prompt_tokens_total"))
        check("generation tokens moved by 15", total(after, "vllm:generation_tokens_total")
              - total(before, "vllm:generation_tokens_total") == 15)
    for fam, n in [("vllm:time_to_first_token_seconds", 3), ("vllm:e2e_request_latency_seconds", 3),
                   ("vllm:request_decode_time_seconds", 3), ("vllm:time_per_output_token_seconds", 12),
                   ("vllm:inter_token_latency_seconds", 12)]:
        if fam in after and fam in before:
            moved = total(after, fam, fam + "_count") - total(before, fam, fam + "_count")
            check(f"{fam} counted {n} more", moved == n, moved)
            inf = [v for name, lab, v in after[fam]["samples"]
                   if name == fam + "_bucket" and lab.get("le") == "+Inf"]
            check(f"{fam}'s +Inf bucket is its count", inf == [total(after, fam, fam + "_count")], inf)
    if "vllm:time_to_first_token_seconds" in after:
        les = [lab["le"] for name, lab, _ in after["vllm:time_to_first_token_seconds"]["samples"]
               if name.endswith("_bucket")]
        check("TTFT buckets are vLLM's", les[:3] == ["0.001", "0.005", "0.01"] and les[-1] == "+Inf", les)
    if "vllm:cache_config_info" in after:
        cc = after["vllm:cache_config_info"]["samples"]
        check("cache_config_info is one sample of value 1 with num_gpu_blocks and block_size",
              len(cc) == 1 and cc[0][2] == 1 and int(cc[0][1].get("num_gpu_blocks", "0")) > 0
              and cc[0][1].get("block_size") == "16", cc)
    # The inferd: names stay for dashboards built on them.
    check("inferd: names still served", "inferd:num_requests_running" in after
          and "inferd:e2e_request_latency_seconds" in after)
    check("server exits 0", s.stop() == 0, s.stderr()[-1500:])
finish()
