"""Bad input ends in one line naming the key, the bad value and what is allowed, exit code 2,
before a model is loaded; never a traceback from inside transformers or TRL."""
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT
from trainers.__main__ import main


def run_main(argv, capsys):
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    return code, err


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("override,key", [
    ("model.name_or_path=/nonexistent/model", "model.name_or_path"),
    ("model.name_or_path=meta-llama/Llama-3.1-8B", "model.name_or_path"),  # offline, not cached
    ("quant.bits=3", "quant.bits"), ("lora.dropout=1", "lora.dropout"), ("lora.r=0", "lora.r"),
    ("lora.alpha=-1", "lora.alpha"), ("train.max_length=8", "train.max_length"),
    ("data.name_or_path=/nonexistent/data.jsonl", "data.name_or_path"),
    ("data.train_split=validation", "data.train_split"),
])
def test_bad_input_is_one_line_exit_2(override, key, short_trial, capsys):
    code, err = run_main(short_trial + ["model.build=null", "data.build=null", override], capsys)
    assert code == 2
    assert len(err) == 1 and err[0].startswith(f"error: {key}="), err


def test_dataset_without_needed_columns(short_trial, tmp_path, capsys):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"question": "q", "answer": "a"}] * 4)
    code, err = run_main(short_trial + [f"data.name_or_path={path}"], capsys)
    assert code == 2 and len(err) == 1
    assert "data.name_or_path" in err[0] and "question, answer" in err[0] and "prompt+completion" in err[0]


def test_forced_format_names_missing_column(short_trial, tmp_path, capsys):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "q", "answer": "a"}] * 4)
    code, err = run_main(short_trial + [f"data.name_or_path={path}", "data.format=prompt_completion"], capsys)
    assert code == 2 and err[0].startswith("error: data.format=") and "data.columns={completion:" in err[0]


def test_columns_mapping_fixes_it(short_trial, tmp_path):
    from trainers.config import compose_config
    from trainers.data import load_splits
    from trainers.settings import trial_settings

    path = write_jsonl(tmp_path / "qa.jsonl", [{"question": f"q{i}", "answer": "a"} for i in range(10)])
    s = trial_settings(compose_config(short_trial + [f"data.name_or_path={path}",
                                                     "data.columns={prompt: question, completion: answer}",
                                                     "data.metric=null"]))  # its answers hold no price to judge
    train, evals, fmt = load_splits(s.data, tmp_path / "cache")
    assert fmt == "prompt_completion" and len(train) + len(evals) == 10


def test_empty_split(short_trial, tmp_path, capsys):
    path = tmp_path / "empty.csv"
    path.write_text("prompt,completion\n")
    code, err = run_main(short_trial + [f"data.name_or_path={path}"], capsys)
    assert code == 2 and len(err) == 1 and err[0].startswith("error: data.train_split=") and "empty" in err[0]


