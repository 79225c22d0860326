"""bitsandbytes' 4-bit layers on CPU: the AVX512-BF16 work-around is applied everywhere, and LoRA
gradients after an eval pass match a reference on the dequantized fp32 weights."""
from pathlib import Path

import pytest
import torch

from trainers.model import build_lora, load_base_model
from trainers.settings import LoraSettings, ModelSettings, QuantSettings

CPU_HAS_AVX512_BF16 = "avx512_bf16" in Path("/proc/cpuinfo").read_text()
BATCH = ["Title: Lumina large laptop\nBrand tier: premium", "Title: Basix compact usb cable\nBrand tier: budget"]


def quantized(tiny_model):
    return load_base_model(ModelSettings(str(tiny_model), None, False), QuantSettings(4, True), False)


def test_every_linear4bit_has_the_workaround(tiny_model):
    import bitsandbytes as bnb

    layers = [m for m in quantized(tiny_model).modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(layers) == 2 * 7  # q k v o gate up down in each of the 2 layers
    assert all(m.support_avx512bf16_for_cpu is False for m in layers)


def lora_grads_after_eval(tiny_model, workaround: bool, dequantized_reference: bool = True):
    import bitsandbytes as bnb
    from peft import get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    model = quantized(tiny_model)
    if not workaround:
        for m in model.modules():
            if isinstance(m, bnb.nn.Linear4bit):
                m.support_avx512bf16_for_cpu = True
    # Reference: the same network in fp32, its Linear weights set to the dequantized 4-bit weights.
    ref = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    for name, m in model.named_modules():
        if isinstance(m, bnb.nn.Linear4bit) and dequantized_reference:
            ref.get_submodule(name).weight.data = bnb.functional.dequantize_4bit(m.weight.data, m.weight.quant_state).float()
    config = LoraSettings(r=8, alpha=16, dropout=0.0, target_modules=["q_proj", "v_proj", "down_proj"], bias="none")
    peft_q = get_peft_model(model, build_lora(config, config.target_modules))
    peft_ref = get_peft_model(ref, build_lora(config, config.target_modules))
    for n, p in peft_q.named_parameters():
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.05)  # non-zero B, so gradients reach A and the base path
    set_peft_model_state_dict(peft_ref, get_peft_model_state_dict(peft_q))

    tok = AutoTokenizer.from_pretrained(tiny_model)
    batch = tok(BATCH, return_tensors="pt", padding=True)
    grads = []
    for net in (peft_q, peft_ref):
        net.eval()
        with torch.no_grad():
            net(**batch)  # the eval pass that, unpatched, repacks 4-bit weights in place
        net.train()
        net(**batch, labels=batch["input_ids"]).loss.backward()
        # None where no gradient reached the parameter: on some AVX512-BF16 CPUs that is how the bug shows.
        grads.append({n: None if p.grad is None else p.grad.float() for n, p in net.named_parameters()
                      if p.requires_grad})
    return grads


def relative_errors(grads, ref):
    """Per parameter: |g - ref| / |ref|; a missing gradient is a total error (inf)."""
    return {n: float("inf") if g is None else ((g - ref[n]).norm() / ref[n].norm()).item() for n, g in grads.items()}


def test_lora_grads_after_eval_match_dequantized_fp32_reference(tiny_model):
    grads, ref = lora_grads_after_eval(tiny_model, workaround=True)
    assert grads.keys() == ref.keys() and len(grads) == 2 * 3 * 2
    assert all(g is not None for g in ref.values())
    errors = relative_errors(grads, ref)
    assert max(errors.values()) < 0.02, errors  # measured here: 0 (CPU 4-bit dequantizes to fp32 exactly)


def test_the_gradient_comparison_sees_quantization_error(tiny_model):
    """Control: against the original (not dequantized) fp32 weights the same comparison shows
    4-bit rounding, so a zero error above means equal gradients, not a blind check."""
    grads, ref = lora_grads_after_eval(tiny_model, workaround=True, dequantized_reference=False)
    assert max(relative_errors(grads, ref).values()) > 1e-3


@pytest.mark.skipif(not CPU_HAS_AVX512_BF16, reason="the bug needs a CPU with AVX512-BF16")
def test_without_workaround_the_grads_are_wrong(tiny_model):
    """Shows the comparison above can fail: unpatched, the eval pass corrupts the gradients (40-80%
    off on some CPUs) or drops them entirely (p.grad is None on an AMD EPYC), both counted here."""
    grads, ref = lora_grads_after_eval(tiny_model, workaround=False)
    assert max(relative_errors(grads, ref).values()) > 0.1


def test_bitsandbytes_compiles_a_kernel_on_its_first_call_not_at_import():
    """trainers.bnb_import: bitsandbytes' import-time torch.compile (which builds inductor's backend,
    ~1.5 s per trial process) is deferred to the kernel's first call, with the same options, once;
    and the import says nothing of the hub kernel it cannot load on an AVX512-BF16 CPU."""
    import os
    import subprocess
    import sys

    from trainers.bnb_import import _deferred

    calls = []

    def compile_(fn, **options):
        calls.append(options)
        return lambda *args: fn(*args) + 1  # "compiled": tells its results from the plain function's

    double = _deferred(compile_)(lambda x: x * 2, dynamic=False)
    triple = _deferred(compile_)(dynamic=False)(lambda x: x * 3)  # the decorator form
    assert calls == []
    assert (double(2), double(3), triple(1)) == (5, 7, 4)
    assert calls == [{"dynamic": False}] * 2
    assert _deferred(torch.compile)(lambda x: x.sin() + 1, backend="eager")(torch.zeros(2)).tolist() == [1.0, 1.0]

    code = ("import sys, torch; compile_ = torch.compile\n"
            "from trainers.bnb_import import import_bitsandbytes\n"
            "bnb = import_bitsandbytes()\n"
            "print(torch.compile is compile_, 'torch._inductor.compile_fx' in sys.modules, bnb is sys.modules['bitsandbytes'])")
    for offline in ("0", "1"):
        env = {**os.environ, "HF_HUB_OFFLINE": offline}
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
        assert proc.stdout.split() == ["True", "False", "True"]
        # On an AVX512-BF16 CPU bitsandbytes and kernels logged the failed hub-kernel load here, in every trial.
        assert "kernel" not in proc.stderr, proc.stderr
