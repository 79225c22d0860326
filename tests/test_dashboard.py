"""`make dashboard`: optuna-dashboard serves a study this project wrote, over HTTP on 127.0.0.1."""
import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna

from conftest import ROOT
from sweeper.settings import sweep_settings
from sweeper.study import build_storage, open_study


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str):
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def test_dashboard_serves_the_study_and_its_trials(tmp_path):
    args = [f"sweep.dir={tmp_path}", "sweep.study_name=dash", f"sweep.storage=sqlite:///{tmp_path / 'study.db'}"]
    s = sweep_settings(args, check_values=False)
    study = open_study(s, build_storage(s))  # as a sweep opens it: fingerprint, enqueued baseline
    for r, loss in ((32, 1.2), (8, 2.4)):
        trial = study.ask({"lora_r": optuna.distributions.CategoricalDistribution([8, 16, 32])})
        trial.set_user_attr("lora_alpha", 2 * trial.params["lora_r"])
        trial.report(loss + 1, 10)
        study.tell(trial, loss)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "sweeper.results.dashboard", *args, f"sweep.dashboard_port={port}"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                studies = get(f"http://127.0.0.1:{port}/api/studies")["study_summaries"]
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
                time.sleep(0.5)
        (served,) = [x for x in studies if x["study_name"] == "dash"]
        detail = get(f"http://127.0.0.1:{port}/api/studies/{served['study_id']}?after=0")
        assert len(detail["trials"]) == 2
        assert sorted(t["values"][0] for t in detail["trials"]) == [1.2, 2.4]
        assert detail["objective_names"] == ["eval_loss"]  # not "Objective 0"
        assert served["user_attrs"] == [] and detail["user_attrs"] == []  # the fingerprint is a system attribute
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_dashboard_without_a_study_is_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "sweeper.results.dashboard", f"sweep.dir={tmp_path}"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: sweep.storage=") and "run make sweep" in proc.stderr


def test_optuna_cli_lists_the_study_without_its_fingerprint(tmp_path):
    args = [f"sweep.dir={tmp_path}", "sweep.study_name=cli", f"sweep.storage=sqlite:///{tmp_path / 'study.db'}"]
    s = sweep_settings(args, check_values=False)
    open_study(s, build_storage(s))
    proc = subprocess.run([str(Path(sys.executable).parent / "optuna"), "studies", "--storage", s.storage, "-f", "json"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-1000:]
    (listed,) = json.loads(proc.stdout)
    assert listed["name"] == "cli" and "fingerprint" not in proc.stdout and "search.lora_r" not in proc.stdout


def test_dashboard_on_a_busy_port_names_the_key(tmp_path):
    args = [f"sweep.dir={tmp_path}", "sweep.study_name=busy", f"sweep.storage=sqlite:///{tmp_path / 'study.db'}"]
    s = sweep_settings(args, check_values=False)
    open_study(s, build_storage(s))
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "sweeper.results.dashboard", *args, f"sweep.dashboard_port={port}"],
                              cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""  # no "Listening on ..." before the refusal
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"error: sweep.dashboard_port={port}: 127.0.0.1:{port} is taken") and "sweep.dashboard_port=" in line


def test_the_commands_that_read_a_study_refuse_one_that_is_not_there(tmp_path, capsys):
    """make report, follow and dashboard on a study never run: one line, exit 2, and no empty
    SQLite file or study folder left behind by opening it (a later make sweep would find them)."""
    from sweeper.follow import main as follow
    from sweeper.results.__main__ import main as report
    from sweeper.results.dashboard import main as dashboard

    args = [f"sweep.output_root={tmp_path / 'out'}", "sweep.study_name=never-run"]
    for command in (report, follow, dashboard):
        assert command(args) == 2, command
        err = capsys.readouterr().err
        assert err == (f"error: sweep.storage='sqlite:///{tmp_path / 'out' / 'never-run' / 'study.db'}': no study "
                       "'never-run' there yet (no such file): run make sweep with the same ARGS first\n"), command
    assert list(tmp_path.iterdir()) == []
    assert dashboard(["sweep.dashboard_port=99999"]) == 2
    assert capsys.readouterr().err == "error: sweep.dashboard_port=99999: a whole number from 1 to 65535\n"


def test_report_and_follow_name_a_study_folder_they_cannot_write(tmp_path, capsys):
    """The study exists (its storage elsewhere) but sweep.dir lies under a file: make report and
    follow write the report there, and said so with a FileNotFoundError traceback from mkdir."""
    import optuna

    from sweeper.follow import main as follow
    from sweeper.results.__main__ import main as report

    url = f"sqlite:///{tmp_path / 'study.db'}"
    optuna.create_study(study_name="s", storage=url)
    (tmp_path / "notes").write_text("mine\n")
    args = [f"sweep.storage={url}", "sweep.study_name=s", f"sweep.dir={tmp_path / 'notes' / 's'}"]
    for command in (report, follow):
        assert command(args) == 2, command
        assert capsys.readouterr().err == f"error: sweep.dir='{tmp_path / 'notes' / 's'}': cannot be written: Not a directory\n"
    assert (tmp_path / "notes").read_text() == "mine\n"
