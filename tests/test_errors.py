"""Bad input ends in one line naming the key, the bad value and what is allowed, exit code 2,
before a model is loaded; never a traceback from inside transformers or TRL."""
import json
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
                                                     "data.columns={prompt: question, completion: answer}"]))
    train, evals, fmt = load_splits(s.data, tmp_path / "cache")
    assert fmt == "prompt_completion" and len(train) + len(evals) == 10


def test_empty_split(short_trial, tmp_path, capsys):
    path = tmp_path / "empty.csv"
    path.write_text("prompt,completion\n")
    code, err = run_main(short_trial + [f"data.name_or_path={path}"], capsys)
    assert code == 2 and len(err) == 1 and err[0].startswith("error: data.train_split=") and "empty" in err[0]


def test_cli_exit_code_and_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "trainers", "lora.dropout=1.5", f"output_dir={tmp_path}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: lora.dropout=1.5: allowed: 0 <= dropout < 1"
