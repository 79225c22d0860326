"""The embedded default base model: a tiny Llama with a locally trained tokenizer, briefly
pretrained on synthetic product text, built once and cached. `python -m trainers.tiny_model DIR`."""
import sys
import time
from pathlib import Path

from filelock import FileLock

from trainers.paths import ARTIFACTS
from trainers.synthetic import pretraining_texts

# A chat template so `messages` datasets work on the tiny model exactly as on a real one.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}{{ eos_token }}\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
PRETRAIN_STEPS = 400  # ~1 min on 2 cores; enough to learn the product vocabulary
# The one place the demo model is ever built: a mistyped model.name_or_path must be an error,
# not a fresh tiny model trained in its place.
DEFAULT_DIR = ARTIFACTS / "tiny-llama"


def is_default_location(path: str | Path) -> bool:
    return Path(path).expanduser().resolve() == DEFAULT_DIR


def build_tokenizer(texts: list[str]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    # Digits one by one, so prices are spelled the way large models' tokenizers spell them.
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tok.decoder = decoders.ByteLevel()
    special = ["<unk>", "<s>", "</s>", "<pad>"]
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=640, special_tokens=special,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>",
                                   eos_token="</s>", pad_token="<pad>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_model(vocab_size: int, tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)
    return LlamaForCausalLM(config)


def pretrain(model, tokenizer, texts: list[str], workdir: Path) -> float:
    """Plain causal-LM training with transformers' Trainer; returns the final training loss."""
    from datasets import Dataset
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

    ds = Dataset.from_dict({"text": [t + tokenizer.eos_token for t in texts]})
    ds = ds.map(lambda b: tokenizer(b["text"], truncation=True, max_length=128),
                batched=True, remove_columns=["text"])
    args = TrainingArguments(
        output_dir=str(workdir), max_steps=PRETRAIN_STEPS, per_device_train_batch_size=32,
        learning_rate=3e-3, lr_scheduler_type="cosine", warmup_steps=20, weight_decay=0.01,
        logging_steps=50, save_strategy="no", report_to="none", use_cpu=True, seed=0,
        disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=ds,
                      data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False))
    result = trainer.train()
    return result.training_loss


def ensure_tiny_model(path: str | Path) -> Path:
    """Build the tiny model into `path` unless it is there; safe when trials start side by side."""
    path = Path(path)
    done = path / "config.json"
    if done.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        if done.exists():  # another process built it while we waited
            return path
        start = time.monotonic()
        print(f"building the embedded tiny model in {path} (once, about a minute)...", flush=True)
        import torch

        torch.manual_seed(0)
        texts = pretraining_texts(20_000, seed=1)
        tokenizer = build_tokenizer(texts)
        model = build_model(len(tokenizer), tokenizer)
        loss = pretrain(model, tokenizer, texts, path.parent / (path.name + ".work"))
        tmp = path.parent / (path.name + ".tmp")
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        tmp.rename(path)  # config.json appears only with a complete model
        print(f"tiny model ready: pretraining loss {loss:.3f}, {time.monotonic() - start:.0f} s", flush=True)
    return path


if __name__ == "__main__":
    ensure_tiny_model(sys.argv[1] if len(sys.argv) > 1 else DEFAULT_DIR)