def test_an_output_dir_that_cannot_be_written_is_one_line(short_trial, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code, err = run_main(short_trial + [f"output_dir={blocker / 'run'}"], capsys)
    assert (code, err) == (2, [f"error: output_dir='{blocker / 'run'}': cannot be written: Not a directory"])


def test_cli_exit_code_and_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "trainers", "lora.dropout=1.5", f"output_dir={tmp_path}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: lora.dropout=1.5: allowed: 0 <= dropout < 1"


@pytest.mark.parametrize("override", ["sweep.n_trials=5", "+sweep.n_trails=5", "search=qlora_free_alpha",
                                      "search.lora_r.choices=[8]"])
def test_one_trial_alone_refuses_a_sweep_key(override, short_trial, tmp_path, capsys):
    """sweep.n_trials=5 given to python -m trainers was composed and ignored: it trained one trial."""
    code, err = run_main(short_trial + [override, f"output_dir={tmp_path / 'run'}"], capsys)
    key, _, value = override.partition("=")
    assert (code, err) == (2, [f"error: {key.lstrip('+')}={value!r}: a sweep's key; python -m trainers runs one "
                               "trial and reads no sweep.* or search.* key: drop it, or run the sweep "
                               "(python -m sweeper)"])
    assert not (tmp_path / "run").exists()


def listing(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_mistyped_model_path_is_an_error_not_a_new_demo_model(short_trial, tmp_path, capsys):
    """With the default model=tiny (model.build=tiny), a wrong path must not build the demo model there."""
    missing = tmp_path / "typo" / "tiny-llama"
    code, err = run_main(short_trial + [f"model.name_or_path={missing}"], capsys)
    assert code == 2 and len(err) == 1 and err[0].startswith(f"error: model.name_or_path='{missing}'"), err
    assert not (tmp_path / "typo").exists()


@pytest.mark.parametrize("contents", ["empty", "notes", "config_only"])
def test_folder_that_is_not_a_model(contents, short_trial, tiny_model, tmp_path, capsys):
    folder = tmp_path / "not-a-model"
    folder.mkdir()
    if contents == "notes":
        (folder / "notes.txt").write_text("my fine-tuning notes\n")
    if contents == "config_only":  # config.json alone: AutoConfig loads, from_pretrained would not
        (folder / "config.json").write_text((tiny_model / "config.json").read_text())
    before = listing(folder)
    code, err = run_main(short_trial + [f"model.name_or_path={folder}"], capsys)
    assert code == 2 and len(err) == 1 and err[0].startswith("error: model.name_or_path="), err
    assert listing(folder) == before, "nothing built or written into the user's folder"


def test_a_broken_jsonl_line_is_named_by_its_line_number(short_trial, tmp_path, capsys):
    """datasets counts parsed rows (here it says row 2); an editor shows the file's lines."""
    path = tmp_path / "rows.jsonl"
    path.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "c", "completion": "d"}\n\n'
                    '{"prompt": "e", "completion":\n{"prompt": "f", "completion": "g"}\n')
    code, err = run_main(short_trial + ["data.build=null", f"data.name_or_path={path}"], capsys)
    assert code == 2 and err == [f"error: data.name_or_path='{path}': is not a readable .jsonl file: line 4 is not "
                                 "JSON (Expecting value at column 30)"]


@pytest.mark.parametrize("rows, says", [
    ([{"prompt": "a", "completion": "b"}, {"prompt": "c", "completion": None}] * 3,
     "has 3 row(s) whose completion is null in {path} (the first: line 2); fill or drop them"),
    ([{"prompt": "a", "completion": ""}, {"prompt": "c", "completion": "  "}] * 3,
     "has no row with a non-empty completion in {path}: nothing to learn"),
    ([{"prompt": ["a", "b"], "completion": "c"}] * 6,  # the tokenizer's ValueError, mid-trial
     'has 6 row(s) whose prompt is not text in {path} (the first: line 1: ["a", "b"]); make it a string, or make '
     'every prompt and completion a list of chat turns'),
    ([{"prompt": [{"role": "user", "content": "a"}], "completion": "b"}] * 6,
     "has prompts that are chat turns and a completion that is not in {path}; allowed: both text, or both lists of "
     "chat turns"),
    ([{"messages": "hi"}] * 6,  # its characters were read as turns
     'has 6 row(s) whose messages is not a list of chat turns in {path} (the first: line 1: "hi"); each messages is a '
     'list of {{"role": ..., "content": ...}} turns'),
    ([{"prompt": [{"role": "user", "text": "a"}], "completion": [{"role": "assistant", "content": "b"}]}] * 6,
     'has 6 row(s) whose prompt has a turn without role and content in {path} (the first: line 1: {{"role": "user", '
     '"text": "a"}}); each turn is {{"role": ..., "content": ...}}'),
])
def test_rows_a_trial_cannot_learn_from_are_refused_before_any_trial(rows, says, short_trial, tmp_path, capsys):
    import json

    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, err = run_main(short_trial + ["data.build=null", "data.metric=null", f"data.name_or_path={path}"], capsys)
    assert code == 2 and err == [f"error: data.train_split='train': {says.format(path=path)}"]


@pytest.mark.parametrize("name,content,says", [
    ("empty.jsonl", b"", "is empty"),
    ("notes.jsonl", b"this is not JSON {\n", "not a readable .jsonl file"),
    ("binary.jsonl", bytes(range(256)) * 16, "not a readable .jsonl file"),
    ("binary.parquet", b"PAR1" + bytes(range(256)) * 4, "not a readable .parquet file"),
    ("broken.csv", b'prompt,completion\n"never closed\n', "not a readable .csv file"),
])
def test_data_file_that_is_not_what_it_claims(name, content, says, short_trial, tmp_path, capsys):
    path = tmp_path / name
    path.write_bytes(content)
    code, err = run_main(short_trial + ["data.build=null", f"data.name_or_path={path}"], capsys)
    assert code == 2 and len(err) == 1 and err[0].startswith("error: data."), err
    assert says in err[0]


