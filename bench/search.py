"""make bench-search: how much training each search strategy spends to find a good trial on the
demo task, against the full grid. Real trials first: the grid of the default space with dropout
discretised (every trial to its end, every eval recorded), and seed reruns of two configurations
(the noise of an eval loss at each step). Then each strategy (random; TPE with the median pruner,
the default; TPE with hyperband; pruner variants) runs 5 seeds against that table of real learning
curves, with the sampler and pruner the sweep itself builds (sweeper.study), so every strategy
meets the same landscape and a pruned trial's would-be end is known. Last line:
search_share=<x> random_share=<y>.
python bench/search.py [--out outputs/bench-search] [--seeds 5]"""
import argparse
import statistics
import subprocess
import sys
from pathlib import Path

import optuna

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from sweeper.settings import sweep_settings  # noqa: E402
from sweeper.space import suggest  # noqa: E402
from sweeper.study import build_pruner, build_sampler  # noqa: E402

DROPOUTS = [0.05, 0.1, 0.15, 0.2]


def replace(name: str, spec: str) -> list[str]:
    """Hydra overrides that swap one search entry for another (a dict is not assigned over a dict)."""
    return [f"~search.{name}", f"+search.{name}={{{spec}}}"]


GRID_SPACE = replace("lora_dropout", f"type: categorical, choices: [{', '.join(map(str, DROPOUTS))}], target: lora.dropout")
NOISE_SEEDS = [1, 2, 3]
NEAR = 0.10  # within 10% of the grid's best-to-median gap of its best
STRATEGIES = {  # name: sweep overrides (a strategy is what a user can choose in conf/sweep)
    "random": ["sweep.sampler=random", "sweep.pruner=none"],
    "tpe, no pruning": ["sweep.sampler=tpe", "sweep.pruner=none"],
    "tpe + median (default)": ["sweep.sampler=tpe", "sweep.pruner=median"],
    "tpe + hyperband": ["sweep.sampler=tpe", "sweep.pruner=hyperband"],
}
DEFAULT = "tpe + median (default)"
# Candidate pruner settings, tried against the default on the same table: does waiting for more
# evidence (a later first cut, or a cut only below the median by a margin) lose less or cost more?
VARIANTS = {
    "tpe + median, no cut at the first eval": lambda s: optuna.pruners.MedianPruner(
        n_startup_trials=s.startup_trials, n_warmup_steps=s.trial.train.eval_steps),
    "tpe + 75th percentile": lambda s: optuna.pruners.PercentilePruner(75.0, n_startup_trials=s.startup_trials),
}


