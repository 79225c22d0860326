"""Every model family in the matrix, for real: a tiny random-init model of each architecture
(tests/families.py), a short 4-bit trial with the default target role and with all-linear, and
the layers PEFT adapted checked against what the architecture has."""
import json
import subprocess
import sys

import pytest

from conftest import ROOT
from families import ALL_LINEAR, ATTENTION, SHAPES, family_model

pytestmark = pytest.mark.slow
ROLES = {"attention": ATTENTION, "all-linear": ALL_LINEAR}


def overrides(family: str, role: str, out, cache_dir, data) -> list[str]:
    return [f"model.name_or_path={family_model(family)}", "model.build=null", f"data.name_or_path={data}",
            "quant.bits=4", f"lora.target_modules={role}", "train.max_steps=2", "train.eval_steps=2",
            "data.eval_size=8", "data.metric=null", "tracking.mode=disabled", f"output_dir={out}",
            f"cache_dir={cache_dir}"]


def test_every_family_adapts_what_its_architecture_has(tiny_model, synthetic_data, cache_dir, tmp_path, capsys):
    """In one process, one after another: a process per trial spent most of its time importing
    (12 of them took 72-109 s of the suite); the command line is tested on its own (test_trial.py)."""
    from trainers.config import compose_config
    from trainers.settings import trial_settings
    from trainers.sft import run_trial

    for f in SHAPES:
        for role in ROLES:
            out_dir = tmp_path / f"{f}-{role}"
            metrics = run_trial(trial_settings(compose_config(overrides(f, role, out_dir, cache_dir, synthetic_data))))
            out = capsys.readouterr().out
            assert json.loads((out_dir / "metrics.json").read_text()) == metrics
            assert sorted(metrics["adapted_modules"]) == sorted(ROLES[role][f]), (f, role)
            said = next(line for line in out.splitlines() if line.startswith(f"target {role} -> "))
            assert f"x {SHAPES[f].get('num_hidden_layers', SHAPES[f].get('n_layer'))} layers" in said, said
            assert "r=32: " in said and "note: bitsandbytes quantized no layer" not in out
            assert "note: train.warmup_steps=5 >= train.max_steps=2: the learning rate rises" in out  # said, not refused
            if f == "gemma2":  # soft-capped attention trains in eager mode: transformers picks it itself
                assert metrics["attn_implementation"] == "eager"


@pytest.mark.parametrize("family,lacks", [("phi3", "q_proj"), ("gpt2", "q_proj")])
def test_llama_names_on_another_family_are_refused_with_its_names(family, lacks, short_trial, tmp_path):
    """Llama's list on Phi-3 (fused qkv_proj) or GPT-2 (c_attn): refused before loading, naming what
    the model has and what attention means there (before: Phi-3 silently adapted o_proj alone)."""
    args = [a for a in short_trial if not a.startswith("model.name_or_path")]
    proc = subprocess.run([sys.executable, "-m", "trainers", *args, f"model.name_or_path={family_model(family)}",
                           "model.build=null", "lora.target_modules=[q_proj,k_proj,v_proj,o_proj]"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: lora.target_modules={lacks!r}: matches no module of this model")
    here = [t.rsplit(".", 1)[-1] for t in ATTENTION[family]]
    assert f"or use attention (here: {', '.join(here)})" in line or \
        f"or use attention (here: {', '.join(reversed(here))})" in line, line


def test_our_target_match_is_peft_s_own(tiny_model):
    """The sweep matches target names without importing peft (it initialises CUDA), by PEFT's rule
    restated in trainers.targets.matches: on every family, every module name, it agrees with PEFT."""
    from peft import LoraConfig
    from peft.tuners.tuners_utils import check_target_module_exists

    from trainers.preflight import meta_model
    from trainers.settings import ModelSettings
    from trainers.targets import matches

    for family in SHAPES:
        meta = meta_model(ModelSettings(str(family_model(family)), None, False))
        names = [n for n, _ in meta.named_modules() if n]
        targets = sorted({n.rsplit(".", 1)[-1] for n in names} | {".".join(n.split(".")[-2:]) for n in names}
                         | {"mlp", "layers.0.self_attn.q_proj", "h.1.attn", "proj", "q"})
        for target in targets:
            config = LoraConfig(target_modules=[target])
            assert [n for n in names if matches(target, n)] == \
                [n for n in names if check_target_module_exists(config, n)], (family, target)


def test_messages_need_a_chat_template(tiny_model, cache_dir, tmp_path):
    """GPT-2's tokenizer has no chat template (and no pad token): messages data is refused in one line."""
    rows = tmp_path / "chat.jsonl"
    rows.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"q{i}"},
                                                     {"role": "assistant", "content": f"a{i}"}]}) + "\n"
                            for i in range(20)))
    proc = subprocess.run([sys.executable, "-m", "trainers", f"model.name_or_path={family_model('gpt2')}",
                           "model.build=null", f"data.name_or_path={rows}", "data.build=null", "data.metric=null",
                           f"output_dir={tmp_path / 'out'}", f"cache_dir={cache_dir}", "tracking.mode=disabled"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: data.format='messages': needs a chat template")


def test_only_a_learned_position_table_limits_max_length(short_trial, capsys):
    """GPT-2 looks positions up in a table (n_positions): a row longer than it was an IndexError from
    torch.embedding mid-trial; now refused in one line before any weight loads, and in the sweep's
    checks naming the search key that produces it. Rotary models have no such table: their
    max_position_embeddings is a trained length, not a limit, and nothing is refused there."""
    from sweeper.checks import check_before_study
    from sweeper.settings import sweep_settings
    from trainers.__main__ import main
    from trainers.preflight import learned_positions, meta_model
    from trainers.settings import ConfigError, ModelSettings

    found = {f: learned_positions(meta_model(ModelSettings(str(family_model(f)), None, False))) for f in SHAPES}
    assert found == {**{f: None for f in SHAPES}, "gpt2": ("n_positions", SHAPES["gpt2"]["n_positions"])}
    gpt2 = [a for a in short_trial if not a.startswith("model.name_or_path")] + [
        f"model.name_or_path={family_model('gpt2')}", "model.build=null", "data.metric=null"]
    assert main(gpt2 + ["train.max_length=1024"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: train.max_length=1024: longer than the 512 positions this model learned (n_positions=512 in its "
        "config); allowed: at most 512"]
    searched = "+search.max_length={type: categorical, choices: [128, 1024], target: train.max_length}"
    with pytest.raises(ConfigError) as refused:
        check_before_study(sweep_settings([a for a in gpt2 if not a.startswith(("output_dir", "tracking"))]
                                          + [searched, "sweep.pruner=none"]))
    assert str(refused.value).startswith("search.max_length=1024: sets train.max_length=1024: longer than the 512")
