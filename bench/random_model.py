"""Writes a random-init model of a real architecture's shape (default: Llama-3.1-8B, 8.03 B
params, bf16) with a given tokenizer, for GPU checks where no hub is reachable.
python bench/random_model.py OUT_DIR --tokenizer artifacts/tiny-llama"""
import argparse
import time

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

LLAMA_3_1_8B = dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                    num_key_value_heads=8, vocab_size=128256, max_position_embeddings=131072, rope_theta=500000.0,
                    rms_norm_eps=1e-5, tie_word_embeddings=False)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--small", action="store_true", help="2 layers, 256 wide: a CPU dry run of the script")
    args = ap.parse_args()
    start = time.monotonic()
    tok = AutoTokenizer.from_pretrained(args.tokenizer)
    shape = {**LLAMA_3_1_8B, **(dict(hidden_size=256, intermediate_size=512, num_hidden_layers=2) if args.small else {})}
    config = LlamaConfig(**shape, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.set_default_dtype(torch.bfloat16)
    with torch.device(device):
        model = LlamaForCausalLM(config)
    params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(args.out)
    tok.save_pretrained(args.out)
    print(f"random {params / 1e9:.2f} B-param model written to {args.out} in {time.monotonic() - start:.0f} s")


if __name__ == "__main__":
    main()
