"""The search space as data: YAML entries → trial.suggest_* (checked with optuna's FixedTrial)
→ Hydra overrides; bad spaces are refused with the key that is wrong."""
import optuna
import pytest
from omegaconf import OmegaConf

from sweeper.settings import sweep_settings
from sweeper.search.space import check_enqueued, parse_space, suggest, to_overrides
from trainers.config import compose_config
from trainers.settings import ConfigError, trial_settings


def space_of(name: str, *overrides: str):
    return parse_space(OmegaConf.to_container(compose_config([f"search={name}", *overrides]).search, resolve=True))


def test_default_space_ties_alpha_to_rank():
    space = space_of("qlora")
    trial = optuna.trial.FixedTrial({"lora_r": 16, "lora_dropout": 0.12, "quant_bits": 8, "learning_rate": 0.005})
    values = suggest(trial, space)
    assert values == {"lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.12, "quant_bits": 8, "learning_rate": 0.005}
    assert trial.user_attrs["lora_alpha"] == 32  # tied: a user attribute, not an Optuna parameter
    assert "lora_alpha" not in trial.params
    assert to_overrides(values, space) == ["lora.r=16", "lora.alpha=32", "lora.dropout=0.12", "quant.bits=8",
                                           "train.learning_rate=0.005"]


@pytest.mark.parametrize("overrides, low, high", [
    ([], 2e-4, 2e-2),                                       # the tiny demo's preset, 2e-3
    (["train=gpu", "model=llama3_1_8b"], 2e-5, 2e-3),       # the 8B preset, 2e-4 (QLoRA for 7B-13B)
    (["train.learning_rate=5e-4"], 5e-5, 5e-3),
])
def test_learning_rate_range_is_a_decade_either_side_of_the_preset(overrides, low, high):
    lr = {p.name: p for p in space_of("qlora", *overrides)}["learning_rate"]
    assert (lr.low, lr.high, lr.log) == (low, high, True)
    baseline = sweep_settings(overrides, check_values=False).enqueue[0]
    assert baseline["learning_rate"] == low * 10  # the enqueued baseline runs at the preset's rate


def test_a_space_without_a_baseline_parameter_names_it_and_the_way_out(capsys):
    from sweeper.__main__ import main

    assert main(["~search.learning_rate"]) != 0
    line = capsys.readouterr().err.strip()
    assert line == ("error: sweep.enqueue[0].learning_rate=0.002: not in the search space; allowed: lora_r, lora_alpha, "
                    "lora_dropout, quant_bits (or sweep.enqueue=[]: no baseline trial)")
    s = sweep_settings(["~search.learning_rate", "sweep.enqueue=[]"], check_values=False)  # the way out works
    assert [p.name for p in s.space] == ["lora_r", "lora_alpha", "lora_dropout", "quant_bits"] and s.enqueue == []


def test_a_bad_interpolation_in_the_space_is_one_line():
    with pytest.raises(ConfigError) as err:
        sweep_settings(["search.learning_rate.low=${times:fast,2}"], check_values=False)
    assert str(err.value).startswith("search.learning_rate.low=") and "needs two numbers" in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("overrides", [
    ["search=qlora_free_alpha"],
    ["~search.lora_alpha", "+search.lora_alpha={type: int, low: 8, high: 128, log: true, target: lora.alpha}"],
])
def test_free_alpha_is_an_optuna_parameter(overrides):
    space = parse_space(OmegaConf.to_container(compose_config(overrides).search, resolve=True))
    trial = optuna.trial.FixedTrial({"lora_r": 8, "lora_alpha": 48, "lora_dropout": 0.05, "quant_bits": 4,
                                     "learning_rate": 0.002})
    values = suggest(trial, space)
    assert values["lora_alpha"] == 48 and trial.params["lora_alpha"] == 48
    assert "lora.alpha=48" in to_overrides(values, space)


def test_qlora_modules_space_adds_target_modules():
    space = space_of("qlora_modules")
    trial = optuna.trial.FixedTrial({"lora_r": 32, "lora_dropout": 0.1, "quant_bits": 4,
                                     "learning_rate": 3e-4, "target_modules": "all-linear"})
    overrides = to_overrides(suggest(trial, space), space)
    assert "train.learning_rate=0.0003" in overrides and "lora.target_modules=all-linear" in overrides
    settings = trial_settings(compose_config(overrides))  # the overrides are a valid trial job
    assert settings.train.learning_rate == 3e-4 and settings.lora.target_modules == "all-linear"


def test_any_key_joins_the_space_by_yaml_alone():
    extra = "+search.warmup={type: int, low: 0, high: 20, step: 5, target: train.warmup_steps}"
    s = sweep_settings([extra])
    trial = optuna.trial.FixedTrial({"lora_r": 8, "lora_dropout": 0.1, "quant_bits": 4, "learning_rate": 0.002, "warmup": 15})
    overrides = to_overrides(suggest(trial, s.space), s.space)
    assert trial_settings(compose_config(overrides)).train.warmup_steps == 15


def test_real_study_samples_inside_the_ranges():
    space = space_of("qlora")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        values = suggest(study.ask(), space)
        assert values["lora_r"] in (8, 16, 32) and values["lora_alpha"] == 2 * values["lora_r"]
        assert 0.05 <= values["lora_dropout"] <= 0.2 and values["quant_bits"] in (4, 8)


@pytest.mark.parametrize("spec,key", [
    ({"x": {"type": "float", "low": 0.2, "high": 0.05, "target": "lora.dropout"}}, "search.x"),
    ({"x": {"type": "float", "low": 0.1, "high": 0.1, "target": "lora.dropout"}}, "search.x"),
    ({"x": {"type": "uniform", "low": 0, "high": 1, "target": "lora.dropout"}}, "search.x.type"),
    ({"x": {"type": "categorical", "choices": [], "target": "lora.r"}}, "search.x.choices"),
    ({"x": {"type": "categorical", "choices": [8, 16, 8], "target": "lora.r"}}, "search.x.choices"),
    ({"x": {"type": "float", "low": 0, "high": 1, "log": True, "target": "train.learning_rate"}}, "search.x.low"),
    ({"x": {"type": "categorical", "choices": [8]}}, "search.x.target"),
    ({"x": {"type": "tied", "of": "y", "factor": 2, "target": "lora.alpha"}}, "search.x.of"),
])
def test_bad_space_names_the_key(spec, key):
    with pytest.raises(ConfigError) as err:
        parse_space(spec)
    assert err.value.key == key


def test_a_choice_given_twice_is_named():
    with pytest.raises(ConfigError) as err:
        parse_space({"x": {"type": "categorical", "choices": [8, 16, 8], "target": "lora.r"}})
    assert str(err.value) == "search.x.choices=[8, 16, 8]: each value once (8 is there twice)"


def test_enqueued_values_are_checked_against_the_space():
    space = space_of("qlora")
    assert check_enqueued({"lora_r": 32, "lora_alpha": 64, "lora_dropout": 0.1, "quant_bits": 4}, space, "e") == {
        "lora_r": 32, "lora_dropout": 0.1, "quant_bits": 4}
    for bad, key in (({"lora_r": 7}, "e.lora_r"), ({"lora_r": 8, "lora_alpha": 64}, "e.lora_alpha"),
                     ({"rank": 8}, "e.rank"), ({"lora_dropout": 0.5}, "e.lora_dropout")):
        with pytest.raises(ConfigError) as err:
            check_enqueued(bad, space, "e")
        assert err.value.key == key
