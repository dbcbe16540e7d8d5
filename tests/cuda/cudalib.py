"""What the GPU tests that compare against transformers share: the skip when
torch, transformers or a GPU is missing, and small random Llama checkpoints."""
import sys

try:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
except ImportError:
    print("skip: no torch/transformers")
    sys.exit(0)
if not torch.cuda.is_available():
    print("skip: no GPU")
    sys.exit(0)


def make_llama(dirname, seed, **config):
    """A random 2-layer Llama saved in bf16 to dirname (config: LlamaConfig
    fields over these defaults); returns it reloaded in float32 on the GPU."""
    torch.manual_seed(seed)
    cfg = dict(intermediate_size=1024, num_hidden_layers=2, max_position_embeddings=4096,
               initializer_range=0.1, rope_theta=10000.0, tie_word_embeddings=False)
    cfg.update(config)
    LlamaForCausalLM(LlamaConfig(**cfg)).to(torch.bfloat16).save_pretrained(
        dirname, safe_serialization=True)
    # Reloaded, not cast back: .to(bfloat16) also rounds the rotary inv_freq
    # buffer, and a reference with bf16 rope frequencies drifts with position.
    return LlamaForCausalLM.from_pretrained(dirname, dtype=torch.float32).cuda().eval()