@pytest.mark.parametrize("name,content", [
    ("latin1.jsonl", '{"prompt": "a", "completion": "b"}\n{"prompt": "caf\u00e9", "completion": "d"}\n'.encode("latin-1")),
    ("latin1.csv", "prompt,completion\na,b\ncaf\u00e9,d\n".encode("latin-1")),
])
def test_data_file_that_is_not_utf8_is_named_by_its_line(name, content, short_trial, tmp_path, capsys):
    """Valid JSON or CSV saved as Latin-1: Arrow reads it and fails only when a row is read, with a
    UnicodeDecodeError from deep in pyarrow (seen on a file with 0xff bytes)."""
    path = tmp_path / name
    path.write_bytes(content)
    code, err = run_main(short_trial + ["data.build=null", f"data.name_or_path={path}"], capsys)
    assert code == 2 and err == [f"error: data.name_or_path='{path}': is not a readable {path.suffix} file: line "
                                 f"{2 if name.endswith('jsonl') else 3} is not UTF-8 text (byte 0xe9 at byte "
                                 f"{16 if name.endswith('jsonl') else 4}); save the file as UTF-8"], err


def test_a_hub_dataset_that_cannot_be_reached_is_one_line_without_the_retries(short_trial, monkeypatch, capfd):
    """Offline without HF_HUB_OFFLINE, huggingface_hub logs ten lines of retries over ~25 s before
    datasets gives up (seen: "Retrying in 8s [Retry 4/5]."). Those retries stand in here, logged
    where huggingface_hub logs them; the error itself is datasets' own for an unreachable hub."""
    import logging

    import datasets

    def unreachable(*args, **kwargs):
        for n in (1, 2):
            logging.getLogger("huggingface_hub.utils._http").warning(f"Retrying in {n}s [Retry {n}/5].")
        raise ConnectionError("Couldn't reach 'someone/data' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    code = main(short_trial + ["data.build=null", "data.name_or_path=someone/data"])
    err = capfd.readouterr().err.strip().splitlines()
    assert code == 2 and err == ["error: data.name_or_path='someone/data': could not be loaded from the hub: "
                                 "Couldn't reach 'someone/data' on the Hub (LocalEntryNotFoundError)"], err


def test_an_unreachable_hub_puts_the_command_offline_once_not_each_load(monkeypatch, tmp_path, tiny_model):
    """A hub id with a hub whose name does not resolve (.invalid never does, RFC 6761): the process,
    and so its trial processes, go offline (HF_HUB_OFFLINE=1) with one line saying so; huggingface_hub
    had retried each load for ~25 s. Local names never look the hub up."""
    from trainers.offline import offline_if_hub_unreachable

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.invalid")
    assert offline_if_hub_unreachable([str(tiny_model), str(tmp_path)]) is None and "HF_HUB_OFFLINE" not in os.environ
    note = offline_if_hub_unreachable([str(tiny_model), "someone/data"])
    assert note.startswith("the model hub cannot be reached (hub.invalid: ") and os.environ["HF_HUB_OFFLINE"] == "1"
    assert note.endswith("): models and datasets come from local folders and the Hugging Face cache (HF_HUB_OFFLINE=1)")
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    proc = subprocess.run([sys.executable, "-m", "trainers", "model.name_or_path=someone/model",
                           f"output_dir={tmp_path / 'run'}", "tracking.mode=disabled"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stdout.startswith("the model hub cannot be reached (hub.invalid: "), proc.stdout
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: model.name_or_path='someone/model': not a local model folder "
                                               "or a reachable hub model"), err


def test_a_hub_that_resolves_but_refuses_connections_is_unreachable_too(monkeypatch):
    """A firewall that rejects the hub's port: the name resolves, and huggingface_hub retried every
    load; one connection at the start tells. A hub that answers keeps the process online, and a
    user's own HF_HUB_OFFLINE (0 included) is left alone."""
    import socket

    from trainers.offline import offline_if_hub_unreachable

    monkeypatch.delenv("HF_HUB_OFFLINE")
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # nothing listens once it closes
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    note = offline_if_hub_unreachable(["someone/model"])
    assert note.startswith("the model hub cannot be reached (127.0.0.1: Connection refused)"), note
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        monkeypatch.delenv("HF_HUB_OFFLINE")
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}")
        assert offline_if_hub_unreachable(["someone/model"]) is None and "HF_HUB_OFFLINE" not in os.environ
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert offline_if_hub_unreachable(["someone/model"]) is None and os.environ["HF_HUB_OFFLINE"] == "0"


def test_columns_naming_a_missing_column(short_trial, tmp_path, capsys):
    path = write_jsonl(tmp_path / "qa.jsonl", [{"question": f"q{i}", "answer": "a"} for i in range(10)])
    code, err = run_main(short_trial + [f"data.name_or_path={path}",
                                        "data.columns={prompt: question, completion: reply}"], capsys)
    assert code == 2 and len(err) == 1
    assert err[0] == f"error: data.columns.completion='reply': no such column in {path}; it has: question, answer"


@pytest.mark.parametrize("override,key", [
    ("train.optim=adamw_typo", "train.optim"), ("train.lr_scheduler_type=cosin", "train.lr_scheduler_type"),
    ("lora.target_modules=[q_proj,vproj]", "lora.target_modules"), ("lora.target_modules=[c_attn]", "lora.target_modules"),
])
def test_trainer_names_and_target_modules_before_loading(override, key, short_trial, tmp_path, capsys):
    code, err = run_main(short_trial + [override], capsys)
    assert code == 2 and len(err) == 1 and err[0].startswith(f"error: {key}="), err
    assert not (tmp_path / "run").exists(), "refused before the trial wrote anything"


def test_target_module_error_lists_the_model_layers(short_trial, capsys):
    _, err = run_main(short_trial + ["lora.target_modules=[q_proj,vproj]"], capsys)
    assert err == ["error: lora.target_modules='vproj': matches no module of this model; its linear layers are: "
                   "down_proj, gate_proj, k_proj, o_proj, q_proj, up_proj, v_proj; or use attention "
                   "(here: q_proj, k_proj, v_proj, o_proj) or all-linear"]


@pytest.mark.parametrize("target,says", [
    ("mlp", "matches LlamaMLP layers (model.layers.0.mlp), which LoRA cannot adapt (it adapts linear, embedding "
            "and convolution layers): name the linear layers inside it (down_proj, gate_proj, up_proj)"),
    ("norm", "matches LlamaRMSNorm layers (model.norm), which LoRA cannot adapt (it adapts linear, embedding and "
             "convolution layers): name linear layers (down_proj, gate_proj, k_proj, o_proj, q_proj, up_proj, "
             "v_proj)"),
    ("lm_head", "matches the output head (lm_head), which TRL's SFTTrainer does not adapt (its loss reads the "
                "head's weight directly, so the adapter would never train): leave it out; its other linear layers "
                "are: down_proj, gate_proj, k_proj, o_proj, q_proj, up_proj, v_proj")])
def test_a_target_module_lora_cannot_wrap_is_refused_before_loading(target, says, short_trial, tmp_path, capsys):
    """A name that matches a norm or a whole block passed the check and failed every trial with
    PEFT's 'Target module LlamaMLP(...) is not supported' after the model had loaded; the output
    head, with TRL's 'Applying a PEFT adapter to `lm_head` is not supported'."""
    code, err = run_main(short_trial + [f"lora.target_modules=[q_proj,{target}]"], capsys)
    assert (code, err) == (2, [f"error: lora.target_modules={target!r}: {says}"])
    assert not (tmp_path / "run").exists()


def test_an_embedding_target_is_counted_as_peft_trains_it(tiny_model):
    """An embedding is a layer LoRA adapts: the line said it trains 0 parameters."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from trainers.targets import adapted_layers, describe, lora_parameters

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    said = lora_parameters(adapted_layers(["embed_tokens", "q_proj"], model), 8)
    assert describe(["embed_tokens", "q_proj"], model, [8]).endswith(f"r=8: {said / 1e3:.1f}K trainable")
    peft_model = get_peft_model(model, LoraConfig(r=8, target_modules=["embed_tokens", "q_proj"]))
    assert said == peft_model.get_nb_trainable_parameters()[0]


@pytest.mark.parametrize("override,says", [
    ("train.max_steps=ten", "train.max_steps='ten': must be a whole number"),
    ("train.eval_steps=2.5", "train.eval_steps=2.5: must be a whole number > 0"),
    ("train.learning_rate=fast", "train.learning_rate='fast': must be a number"),
    ("train.pad_to_multiple_of=longer", "train.pad_to_multiple_of='longer': must be a whole number > 0, longest or null"),
    ("train.pad_to_multiple_of=0", "train.pad_to_multiple_of=0: must be a whole number > 0"),
])
def test_number_errors_read_as_english(override, says, short_trial, capsys):
    code, err = run_main(short_trial + [override], capsys)
    assert code == 2 and len(err) == 1 and err[0].startswith(f"error: {says}"), err


def test_trainer_names_read_from_source_are_transformers_own():
    """The sweep reads transformers' optimizer and scheduler names from source (importing them
    imports peft, which initialises CUDA); they must be exactly the enums' values."""
    from transformers.trainer_utils import SchedulerType
    from transformers.training_args import OptimizerNames

    from trainers.preflight import ENUMS, enum_names

    assert enum_names(*ENUMS["train.optim"]) == tuple(n.value for n in OptimizerNames)
    assert enum_names(*ENUMS["train.lr_scheduler_type"]) == tuple(n.value for n in SchedulerType)


