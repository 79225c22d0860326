"""Every config composes and validates; the public keys exist; bad values name their key."""
import subprocess
import sys

import pytest
import yaml
from omegaconf import OmegaConf

from sweeper.search.space import candidate_values
from trainers.config import CONF_DIR, compose_config
from trainers.settings import ConfigError, trial_settings

PUBLIC_KEYS = ["model.name_or_path", "data.name_or_path", "train.max_steps", "train.eval_steps",
               "train.max_length", "train.learning_rate", "lora.r", "lora.alpha", "lora.dropout",
               "lora.target_modules", "quant.bits", "tracking.mode", "tracking.project"]


def group_options():
    return [(g.name, f.stem) for g in sorted(CONF_DIR.iterdir()) if g.is_dir() for f in sorted(g.glob("*.yaml"))]


@pytest.mark.parametrize("group,option", group_options())
def test_every_option_composes(group, option):
    cfg = compose_config([f"{group}={option}"])
    assert cfg[group] is not None


@pytest.mark.parametrize("group,option", [(g, o) for g, o in group_options() if g not in ("sweep", "search")])
def test_every_trial_option_validates(group, option):
    overrides = [f"{group}={option}"]
    if (group, option) in (("data", "text"), ("data", "messages")):
        overrides.append("data.name_or_path=some/file.jsonl")  # these configs make the user name a file
    settings = trial_settings(compose_config(overrides))
    assert settings.resolved[group] == OmegaConf.to_container(compose_config(overrides)[group], resolve=True)


def test_public_keys_exist():
    cfg = compose_config([])
    for key in PUBLIC_KEYS:
        assert OmegaConf.select(cfg, key, throw_on_missing=False) is not None, key


def test_every_config_file_starts_with_its_command():
    for path in CONF_DIR.rglob("*.yaml"):
        first = path.read_text().splitlines()[0]
        assert first.startswith("# ") and ("python -m trainers" in first or "make sweep" in first), path


def test_quant_bits_accepts_4_8_and_none():
    assert trial_settings(compose_config(["quant.bits=4"])).quant.bits == 4
    assert trial_settings(compose_config(["quant=int8"])).quant.bits == 8
    assert trial_settings(compose_config(["quant.bits=none"])).quant.bits is None


def test_target_modules_are_a_role_by_default():
    """Roles stay roles until a model resolves them (trainers.targets; test_families.py)."""
    assert trial_settings(compose_config([])).lora.target_modules == "attention"
    assert trial_settings(compose_config(["lora.target_modules=all-linear"])).lora.target_modules == "all-linear"
    assert trial_settings(compose_config(["lora.target_modules=[q_proj,v_proj]"])).lora.target_modules == [
        "q_proj", "v_proj"]


@pytest.mark.parametrize("override,key", [
    ("quant.bits=3", "quant.bits"), ("lora.dropout=1.0", "lora.dropout"), ("lora.dropout=-0.1", "lora.dropout"),
    ("lora.r=0", "lora.r"), ("lora.alpha=-1", "lora.alpha"), ("tracking.mode=sometimes", "tracking.mode"),
    ("tracking.finish_timeout_s=0", "tracking.finish_timeout_s"), ("lora.alpha=inf", "lora.alpha"),
    ("train.learning_rate=inf", "train.learning_rate"),
    ("train.max_length=0", "train.max_length"), ("data.format=xml", "data.format"),
    ("+lora.rank=8", "lora.rank"), ("train.per_device_train_batch_size=big", "train.per_device_train_batch_size"),
    ("+learning_rate=1e-4", "learning_rate"),  # a top-level key nothing reads
    ("train.per_device_train_batch_size=auto", "train.effective_batch_size"),
    ("train.effective_batch_size=12", "train.effective_batch_size"),  # tiny: 16 x 1
    ("lora.target_modules=attn", "lora.target_modules"), ("lora.target_modules=[]", "lora.target_modules"),
    ("tracking.project=", "tracking.project"), ("tracking.project=team/run", "tracking.project"),
    ("tracking.entity=", "tracking.entity"),
    ("train.seed=-1", "train.seed"), ("train.seed=4294967296", "train.seed"), ("train.seed=1.5", "train.seed"),
    ("data.columns=[a]", "data.columns"), ("data.columns={prompt:5}", "data.columns"),
    ("data.train_split=[a]", "data.train_split"), ("data.eval_split=''", "data.eval_split"),
    ("data.config_name=[1]", "data.config_name"), ("train.gradient_checkpointing=maybe", "train.gradient_checkpointing"),
    ("quant.double_quant=maybe", "quant.double_quant"), ("model.trust_remote_code=maybe", "model.trust_remote_code"),
    ("data.seed=abc", "data.seed"), ("data.seed=4294967296", "data.seed"),
])
def test_bad_values_name_their_key(override, key):
    with pytest.raises(ConfigError) as err:
        trial_settings(compose_config([override]))
    assert err.value.key == key
    assert "\n" not in str(err.value)


