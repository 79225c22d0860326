"""make bench-search: how much training each search strategy spends to find a good trial on the
demo task, against the full grid. Real trials first, through the sweep: the grid of the default
space with dropout discretised, the grid of a harder space (learning rate instead of dropout), every
trial to its end and every eval recorded, and seed reruns of two configurations (the noise of an
eval loss at each step). Then each strategy (random; TPE alone; TPE with the 75th-percentile
pruner, the default; with the median pruner; with hyperband; a median variant) runs 5 seeds
against each table of real learning curves, with the sampler and pruner the sweep itself builds
(sweeper.study), so every strategy meets the same landscape and a pruned trial's would-be end is
known. Last line, for the default space: search_share=<default strategy> random_share=<random>.
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
# A harder space on the same task: the learning rate, which the QLoRA paper found matters more
# than the rank (dropout fixed at 0.1): 3 x 4 x 2 = 24 configurations as well.
LR_SPACE = [*replace("lora_dropout", "type: categorical, choices: [0.1], target: lora.dropout"),
            "+search.learning_rate={type: categorical, choices: [0.0002, 0.0006, 0.002, 0.006], target: train.learning_rate}"]
LANDSCAPES = {"default space (r, dropout, bits)": ("grid", GRID_SPACE), "with learning rate (r, lr, bits)": ("grid-lr", LR_SPACE)}
NOISE_SEEDS = [1, 2, 3]
NEAR = 0.10  # within 10% of the grid's best-to-median gap of its best
STRATEGIES = {  # name: sweep overrides (a strategy is what a user can choose in conf/sweep)
    "random": ["sweep.sampler=random", "sweep.pruner=none"],
    "tpe, no pruning": ["sweep.sampler=tpe", "sweep.pruner=none"],
    "tpe + 75th percentile (default)": ["sweep.sampler=tpe", "sweep.pruner=percentile"],
    "tpe + median": ["sweep.sampler=tpe", "sweep.pruner=median"],
    "tpe + hyperband": ["sweep.sampler=tpe", "sweep.pruner=hyperband"],
}
DEFAULT = "tpe + 75th percentile (default)"
# Another setting tried on the same table: the median pruner with no cut at the first eval, where
# the training-seed noise is largest.
VARIANTS = {
    "tpe + median, no cut at the first eval": lambda s: optuna.pruners.MedianPruner(
        n_startup_trials=s.startup_trials, n_warmup_steps=2 * s.trial.train.eval_steps),
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
    """Each configuration's learning curve, keyed by its values in parameter-name order."""
    return {tuple(v for _, v in sorted(t.params.items())): dict(t.intermediate_values)
            for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE}


def noise(study: optuna.Study, table: dict) -> dict[int, float]:
    """Per eval step: the standard deviation of the eval loss over training seeds, pooled over the
    configurations rerun (the grid's run is seed 42)."""
    groups: dict[tuple, list[dict]] = {}
    for t in study.trials:
        if t.state == optuna.trial.TrialState.COMPLETE:
            key = (t.params["lora_dropout"], t.params["lora_r"], t.params["quant_bits"])
            groups.setdefault(key, [table[key]]).append(dict(t.intermediate_values))
    steps = sorted(next(iter(table.values())))
    return {s: statistics.fmean(statistics.stdev(c[s] for c in runs) for runs in groups.values()) for s in steps}


def replay(space: list[str], overrides: list[str], seed: int, table: dict, target: float, budget: int,
           sigma: dict, pruner=None) -> dict:
    """One strategy's run against the table: steps until a trial finished at or under target,
    and what its pruner cut."""
    s = sweep_settings(["sweep.enqueue=[]", f"sweep.n_trials={budget}", f"sweep.seed={seed}", *space, *overrides],
                       check_values=False)
    study = optuna.create_study(sampler=build_sampler(s), pruner=pruner(s) if pruner else build_pruner(s))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spent, hit_at, cuts = 0, None, []
    for _ in range(budget):
        trial = study.ask()
        values = suggest(trial, s.space)
        curve = table[tuple(values[p.name] for p in sorted(s.space, key=lambda p: p.name) if p.searched)]
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


