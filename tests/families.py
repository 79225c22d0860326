"""Tiny random-init models of the architectures people fine-tune with QLoRA, built locally from
transformers' own configs (2 layers, 64 wide, the demo tokenizer) in a second each and cached
under artifacts/families/. What `attention` and `all-linear` must adapt in each is written out
here from the architectures themselves, not computed by the code under test."""
import shutil
from pathlib import Path

from filelock import FileLock

from trainers.tiny_model import DEFAULT_DIR

FAMILIES_DIR = DEFAULT_DIR.parent / "families"
SMALL = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=False)
SHAPES = {
    "llama": SMALL, "mistral": SMALL, "qwen2": SMALL,
    "phi3": {**SMALL, "num_key_value_heads": 4},
    "gemma2": {**SMALL, "head_dim": 16},
    "gpt2": dict(n_embd=64, n_layer=2, n_head=4, n_positions=512, tie_word_embeddings=False),
}
LLAMA_ATTENTION = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"]
LLAMA_MLP = ["mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
ATTENTION = {"llama": LLAMA_ATTENTION, "mistral": LLAMA_ATTENTION, "qwen2": LLAMA_ATTENTION, "gemma2": LLAMA_ATTENTION,
             "phi3": ["self_attn.qkv_proj", "self_attn.o_proj"], "gpt2": ["attn.c_attn", "attn.c_proj"]}
ALL_LINEAR = {**{f: ATTENTION[f] + LLAMA_MLP for f in ("llama", "mistral", "qwen2", "gemma2")},
              "phi3": ATTENTION["phi3"] + ["mlp.gate_up_proj", "mlp.down_proj"],
              "gpt2": ATTENTION["gpt2"] + ["mlp.c_fc", "mlp.c_proj"]}


def family_model(family: str, tokenizer_dir: Path = DEFAULT_DIR) -> Path:
    """artifacts/families/<family>: config, random weights and the demo tokenizer (built once)."""
    out = FAMILIES_DIR / family
    FAMILIES_DIR.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out) + ".lock"):
        if (out / "tokenizer.json").exists() and any(out.glob("*.safetensors")):
            return out
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(tokenizer_dir)
        if family == "gpt2":  # as GPT-2's own tokenizer: no pad token, no chat template
            tok.pad_token, tok.chat_template = None, None
        config = AutoConfig.for_model(family, vocab_size=len(tok), bos_token_id=tok.bos_token_id,
                                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id or tok.eos_token_id,
                                      **SHAPES[family])
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config)
        tmp = out.with_name(out.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
    return out