def test_per_device_batch_auto_keeps_the_effective_batch():
    auto = trial_settings(compose_config(["train=gpu", "train.per_device_train_batch_size=auto",
                                          "train.effective_batch_size=16"])).train
    assert (auto.per_device_train_batch_size, auto.effective_batch_size) == ("auto", 16)
    fixed = trial_settings(compose_config(["train=gpu", "train.effective_batch_size=16"])).train
    assert fixed.per_device_train_batch_size * fixed.gradient_accumulation_steps == 16


def test_a_lone_trial_refuses_an_auto_batch(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "trainers", "train.per_device_train_batch_size=auto",
                           "train.effective_batch_size=16", f"output_dir={tmp_path}"], capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: train.per_device_train_batch_size='auto': decided by a sweep")


def test_unknown_override_is_one_line():
    with pytest.raises(ConfigError) as err:
        compose_config(["lora.rnak=8"])
    assert "lora.rnak" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("overrides,says", [
    (["train.lr=1"], "override='train.lr=1': train has no key 'lr'; its keys: effective_batch_size, eval_steps, "),
    (["search.learning_rate.hi=3"], "override='search.learning_rate.hi=3': search.learning_rate has no key 'hi': "
                                    "did you mean high?"),
    # sweep.dir is part of 'sweep.direction': the error named the good override, given first.
    (["sweep.dir=/tmp/x", "sweep.direction=up"], "override='sweep.direction=up': sweep has no key 'direction': "),
])
def test_a_key_its_section_lacks_is_named_with_the_keys_it_has(overrides, says):
    with pytest.raises(ConfigError) as err:
        compose_config(overrides)
    assert str(err.value).startswith(says) and "\n" not in str(err.value)


@pytest.mark.parametrize("override,says", [
    ("sweep.enqueue={lora_r: 16}", "this key holds a list; write the value as one, e.g. [{...}]"),
])
def test_a_value_of_the_wrong_shape_says_what_the_key_holds(override, says):
    with pytest.raises(ConfigError) as err:
        compose_config([override])
    assert str(err.value).startswith(f"override={override!r}: ") and says in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("override", ["lora=[8]", "quant=[nf4,int8]", "quant=nope", "+model=tiny2"])
def test_a_config_group_takes_one_of_its_options(override):
    """A list was a stack trace from inside Hydra (lora=[8]) or silently merged (quant=[nf4,int8])."""
    with pytest.raises(ConfigError) as err:
        compose_config([override])
    group = override.split("=")[0].lstrip("+")
    options = ", ".join(sorted(f.stem for f in (CONF_DIR / group).glob("*.yaml")))
    assert str(err.value).endswith(f": a config group: name one of its options ({options})")
    assert err.value.key == group


@pytest.mark.parametrize("command", ["sweeper", "trainers"])
def test_hydra_command_line_help_cfg_info(command, tmp_path):
    """Hydra's own --help, --cfg job and --info answer, and write nothing (no outputs/, no .hydra)."""
    def run(*args):
        proc = subprocess.run([sys.executable, "-m", command, *args], cwd=tmp_path, capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc.stdout

    help_text = run("--help")
    assert "search: qlora, qlora_free_alpha, qlora_modules" in help_text and "model: llama3_1_8b, tiny" in help_text
    assert f"python -m {command}" in help_text and "== Config ==" in help_text
    job = yaml.safe_load(run("--cfg", "job", "lora.r=8", "quant=int8"))
    assert job["lora"]["r"] == 8 and job["quant"]["bits"] == 8 and "sweep" in job
    assert "Config search path" in run("--info")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["sweeper", "trainers"])
@pytest.mark.parametrize("flag,says", [("-m", "drop -m"), ("--multirun", "drop --multirun"),
                                       ("-cp", "not an option of python -m")])
def test_hydra_flags_this_command_does_not_take_are_one_line(command, flag, says, tmp_path):
    """Hydra's multirun and other launcher flags: refused in the project's words, not a lexer error."""
    proc = subprocess.run([sys.executable, "-m", command, "lora.r=8", flag], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    (line,) = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and line.startswith(f"error: {flag}: ") and says in line, proc.stderr
    assert "Lexer" not in line and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["sweeper", "trainers"])
def test_version(command, tmp_path):
    proc = subprocess.run([sys.executable, "-m", command, "--version"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "qlora-sweep 0.1.0"


@pytest.mark.parametrize("space", ["search=qlora", "search=qlora_modules"])
def test_each_candidate_is_checked_as_hydra_composes_it(space):
    """The sweep checks each choice and range end on a copy of its own composition with the key
    set (sweeper.settings._with_value); the trial settings are those Hydra composes with it."""
    import dataclasses

    from sweeper.settings import sweep_settings

    def same(t):  # output_dir holds the time of composition
        return dataclasses.replace(t, output_dir=None, resolved={**t.resolved, "output_dir": None})

    s = sweep_settings([space])
    assert len(s.candidates) >= 9
    for (key, value, trial), p in zip(s.candidates, [p for p in s.space for _ in candidate_values(p)]):
        text = "null" if value is None else str(value)
        assert key == f"search.{p.name}"
        assert same(trial) == same(trial_settings(compose_config([space, f"{p.target}={text}"])))