def test_what_optimizers_and_schedulers_need_is_what_transformers_asks():
    """The preflight's tables, held to transformers: an optimizer it refuses for a missing package
    is one the Trainer cannot build here, and the others build; a scheduler it refuses without
    arguments fails in get_scheduler without them and builds with the one it names."""
    import dataclasses
    import warnings

    import torch
    from transformers import Trainer, TrainingArguments
    from transformers.optimization import get_scheduler
    from transformers.trainer_utils import SchedulerType
    from transformers.training_args import OptimizerNames

    from trainers.preflight import SCHEDULER_NEEDS, check_trainer_names
    from trainers.settings import ConfigError, trial_settings
    from trainers.config import compose_config

    train = trial_settings(compose_config([])).train
    layer = torch.nn.Linear(2, 2)

    def refused(**changes) -> bool:
        try:
            check_trainer_names(dataclasses.replace(train, **changes))
            return False
        except ConfigError:
            return True

    for name in (n.value for n in OptimizerNames):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                Trainer.get_optimizer_cls_and_kwargs(TrainingArguments(output_dir="unused", optim=name), layer)
                builds = True
            except (ImportError, ValueError) as e:  # "install ...", "failed to import ..."
                assert "install" in str(e).lower() or "import" in str(e).lower(), (name, e)
                builds = False
        assert refused(optim=name) != builds, name
    for name in (n.value for n in SchedulerType):
        def build(kwargs):
            get_scheduler(name, torch.optim.SGD(layer.parameters(), lr=0.1), num_warmup_steps=1,
                          num_training_steps=10, scheduler_specific_kwargs=kwargs)
        if name in SCHEDULER_NEEDS:
            with pytest.raises((ValueError, TypeError)):
                build({})
            build({SCHEDULER_NEEDS[name][-1]: 0.1 if "rate" in SCHEDULER_NEEDS[name][-1] else 5})
        else:
            build({})
        assert refused(lr_scheduler_type=name) == (name in SCHEDULER_NEEDS), name
        assert not refused(lr_scheduler_type=name, lr_scheduler_kwargs={n: 1 for n in SCHEDULER_NEEDS.get(name, ())})


