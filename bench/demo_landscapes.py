"""Measure a demo task's landscape through the sweep itself: every point of a grid of the default
space trained to its end with every eval recorded, each on several training seeds, exported as a
landscape file (bench/landscapes.py) with where it was measured.

    python bench/demo_landscapes.py tiers [--out outputs/bench-landscapes]   (~35 min on 2 cores)

A landscape belongs to the demo model and data it was measured on: the demo model is pretrained on
the machine that builds it, so another machine's grid differs; hence the file, kept with its
provenance, rather than a retrain in every replay."""
import argparse
import hashlib
import itertools
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import optuna

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from landscapes import from_study, to_record  # noqa: E402

# The default space discretised: 7 learning rates a third of a decade apart over its range (the
# tiny preset's 2e-3 x 0.1 to x 10), every rank, both bit widths; dropout at the preset's 0.1.
LRS = [0.0002, 0.00043, 0.00093, 0.002, 0.0043, 0.0093, 0.02]
SEEDS = [1, 2, 3]
TASKS = {  # name: (the demo task's overrides, the grid: parameter -> (values, config key))
    "tiers": (["data=synthetic_tiers"],
              {"learning_rate": (LRS, "train.learning_rate"), "lora_r": ([8, 16, 32], "lora.r"),
               "quant_bits": ([4, 8], "quant.bits"), "seed": (SEEDS, "train.seed")}),
}


def space_overrides(grid: dict) -> list[str]:
    """The sweep's space replaced by the grid's categoricals (dropout left at the preset's value)."""
    out = ["~search"]
    for name, (values, target) in grid.items():
        out.append(f"+search.{name}={{type: categorical, choices: [{', '.join(map(str, values))}], target: {target}}}")
    return out + ["+search.lora_alpha={type: tied, of: lora_r, factor: 2, target: lora.alpha}"]


def run_grid(name: str, out: Path, overrides: list[str], grid: dict) -> optuna.Study:
    """Real trials through the sweep, one per grid point (resumable: a rerun reuses finished ones);
    a point whose trial failed is enqueued and run again, so the table has every point."""
    args = [f"sweep.dir={out / name}", f"sweep.study_name={name}", "sweep.pruner=none", "tracking.mode=disabled",
            "data.metric=null", "sweep.enqueue=[]", *overrides, *space_overrides(grid)]
    names = list(grid)
    wanted = [dict(zip(names, v)) for v in itertools.product(*(grid[n][0] for n in names))]
    sampler, n_trials = "sweep.sampler=grid", len(wanted)
    for _ in range(3):
        proc = subprocess.run([sys.executable, "-m", "sweeper", *args, sampler, f"sweep.n_trials={n_trials}"], cwd=ROOT,
                              text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if proc.returncode != 0:
            sys.exit(f"the {name} sweep failed:\n{proc.stdout[-3000:]}")
        study = optuna.load_study(study_name=name, storage=f"sqlite:///{out / name / 'study.db'}")
        done = {tuple(sorted(t.params.items())) for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE}
        missing = [w for w in wanted if tuple(sorted(w.items())) not in done]
        if not missing:
            return study
        print(f"  {name}: {len(missing)} grid point(s) without a complete trial; running them again", flush=True)
        for m in missing:
            study.enqueue_trial(m)
        sampler = "sweep.sampler=random"  # the queue goes first with any sampler; the grid allows no more trials
        n_trials = sum(t.state.is_finished() and t.state != optuna.trial.TrialState.FAIL for t in study.trials) + len(missing)
    sys.exit(f"the {name} grid still misses {len(missing)} point(s) after 3 runs: see {out / name}")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("task", choices=sorted(TASKS))
    ap.add_argument("--out", default=str(ROOT / "outputs" / "bench-landscapes"))
    a = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    overrides, grid = TASKS[a.task]
    start = time.monotonic()
    land = from_study(run_grid(f"demo-{a.task}", Path(a.out), overrides, grid), f"demo-{a.task}")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    data = next(o.split("=", 1)[1] for o in overrides if o.startswith("data="))
    land.source = (f"the demo task data={data} (tiny model, 40 steps, eval every 10), every grid point trained through "
                   f"the sweep on seeds {SEEDS}; measured {time.strftime('%Y-%m-%d')} on "
                   f"{platform.processor() or platform.machine()}, {len(os.sched_getaffinity(0))} cores, at {commit}; "
                   f"demo model {sha256(ROOT / 'artifacts' / 'tiny-llama' / 'model.safetensors')}, "
                   f"data {sha256(ROOT / 'artifacts' / 'data' / f'{data}.jsonl')}")
    path = ROOT / "bench" / "landscapes" / f"demo-{a.task}.json"
    path.write_text(json.dumps(to_record(land), indent=None, separators=(",", ":")) + "\n")
    print(f"{path.relative_to(ROOT)}: {len(land.cells)} configurations, noise sd {land.noise_sd:.4f}, "
          f"{time.monotonic() - start:.0f} s")


if __name__ == "__main__":
    main()
