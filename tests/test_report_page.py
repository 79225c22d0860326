"""The report page as a browser shows it: headless Chromium (Debian's chromium-headless-shell,
which .ci/run installs) loads index.html in a 1280 px window. Nothing may overflow it, every plot
must load, and a screenshot is left beside the page for a person to look at."""
import html
import json
import shutil
import subprocess

import optuna
import pytest
from optuna.trial import TrialState

from landscape import rank_driven_study
from sweeper.results.files import write_report
from sweeper.settings import sweep_settings

CHROMIUM = shutil.which("chromium-headless-shell") or shutil.which("chromium")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium-headless-shell (.ci/run installs it)")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--hide-scrollbars", "--window-size=1280,900"]
# Appended to a copy of the page: what the window shows, once the plots have loaded.
MEASURE = """<script>window.addEventListener('load', () => {
  const images = [...document.images].map(i => ({alt: i.alt, width: i.naturalWidth, shown: i.clientWidth}));
  const lines = td => { const r = document.createRange(); r.selectNodeContents(td); return r.getClientRects().length; };
  const broken = [...document.querySelectorAll('td')].filter(td => !td.classList.contains('long') && lines(td) > 1)
    .map(td => td.textContent);
  const long = [...document.querySelectorAll('td.long')].map(td => td.clientWidth);
  document.body.setAttribute('data-measured', JSON.stringify({
    page: document.documentElement.scrollWidth, window: window.innerWidth, images, broken, long}));
});</script>"""


def chromium(*args, user_dir) -> str:
    proc = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={user_dir}", *args], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_the_report_page_fits_1280_px_and_every_plot_loads(tmp_path):
    study = rank_driven_study(8, seed=1, dropout_effect=1.0, user_attrs=True)
    study.add_trial(optuna.trial.create_trial(state=TrialState.FAIL, user_attrs={
        "fail_reason": "exit 1: RuntimeError: " + "a long reason without spaces_" * 12}))
    s = sweep_settings([f"sweep.dir={tmp_path}"], check_values=False)
    rerun = "rerun it alone: python -m trainers " + " ".join(f"train.key_{i}=0.{i}23456789012345" for i in range(30))
    index = write_report(study, s, f"study 't'\n{rerun}")
    probe = index.with_name("measured.html")
    probe.write_text(index.read_text().replace("</body>", MEASURE + "</body>"))
    dom = chromium("--dump-dom", probe.as_uri(), user_dir=tmp_path / "profile")
    measured = json.loads(html.unescape(dom.split('data-measured="', 1)[1].split('"', 1)[0]))
    assert measured["window"] == 1280 and measured["page"] <= 1280, measured  # no sideways scrolling
    assert sorted(i["alt"] for i in measured["images"]) == ["curves", "history", "importances", "parallel", "slices"]
    assert all(i["width"] > 0 and 0 < i["shown"] <= 1100 for i in measured["images"]), measured["images"]
    assert measured["broken"] == [], measured["broken"]  # a state or a number is never split over two lines ("com|plete")
    assert len(measured["long"]) == 1 and 0 < measured["long"][0] <= 1100, measured["long"]  # the reason wraps in its cell
    chromium(f"--screenshot={index.with_name('page.png')}", index.as_uri(), user_dir=tmp_path / "profile")
    assert index.with_name("page.png").read_bytes()[:4] == b"\x89PNG"