@pytest.mark.parametrize("overrides,says", [
    (["train.lr_scheduler_type=cosine_with_min_lr"], "train.lr_scheduler_type='cosine_with_min_lr': needs min_lr or "
     "min_lr_rate in train.lr_scheduler_kwargs, e.g. train.lr_scheduler_kwargs='{min_lr_rate: 0.1}'"),
    (["train.lr_scheduler_type=warmup_stable_decay"], "train.lr_scheduler_type='warmup_stable_decay': needs "
     "num_decay_steps in train.lr_scheduler_kwargs, e.g. train.lr_scheduler_kwargs='{num_decay_steps: 10}'"),
    (["train.optim=schedule_free_adamw"], "train.optim='schedule_free_adamw': needs the schedulefree package, which "
     "is not installed: install it, or choose adamw_torch, adafactor, sgd or one of bitsandbytes' (adamw_8bit, "
     "paged_adamw_8bit, lion_8bit...)"),
    (["train.lr_scheduler_kwargs=[1]"], "train.lr_scheduler_kwargs=[1]: a mapping of the scheduler's arguments to "
     "numbers or names, e.g. {min_lr_rate: 0.1}, or null")])
def test_a_scheduler_or_optimizer_missing_what_it_needs_is_one_line(overrides, says, short_trial, tmp_path, capsys):
    """Each was transformers' ValueError, TypeError or ImportError inside every trial."""
    code, err = run_main(short_trial + overrides, capsys)
    assert (code, err) == (2, [f"error: {says}"])
    assert not (tmp_path / "run").exists()