def run_sweep(name: str, out: Path, overrides: list[str], n_trials: int) -> optuna.Study:
    """Real trials through the sweep (resumable: a rerun of the benchmark reuses finished ones)."""
    args = [f"sweep.dir={out / name}", f"sweep.study_name={name}", f"sweep.n_trials={n_trials}", "sweep.pruner=none",
            "sweep.sampler=grid", "sweep.enqueue=[]", "tracking.mode=disabled", "data.metric=null", *overrides]
    proc = subprocess.run([sys.executable, "-m", "sweeper", *args], cwd=ROOT, text=True, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        sys.exit(f"the {name} sweep failed:\n{proc.stdout[-3000:]}")
    return optuna.load_study(study_name=name, storage=f"sqlite:///{out / name / 'study.db'}")


def curves(study: optuna.Study) -> dict[tuple, dict[int, float]]:
    key_names = ("lora_r", "lora_dropout", "quant_bits")
    return {tuple(t.params[k] for k in key_names): dict(t.intermediate_values)
            for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE}


def noise(study: optuna.Study, table: dict) -> dict[int, float]:
    """Per eval step: the standard deviation of the eval loss over training seeds, pooled over the
    configurations rerun (the grid's run is seed 42)."""
    groups: dict[tuple, list[dict]] = {}
    for t in study.trials:
        if t.state == optuna.trial.TrialState.COMPLETE:
            key = (t.params["lora_r"], t.params["lora_dropout"], t.params["quant_bits"])
            groups.setdefault(key, [table[key]]).append(dict(t.intermediate_values))
    steps = sorted(next(iter(table.values())))
    return {s: statistics.fmean(statistics.stdev(c[s] for c in runs) for runs in groups.values()) for s in steps}


def replay(overrides: list[str], seed: int, table: dict, target: float, budget: int, sigma: dict,
           pruner=None) -> dict:
    """One strategy's run against the table: steps until a trial finished at or under target,
    and what its pruner cut."""
    s = sweep_settings(["sweep.enqueue=[]", f"sweep.n_trials={budget}", f"sweep.seed={seed}", *GRID_SPACE, *overrides],
                       check_values=False)
    study = optuna.create_study(sampler=build_sampler(s), pruner=pruner(s) if pruner else build_pruner(s))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spent, hit_at, cuts = 0, None, []
    for _ in range(budget):
        trial = study.ask()
        values = suggest(trial, s.space)
        curve = table[(values["lora_r"], values["lora_dropout"], values["quant_bits"])]
        pruned = False
        for step in sorted(curve):
            trial.report(curve[step], step)
            if trial.should_prune():
                others = [t.intermediate_values[step] for t in study.trials
                          if step in t.intermediate_values and t.number != trial.number]
                cuts.append({"final": curve[max(curve)], "gap": curve[step] - statistics.median(others),
                             "sigma": sigma[step]})
                spent += step
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                pruned = True
                break
        if not pruned:
            spent += max(curve)
            study.tell(trial, curve[max(curve)])
            if hit_at is None and curve[max(curve)] <= target:
                hit_at = spent
    best_complete = min((t.value for t in study.trials if t.value is not None), default=float("inf"))
    return {"hit_at": hit_at, "spent": spent, "cuts": len(cuts),
            "cut_best": sum(c["final"] < best_complete for c in cuts),
            "cut_near": sum(c["final"] <= target for c in cuts),
            "cut_in_noise": sum(c["gap"] < 2 * c["sigma"] for c in cuts)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "outputs" / "bench-search"))
    ap.add_argument("--seeds", type=int, default=5)
    a = ap.parse_args()
    out = Path(a.out)
    n_grid = 3 * len(DROPOUTS) * 2
    print(f"grid: {n_grid} real trials of the demo task (tiny model, 40 steps, eval every 10)...", flush=True)
    table = curves(run_sweep("grid", out, GRID_SPACE, n_grid))
    finals = {k: c[max(c)] for k, c in table.items()}
    best, median = min(finals.values()), statistics.median(finals.values())
    target = best + NEAR * (median - best)
    near = sorted(k for k, v in finals.items() if v <= target)
    grid_steps = sum(max(c) for c in table.values())
    print(f"grid: best {best:.4f} at {min(finals, key=finals.get)}, median {median:.4f}, worst "
          f"{max(finals.values()):.4f}; target <= {target:.4f}: {len(near)} of {n_grid} configurations {near}; "
          f"{grid_steps} steps in all")
    best_key = min(finals, key=finals.get)
    other_r = 8 if best_key[0] != 8 else 32
    noise_space = [*replace("lora_r", f"type: categorical, choices: [{best_key[0]}, {other_r}], target: lora.r"),
                   *replace("lora_dropout", f"type: categorical, choices: [{best_key[1]}], target: lora.dropout"),
                   *replace("quant_bits", f"type: categorical, choices: [{best_key[2]}], target: quant.bits"),
                   f"+search.seed={{type: categorical, choices: {NOISE_SEEDS}, target: train.seed}}"]
    print(f"noise: seeds {NOISE_SEEDS} of r={best_key[0]} and r={other_r} ({len(NOISE_SEEDS) * 2} real trials)...",
          flush=True)
    sigma = noise(run_sweep("noise", out, noise_space, len(NOISE_SEEDS) * 2), table)
    print("eval loss noise over seeds (sd): " + ", ".join(f"step {s}: {v:.4f}" for s, v in sigma.items()))
    gaps = sorted(finals.values())
    print(f"the best two configurations differ by {gaps[1] - gaps[0]:.4f}; target gap {target - best:.4f}\n")

    print(f"| strategy ({a.seeds} seeds, up to {n_grid} trials) | share of grid steps to target (median) | "
          f"found | pruned | pruned the eventual best | pruned a near-best | pruned within 2 sd of the median |")
    print("|---|---|---|---|---|---|---|")
    shares = {}
    strategies = {**{name: (overrides, None) for name, overrides in STRATEGIES.items()},
                  **{name: (["sweep.sampler=tpe", "sweep.pruner=median"], make) for name, make in VARIANTS.items()}}
    for name, (overrides, pruner) in strategies.items():
        runs = [replay(overrides, seed, table, target, n_grid, sigma, pruner) for seed in range(a.seeds)]
        share = statistics.median((r["hit_at"] if r["hit_at"] is not None else r["spent"]) / grid_steps for r in runs)
        shares[name] = share
        found = sum(r["hit_at"] is not None for r in runs)
        total = lambda k: sum(r[k] for r in runs)  # noqa: E731
        print(f"| {name} | {share:.3f} | {found}/{a.seeds} | {total('cuts')} | {total('cut_best')} | "
              f"{total('cut_near')} | {total('cut_in_noise')} |")
    print(f"\nsearch_share={shares[DEFAULT]:.3f} random_share={shares['random']:.3f}")


if __name__ == "__main__":
    main()