def landscape(name: str, space: list[str], out: Path) -> tuple[dict, float, int]:
    n_grid = 24
    table = curves(run_sweep(name, out, space, n_grid))
    finals = {k: c[max(c)] for k, c in table.items()}
    best, median = min(finals.values()), statistics.median(finals.values())
    target = best + NEAR * (median - best)
    near = sorted(k for k, v in finals.items() if v <= target)
    gaps = sorted(finals.values())
    print(f"{name}: best {best:.4f} at {min(finals, key=finals.get)}, median {median:.4f}, worst {max(finals.values()):.4f}; "
          f"target <= {target:.4f}: {len(near)} of {n_grid} configurations {near}; the best two differ by "
          f"{gaps[1] - gaps[0]:.4f}")
    return table, target, sum(max(c) for c in table.values())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "outputs" / "bench-search"))
    ap.add_argument("--seeds", type=int, default=5)
    a = ap.parse_args()
    out = Path(a.out)
    print("real trials of the demo task (tiny model, 40 steps, eval every 10), through the sweep...", flush=True)
    tables = {title: (space, *landscape(name, space, out)) for title, (name, space) in LANDSCAPES.items()}
    table = tables[next(iter(LANDSCAPES))][1]
    best_key = min(table, key=lambda k: table[k][max(table[k])])  # (dropout, r, bits)
    other_r = 8 if best_key[1] != 8 else 32
    noise_space = [*replace("lora_r", f"type: categorical, choices: [{best_key[1]}, {other_r}], target: lora.r"),
                   *replace("lora_dropout", f"type: categorical, choices: [{best_key[0]}], target: lora.dropout"),
                   *replace("quant_bits", f"type: categorical, choices: [{best_key[2]}], target: quant.bits"),
                   f"+search.seed={{type: categorical, choices: {NOISE_SEEDS}, target: train.seed}}"]
    print(f"noise: seeds {NOISE_SEEDS} of r={best_key[1]} and r={other_r}...", flush=True)
    sigma = noise(run_sweep("noise", out, noise_space, len(NOISE_SEEDS) * 2), table)
    print("eval loss noise over training seeds (sd): " + ", ".join(f"step {s}: {v:.4f}" for s, v in sigma.items()))

    strategies = {**{name: (overrides, None) for name, overrides in STRATEGIES.items()},
                  **{name: (["sweep.sampler=tpe", "sweep.pruner=median"], make) for name, make in VARIANTS.items()}}
    shares = {}
    for title, (space, table, target, grid_steps) in tables.items():
        print(f"\n### {title}: {a.seeds} seeds, up to {len(table)} trials each\n")
        print("| strategy | steps to target / grid steps (median) | found | all steps / grid steps (mean) | pruned | "
              "pruned the run's eventual best | pruned a near-best | pruned within 2 sd of the median |")
        print("|---|---|---|---|---|---|---|---|")
        for name, (overrides, pruner) in strategies.items():
            runs = [replay(space, overrides, seed, table, target, len(table), sigma, pruner) for seed in range(a.seeds)]
            share = statistics.median((r["hit_at"] if r["hit_at"] is not None else r["spent"]) / grid_steps for r in runs)
            shares[(title, name)] = share
            found = sum(r["hit_at"] is not None for r in runs)
            total = lambda k: sum(r[k] for r in runs)  # noqa: E731
            print(f"| {name} | {share:.3f} | {found}/{a.seeds} | {total('spent') / a.seeds / grid_steps:.2f} | "
                  f"{total('cuts')} | {total('cut_best')} | {total('cut_near')} | {total('cut_in_noise')} |")
    default = next(iter(LANDSCAPES))
    print(f"\nsearch_share={shares[(default, DEFAULT)]:.3f} random_share={shares[(default, 'random')]:.3f}")


if __name__ == "__main__":
    main()