def test_a_config_name_for_a_data_file_is_refused(short_trial, synthetic_data, capsys):
    """data.config_name names a hub dataset's subset: given with a local file it was ignored."""
    assert run_main(short_trial + ["data.config_name=de"], capsys) == (2, [
        f"error: data.config_name='de': names a subset of a hub dataset or dataset folder; {synthetic_data} is a "
        "data file, which has none: set null"])


def test_a_preset_value_left_to_the_user_must_be_set(capsys):
    """data=text without data.name_or_path read the preset's '???' as a hub dataset's name."""
    assert run_main(["data=text"], capsys) == (2, ["error: data.name_or_path='???': must be set: the chosen data "
                                                   "preset leaves it to you (add data.name_or_path=...)"])


def test_scheduler_arguments_reach_the_trainer(short_trial):
    from trainers.config import compose_config
    from trainers.settings import trial_settings
    from trainers.sft import sft_config

    s = trial_settings(compose_config(short_trial + ["train.lr_scheduler_type=warmup_stable_decay",
                                                     "train.lr_scheduler_kwargs={num_decay_steps: 5}"]))
    args = sft_config(s, "none")
    assert (args.lr_scheduler_type, args.lr_scheduler_kwargs) == ("warmup_stable_decay", {"num_decay_steps": 5})



@pytest.mark.parametrize("name, says", [("notes.md", "is a '.md' file"), ("rows", "is a file without an extension")])
def test_a_file_of_no_dataset_format_is_named_as_such(short_trial, tmp_path, capsys, name, says):
    """It was called missing ("no such file or folder"), which sent the user looking for the wrong fault."""
    path = tmp_path / name
    path.write_text('{"prompt": "a", "completion": "b"}\n')
    code, err = run_main(short_trial + ["data.build=null", f"data.name_or_path={path}"], capsys)
    assert code == 2 and err == [f"error: data.name_or_path='{path}': {says}; allowed: a .jsonl/.json/.csv/.parquet "
                                 "file, a local folder or a hub dataset id"]


def test_a_task_metric_with_no_row_to_judge_is_refused_before_training(short_trial, tmp_path, capsys):
    """The demo data's data.metric=price stays set when only data.name_or_path changes: on rows with
    no number in their completion the trial trained, then died in the metric (ZeroDivisionError)."""
    path = write_jsonl(tmp_path / "words.jsonl", [{"prompt": f"Say {i}:", "completion": " hello"} for i in range(8)])
    code, err = run_main(short_trial + ["data.build=null", f"data.name_or_path={path}"], capsys)
    assert code == 2 and err == [f"error: data.metric='price': judges the number in each eval row's completion, and "
                                 f"none of the 4 it would use in {path} holds one; allowed: null (data.metric=null: "
                                 "eval loss only) or rows whose completion is a price"]
    assert not (tmp_path / "run").exists()


def test_an_adapter_folder_given_as_the_model_names_its_base(short_trial, tiny_model, tmp_path, capsys):
    """A sweep's best/ (or any PEFT adapter) as model.name_or_path: transformers' "Unrecognized model
    ... Should have a `model_type` key in its config.json" sent the user looking for a config.json."""
    adapter = tmp_path / "best"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(tiny_model), "r": 8}))
    code, err = run_main(short_trial + ["model.build=null", f"model.name_or_path={adapter}"], capsys)
    assert code == 2 and err == [f"error: model.name_or_path='{adapter}': a LoRA adapter (adapter_config.json), not a "
                                 f"base model to adapt; allowed: a base model folder or hub id, e.g. the one it was "
                                 f"trained on: {tiny_model}"], err


