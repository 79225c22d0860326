"""A full disk and read-only files, met for real on small tmpfs mounts: refused before the study
opens in one line naming the path, or, met mid-sweep, a trial failed with that reason and a sweep
that stops in one line; nothing already in the study is lost, and the rerun continues."""
import hashlib
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from test_sweep import load, sweep, wait_for


def mount_tmpfs(where: Path, size: str, *options: str) -> None:
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join([f"size={size}", *options]), "tmpfs", str(where)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()})")


@pytest.fixture
def mounts():
    made = []
    yield made
    for where in reversed(made):
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def args_under(short_trial, root: Path, storage: Path | None = None) -> list[str]:
    keep = [a for a in short_trial if not a.startswith("output_dir=")]
    return keep + [f"sweep.output_root={root}", "sweep.study_name=disk", "sweep.trials_per_device=1",
                   "tracking.mode=disabled", "sweep.recheck_seeds=0", *([f"sweep.storage=sqlite:///{storage}"] if storage else [])]


def test_a_read_only_output_root_is_refused_before_the_study(short_trial, tmp_path, mounts):
    ro = tmp_path / "ro"
    mount_tmpfs(ro, "4m", "ro")
    mounts.append(ro)
    proc = sweep(args_under(short_trial, ro, storage=tmp_path / "study.db"))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: sweep.dir='{ro / 'disk'}': cannot be written: {ro} is "
                                                "read-only (Read-only file system)"]
    assert not (tmp_path / "study.db").exists()


def test_a_read_only_study_database_is_refused_and_left_as_it_was(short_trial, tmp_path, mounts):
    db_dir = tmp_path / "db"
    mount_tmpfs(db_dir, "8m")
    mounts.append(db_dir)
    args = args_under(short_trial, tmp_path / "out", storage=db_dir / "study.db")
    storage = optuna.storages.RDBStorage(f"sqlite:///{db_dir / 'study.db'}")
    study = optuna.create_study(study_name="disk", storage=storage)
    study.add_trial(optuna.trial.create_trial(params={"lora_r": 32}, distributions={
        "lora_r": optuna.distributions.CategoricalDistribution([8, 16, 32])}, value=1.5))  # a study with data in it
    storage.engine.dispose()  # closed: a file open for writing keeps its mount from going read-only
    before = hashlib.sha256((db_dir / "study.db").read_bytes()).hexdigest()
    subprocess.run(["mount", "-o", "remount,ro", str(db_dir)], check=True)
    proc = sweep(args + ["sweep.n_trials=2"])
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: sweep.storage=") and f"the study database {db_dir / 'study.db'} is read-only" in line
    assert hashlib.sha256((db_dir / "study.db").read_bytes()).hexdigest() == before


def test_a_disk_that_fills_up_mid_trial_is_named_and_nothing_is_lost(short_trial, tmp_path, mounts):
    """The output root (study database included) fills up while trial 0 trains: the sweep stops in
    one line naming the database and its full disk (no traceback), and once space is freed the
    same command finishes the study, the trial run again."""
    root = tmp_path / "small"
    mount_tmpfs(root, "40m")
    mounts.append(root)
    args = args_under(short_trial, root) + ["sweep.n_trials=1", "train.max_steps=20", "train.eval_steps=10"]
    proc = subprocess.Popen([sys.executable, "-m", "sweeper", *args], cwd=Path(__file__).parent.parent,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    progress = root / "disk" / "trials" / "0" / "progress.json"
    wait_for(lambda: proc.poll() is not None or (progress.exists() and '"training"' in progress.read_text()), every=0.05)
    assert proc.poll() is None, proc.communicate()
    filler = root / "filler"
    subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=1M"], capture_output=True)  # until the disk is full
    out, err = proc.communicate(timeout=300)
    assert "Traceback" not in err and "invalid data in the commit" not in err, err[-3000:]
    if proc.returncode != 0:  # the study database could not take the trial's end: said in one line
        (line,) = err.strip().splitlines()
        assert line.startswith(f"error: the study database {root / 'disk' / 'study.db'} can no longer be written")
    else:  # the database still took the failure: the trial says why it failed
        failed = [t for t in load(f"sqlite:///{root / 'disk' / 'study.db'}", "disk").trials if t.state == TrialState.FAIL]
        assert failed and "full" in failed[0].user_attrs["fail_reason"]
    filler.unlink()
    again = sweep(args)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    trials = load(f"sqlite:///{root / 'disk' / 'study.db'}", "disk").trials
    assert [t.state for t in trials].count(TrialState.COMPLETE) == 1
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert (root / "disk" / "best" / "adapter_model.safetensors").exists()
