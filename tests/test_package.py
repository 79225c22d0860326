"""The project as an installed package, outside the clone: a wheel built from it, installed into a
fresh virtual environment (its dependencies found in the project's .venv rather than downloaded
again), run from another working directory through its console scripts and its Python API, with
the demo's defaults (configs inside the wheel, the demo model in a cache folder)."""
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile

import optuna
import pytest
from optuna.trial import TrialState

from conftest import ROOT, SYNTHETIC_DATA, TINY_MODEL

pytestmark = pytest.mark.slow


def run(args, cwd, env, timeout=600):
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_the_wheel_runs_outside_the_clone(tiny_model, synthetic_data, tmp_path):
    dist, source = tmp_path / "dist", tmp_path / "source"
    # Built from a copy of the project's files: setuptools writes a build/ folder beside them.
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".*", "outputs", "artifacts", "build", "*.egg-info",
                                                                 "__pycache__", "wandb"))
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(dist), str(source)],
        source, os.environ)
    (wheel,) = dist.glob("qlora_sweep-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {"qlora_sweep_conf/config.yaml", "qlora_sweep_conf/search/qlora.yaml", "sweeper/api.py"} <= set(names)
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "qlora-sweep = sweeper.__main__:cli" in entry_points and "qlora-trial = trainers.__main__:cli" in entry_points

    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)], tmp_path, os.environ)
    site = next((venv / "lib").glob("python3*/site-packages"))
    # The dependencies, as a path: the project's own editable install there is a .pth hook, which a
    # path entry does not run, so the only sweeper this interpreter sees is the wheel's.
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
        tmp_path, os.environ)

    # The demo's defaults for an installed package: its model and data in the user's cache folder
    # (here, the ones the tests built, linked in, instead of a minute of pretraining).
    cache = tmp_path / "cache"
    (cache / "qlora-sweep" / "data").mkdir(parents=True)
    (cache / "qlora-sweep" / "tiny-llama").symlink_to(TINY_MODEL)
    (cache / "qlora-sweep" / "data" / "synthetic_prices.jsonl").symlink_to(SYNTHETIC_DATA)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "XDG_CACHE_HOME": str(cache), "PYTHONPATH": ""}
    where = run([str(venv / "bin" / "python"), "-c", "import sweeper, trainers.paths as p; "
                 "print(sweeper.__file__); print(p.CONF_DIR); print(p.ARTIFACTS)"], elsewhere, env).split()
    assert where == [str(site / "sweeper" / "__init__.py"), str(site / "qlora_sweep_conf"), str(cache / "qlora-sweep")]
    assert "search: qlora, qlora_free_alpha, qlora_modules" in run([str(venv / "bin" / "qlora-trial"), "--help"],
                                                                   elsewhere, env)

    short = ["train.max_steps=10", "train.eval_steps=5", "data.eval_size=16", "tracking.mode=disabled",
             "sweep.trials_per_device=1", "sweep.study_name=installed", "sweep.recheck_seeds=0"]
    out = run([str(venv / "bin" / "qlora-sweep"), *short, "sweep.n_trials=1"], elsewhere, env)
    assert "best adapter:" in out
    api = ("from sweeper import run_sweep; r = run_sweep(" + repr([*short, "sweep.n_trials=2"]) + "); "
           "print(r.finished, r.best_trial, r.best_adapter, r.report)")
    finished, best, adapter, report = run([str(venv / "bin" / "python"), "-c", api], elsewhere, env).split()[-4:]
    study_dir = elsewhere / "outputs" / "installed"
    assert finished == "2" and adapter == str(study_dir / "trials" / best) and report == str(study_dir / "report"
                                                                                              / "index.html")
    study = optuna.load_study(study_name="installed", storage=f"sqlite:///{study_dir / 'study.db'}")
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials) == 2

    # The model card's load line, from yet another folder: the adapter names its base by an
    # absolute path, and best/ points at its trial relatively.
    assert not os.path.isabs(os.readlink(study_dir / "best"))
    card = (study_dir / "best" / "README.md").read_text()
    load = card.split("```python\n", 1)[1].split("```", 1)[0]
    run([str(venv / "bin" / "python"), "-c", load + "\nprint(type(model).__name__)"], tmp_path, env)