@pytest.mark.parametrize("method,bits,says", [
    ("bitsandbytes", "8", "bitsandbytes, 4-bit: the quantization_config in its config.json), which quant.bits cannot "
                          "change; allowed: 4 (as saved), or an unquantized checkpoint of the model"),
    ("gptq", "4", "gptq, 4-bit: the quantization_config in its config.json), which quant.bits cannot change; allowed: "
                  "an unquantized checkpoint of the model"),
])
def test_a_checkpoint_saved_quantized_keeps_its_own_bits(method, bits, says, short_trial, tiny_model, tmp_path, capsys):
    """from_pretrained loads a checkpoint saved quantized as it was saved: an 8-bit trial of a
    bitsandbytes 4-bit checkpoint trained 4-bit and was recorded as 8-bit (measured: the same loss
    as its 4-bit twin), and quant.bits=none died in from_pretrained with a traceback."""
    import shutil

    model = tmp_path / "saved-quantized"
    shutil.copytree(tiny_model, model)
    config = json.loads((model / "config.json").read_text())
    config["quantization_config"] = ({"quant_method": "bitsandbytes", "load_in_4bit": True, "bnb_4bit_quant_type": "nf4"}
                                     if method == "bitsandbytes" else {"quant_method": "gptq", "bits": 4})
    (model / "config.json").write_text(json.dumps(config))
    args = [a for a in short_trial if not a.startswith("model.")] + [f"model.name_or_path={model}", "model.build=null"]
    code, err = run_main(args + [f"quant.bits={bits}"], capsys)
    assert code == 2 and err == [f"error: quant.bits={bits}: this model was saved quantized ({says}"], err


def test_ctrl_c_during_a_trial_is_one_line(short_trial, tmp_path, capsys, monkeypatch):
    """Ctrl-C in `python -m trainers` printed a KeyboardInterrupt traceback from wherever torch was."""
    import trainers.sft

    def pressed(settings, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(trainers.sft, "run_trial", pressed)
    code, err = run_main(short_trial, capsys)
    assert code == 130 and err == [f"interrupted: the trial stopped before saving a checkpoint in {tmp_path / 'run'}"]


def test_evaluating_on_the_training_split_is_refused(short_trial, capsys):
    """data.eval_split=train trained and ranked trials by their loss on rows they had trained on."""
    code, err = run_main(short_trial + ["data.eval_split=train"], capsys)
    assert code == 2 and err == ["error: data.eval_split='train': the split the trials train on (data.train_split), so "
                                 "the eval loss would reward memorising it; allowed: another split, or null (hold out "
                                 "data.eval_size rows of the train split)"], err


def test_a_cache_dir_that_cannot_be_written_is_named(short_trial, tmp_path, capsys):
    """datasets writes its cache there: the error blamed the data file ("is not a readable .jsonl file")."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    args = [a for a in short_trial if not a.startswith("cache_dir=")] + [f"cache_dir={blocker / 'cache'}"]
    code, err = run_main(args, capsys)
    assert code == 2 and err == [f"error: cache_dir='{blocker / 'cache'}': cannot be written: Not a directory"], err


def test_a_model_that_is_not_a_causal_lm_is_named_in_one_line(short_trial, tmp_path, capsys):
    """T5 (flan-t5 is a common first try): AutoModelForCausalLM's ValueError listed ~250 config
    classes, as a traceback from the target-module check."""
    from transformers import T5Config, T5ForConditionalGeneration

    T5ForConditionalGeneration(T5Config(vocab_size=64, d_model=8, d_kv=4, d_ff=16, num_layers=1, num_heads=2)) \
        .save_pretrained(tmp_path / "t5")
    capsys.readouterr()  # save_pretrained's progress bar
    code, err = run_main(short_trial + [f"model.name_or_path={tmp_path / 't5'}"], capsys)
    assert code == 2 and err == [f"error: model.name_or_path='{tmp_path / 't5'}': is a t5 model "
                                 "(T5ForConditionalGeneration), which transformers cannot load as a causal language "
                                 "model (AutoModelForCausalLM); allowed: a decoder-only model such as Llama, Qwen, "
                                 "Mistral or GPT-2"]
