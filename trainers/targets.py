"""What lora.target_modules adapts on a given model. A role follows the architecture: `attention`
is every linear layer inside each attention block (fused projections such as Phi-3's qkv_proj or
GPT-2's c_attn included), `all-linear` is PEFT's own (every linear layer but the output head); an
explicit list is taken as written. Works on a meta-device copy (config only) or the loaded model."""
from trainers.settings import ConfigError

ATTENTION, ALL_LINEAR = "attention", "all-linear"
ROLES = (ATTENTION, ALL_LINEAR)


def is_linear(module) -> bool:
    """nn.Linear and its bitsandbytes subclasses, and transformers' Conv1D (GPT-2's projections)."""
    import torch

    return isinstance(module, torch.nn.Linear) or type(module).__name__ == "Conv1D"


def adaptable(module) -> bool:
    """What a LoRA layer can wrap (peft.tuners.lora.model's dispatchers): linear layers, embeddings
    and convolutions. A norm, a whole MLP or attention block is PEFT's ValueError inside a trial."""
    import torch

    return is_linear(module) or isinstance(module, (torch.nn.Embedding, torch.nn.Conv1d, torch.nn.Conv2d,
                                                    torch.nn.Conv3d))


def linear_layers(model) -> dict[str, object]:
    return {name: m for name, m in model.named_modules() if name and is_linear(m)}


def attention_blocks(model) -> list[str]:
    """Each attention block's dotted name: transformers names every attention class *Attention
    (LlamaAttention, Phi3Attention, GPT2Attention, ...); a block inside another is not counted twice."""
    blocks = [name for name, m in model.named_modules() if name and type(m).__name__.endswith("Attention")]
    return [b for b in blocks if not any(b.startswith(outer + ".") for outer in blocks)]


def attention_targets(model) -> list[str]:
    """`attention` on this model: each linear layer inside an attention block, named by its path
    from the block's parent (self_attn.q_proj, attn.c_attn), so PEFT's suffix match cannot also
    catch a same-named layer outside attention (GPT-2's MLP has a c_proj too)."""
    blocks = attention_blocks(model)
    linear = linear_layers(model)
    targets = []
    for block in blocks:
        parent = block.rsplit(".", 1)[0] + "." if "." in block else ""
        for name in linear:
            if name.startswith(block + "."):
                suffix = name[len(parent):]
                if suffix not in targets:
                    targets.append(suffix)
    if not targets:
        kind = getattr(getattr(model, "config", None), "model_type", "this model")
        raise ConfigError("lora.target_modules", ATTENTION, f"found no linear layer in an attention block of {kind}; "
                          f"use all-linear or a list of its layers: {', '.join(leaf_names(linear))}")
    return targets


def matches(target: str, name: str) -> bool:
    """PEFT's rule for a list entry (peft.tuners.tuners_utils.check_target_module_exists, without
    the options we never set): the module's full name, or a dotted suffix of it. Ours so the sweep
    process never imports peft, which initialises CUDA; tests/test_families.py holds it to PEFT's."""
    return name == target or name.endswith("." + target)


def leaf_names(names) -> list[str]:
    return sorted({n.rsplit(".", 1)[-1] for n in names})


def resolve(spec, model):
    """What PEFT is given: a list of module names (or name suffixes), or PEFT's "all-linear"."""
    if spec == ATTENTION:
        return attention_targets(model)
    return spec


def output_head(model) -> str | None:
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return next((name for name, m in model.named_modules() if m is head), None) if head is not None else None


def adapted_layers(spec, model) -> dict[str, object]:
    """The layers PEFT will adapt, by its own matching rule (an exact name, or a dotted suffix)."""
    linear = linear_layers(model)
    if spec == ALL_LINEAR:
        head = output_head(model)
        return {n: m for n, m in linear.items() if n != head}
    targets = resolve(spec, model)
    return {n: m for n, m in model.named_modules() if n and adaptable(m) and any(matches(t, n) for t in targets)}


def shape(module) -> tuple[int, int]:
    """(in, out) of LoRA's A and B: Conv1D stores its weight transposed; an embedding's A spans its
    vocabulary; a convolution's A sees in_channels x its kernel."""
    import math

    import torch

    if type(module).__name__ == "Conv1D":
        return module.weight.shape[0], module.weight.shape[1]
    if isinstance(module, torch.nn.Embedding):
        return module.num_embeddings, module.embedding_dim
    if isinstance(module, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)):
        return module.in_channels * math.prod(module.kernel_size), module.out_channels
    return module.in_features, module.out_features


def lora_parameters(layers: dict, r: int) -> int:
    """Trainable parameters LoRA adds at rank r: A (r x in) and B (out x r) per layer."""
    return sum(r * sum(shape(m)) for m in layers.values())


def describe(spec, model, ranks) -> str:
    """One line: what a target_modules choice adapts on this model and what each rank trains."""
    layers = adapted_layers(spec, model)
    kinds = [".".join(n.split(".")[-2:]) for n in layers]  # self_attn.q_proj: the layer within its block
    if len({k.rsplit(".", 1)[-1] for k in kinds}) == len(set(kinds)):  # the last name alone is unambiguous
        kinds = [k.rsplit(".", 1)[-1] for k in kinds]
    per_kind = {kind: kinds.count(kind) for kind in dict.fromkeys(kinds)}
    counts = sorted(set(per_kind.values()))
    where = f"{len(per_kind)} x {counts[0]} layers" if len(counts) == 1 else f"{len(layers)} layers"
    name = spec if isinstance(spec, str) else "[" + ", ".join(spec) + "]"
    sizes = "; ".join(f"r={r}: {_count(lora_parameters(layers, r))} trainable" for r in ranks)
    return f"target {name} -> {', '.join(per_kind)} ({where}); {sizes}"


def _count(n: int) -> str:
    for size, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)
