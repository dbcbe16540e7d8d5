"""The bundled demo model (models/demo): a complete Hugging Face folder within
the size limit, with a ChatML template and the eos inferd must stop on, and
inferd's greedy answers equal to PyTorch's (tests/fixtures/demo/samples.json,
written by tools/demo/train.py: float32 on the CPU from the saved checkpoint)."""
import json
import os
import subprocess
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
MODEL = os.path.join(ROOT, "models", "demo")
INFERD = os.environ["INFERD"]
SAN = "build-san" in INFERD


def load(name):
    with open(os.path.join(MODEL, name), encoding="utf-8") as f:
        return json.load(f)


def check_folder():
    files = sorted(os.listdir(MODEL))
    want = ["config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
            "tokenizer_config.json"]
    assert all(f in files for f in want), files
    total = sum(os.path.getsize(os.path.join(MODEL, f)) for f in files)
    assert total <= 30 * 1000 * 1000, f"models/demo is {total} bytes, over 30 MB"
    cfg, gen, tcfg, tok = (load(f) for f in ("config.json", "generation_config.json",
                                             "tokenizer_config.json", "tokenizer.json"))
    assert cfg["architectures"] == ["Qwen3ForCausalLM"], cfg["architectures"]
    assert cfg["tie_word_embeddings"] is True
    specials = {t["content"]: t["id"] for t in tok["added_tokens"]}
    assert set(specials) == {"<|endoftext|>", "<|im_start|>", "<|im_end|>"}, specials
    assert tok["model"]["type"] == "BPE"
    assert tok["pre_tokenizer"]["pretokenizers"][1]["type"] == "ByteLevel"
    ids = set(tok["model"]["vocab"].values()) | set(specials.values())
    assert ids == set(range(cfg["vocab_size"])), "token ids must be exactly 0..vocab_size-1"
    im_end = specials["<|im_end|>"]
    assert cfg["eos_token_id"] == im_end
    assert im_end in gen["eos_token_id"]
    assert 0 < gen["temperature"] <= 1 and 0 < gen["top_p"] <= 1
    assert tcfg["eos_token"] == "<|im_end|>"
    t = tcfg["chat_template"]
    assert "<|im_start|>" in t and "add_generation_prompt" in t
    # the template renders as training saw it (jinja2, as transformers does)
    import jinja2
    out = jinja2.Environment().from_string(t).render(
        messages=[{"role": "user", "content": "写一首关于春天的诗"}], add_generation_prompt=True)
    assert out == "<|im_start|>user\n写一首关于春天的诗<|im_end|>\n<|im_start|>assistant\n", out
    print(f"models/demo: {total / 1e6:.1f} MB, vocab {cfg['vocab_size']}, "
          f"{cfg['num_hidden_layers']} layers x {cfg['hidden_size']}")
    return im_end


def check_greedy(im_end):
    with open(os.path.join(ROOT, "tests", "fixtures", "demo", "samples.json"), encoding="utf-8") as f:
        samples = json.load(f)
    for s in samples[:2] if SAN else samples:
        want = s["greedy_ids"]
        assert want[-1] == im_end, "the reference answer ends on <|im_end|>"
        out = subprocess.run([INFERD, "generate", "--model", MODEL, "--prompt-ids",
                              ",".join(map(str, s["prompt_ids"])), "--max-tokens",
                              str(len(want)), "--json"], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        got = json.loads(out.stdout)["token_ids"]
        assert got == want, f"{s['prompt']}: inferd {got} != PyTorch {want}"
        # the answer is a poem: mostly CJK characters
        cjk = sum(1 for ch in s["greedy_text"] if "\u4e00" <= ch <= "\u9fff")
        assert cjk >= 20, s["greedy_text"]
        print(f"greedy ok ({len(want)} tokens): {s['prompt']} -> {s['greedy_text']!r}")


if __name__ == "__main__":
    check_greedy(check_folder())
    sys.exit(0)
