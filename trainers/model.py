"""Builders for one trial's model: quantization config, the k-bit base model, the LoRA config."""
from trainers.paths import local_or_hub
from trainers.settings import LoraSettings, ModelSettings, QuantSettings


def compute_dtype():
    """bf16 where the GPU supports it, fp16 on older GPUs; fp32 on CPU, where it is exact and
    what the gradient reference test compares against."""
    import torch

    if not torch.cuda.is_available():
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def build_quantization(quant: QuantSettings, dtype):
    """BitsAndBytesConfig for 4-bit NF4 (double quantization) or 8-bit; None for no quantization."""
    from transformers import BitsAndBytesConfig

    if quant.bits == 4:
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                  bnb_4bit_use_double_quant=quant.double_quant, bnb_4bit_compute_dtype=dtype)
    if quant.bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    return None


def build_lora(lora: LoraSettings, targets):
    """targets: lora.target_modules resolved on the model (trainers.targets.resolve)."""
    from peft import LoraConfig

    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                      target_modules=targets, bias=lora.bias, task_type="CAUSAL_LM")


def disable_cpu_avx512bf16(model) -> int:
    """bitsandbytes 0.50 on AVX512-BF16 CPUs repacks a Linear4bit weight in place during eval
    and never unpacks it, silently dropping later gradients through it (STACK.md). Returns the
    number of layers patched."""
    import bitsandbytes as bnb

    patched = 0
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False
            patched += 1
    return patched


def _say_what_quantization_missed(model, bits: int) -> None:
    """bitsandbytes replaces nn.Linear layers only: an architecture built of other layers trains
    unquantized, which the user should hear from us rather than from the memory bill."""
    quantized = [m for m in model.modules() if type(m).__name__ in ("Linear4bit", "Linear8bitLt")]
    if not quantized:
        print(f"note: bitsandbytes quantized no layer of this {model.config.model_type} model to {bits}-bit: "
              "it trains unquantized", flush=True)


def load_base_model(model: ModelSettings, quant: QuantSettings, gradient_checkpointing: bool):
    """from_pretrained (hub id or folder), quantized as asked, prepared for k-bit training."""
    import torch
    from transformers import AutoModelForCausalLM

    dtype = compute_dtype()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    base = AutoModelForCausalLM.from_pretrained(  # absolute: the adapter records where its base came from
        local_or_hub(model.name_or_path), quantization_config=build_quantization(quant, dtype), dtype=dtype,
        device_map={"": device}, trust_remote_code=model.trust_remote_code)
    if dtype == torch.float16 and base.config.model_type.startswith("gemma"):
        print("note: this GPU has no bf16, and Gemma's activations overflow fp16: expect NaN losses "
              "(the sweep prunes a NaN trial)", flush=True)
    if quant.bits is None:
        return base
    from peft import prepare_model_for_kbit_training

    _say_what_quantization_missed(base, quant.bits)
    disable_cpu_avx512bf16(base)
    return prepare_model_for_kbit_training(base, use_gradient_checkpointing=gradient_checkpointing)
