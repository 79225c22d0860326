"""make bench-search: how much training each search strategy spends to find a good trial on the
demo task, against the full grid. Real trials first, through the sweep, every trial to its end and
every eval recorded: the grid of the default space discretised (r x dropout's two ends x bits x 7
learning rates), the grid of the default space as it was without the learning rate (the flat one),
and seed reruns of the best configuration and of it at another rank (the noise of an eval loss at
each step). Then each strategy (random; TPE alone; TPE with the 75th-percentile pruner, the
default; with the median pruner; with hyperband; a median variant) runs 5 seeds against each
table of real learning curves: it searches the sweep's own space (continuous dropout and learning
rate) with the sampler and pruner the sweep itself builds (sweeper.study), and each suggestion is
answered by the nearest grid point's curve, so every strategy meets the same landscape and a
pruned trial's would-be end is known. Last line, for the default space:
search_share=<default strategy> random_share=<random>.
python bench/search.py [--out outputs/bench-search] [--seeds 5]"""
import argparse
import math
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import optuna

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from sweeper.settings import sweep_settings  # noqa: E402
from sweeper.space import grid, suggest  # noqa: E402
from sweeper.study import build_pruner, build_sampler  # noqa: E402


def replace(name: str, spec: str) -> list[str]:
    """Hydra overrides that swap one search entry for another (a dict is not assigned over a dict)."""
    return [f"~search.{name}", f"+search.{name}={{{spec}}}"]


def categorical(name: str, choices: list, target: str) -> list[str]:
    return replace(name, f"type: categorical, choices: [{', '.join(map(str, choices))}], target: {target}")


# The default space discretised: 7 learning rates a third of a decade apart over its range (the
# tiny preset's 2e-3 x 0.1 to x 10), dropout at the ends of its range: 3 x 2 x 2 x 7 = 84 points.
LRS = [0.0002, 0.00043, 0.00093, 0.002, 0.0043, 0.0093, 0.02]
GRID_SPACE = [*categorical("lora_dropout", [0.05, 0.2], "lora.dropout"),
              *categorical("learning_rate", LRS, "train.learning_rate")]
# The default space before it had the learning rate (the preset's 2e-3), dropout at 4 points: 24.
FLAT_SPACE = [*categorical("lora_dropout", [0.05, 0.1, 0.15, 0.2], "lora.dropout"), "~search.learning_rate"]
LANDSCAPES = {  # title: (study name, grid overrides, the space a strategy searches: the sweep's own)
    "default space (r, dropout, bits, learning rate)": ("grid-lr", GRID_SPACE, []),
    "without the learning rate (r, dropout, bits; lr 2e-3)": ("grid-no-lr", FLAT_SPACE, ["~search.learning_rate"]),
}
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
# Other settings tried on the same tables, not (yet) choices in conf/sweep: the median pruner with
# no cut at the first eval, where the training-seed noise is largest; TPE modelling each parameter
# on its own (Optuna 4's default; Optuna 5's, which the sweep uses, models them jointly), with the
# default pruner.
VARIANTS = {  # name: (overrides, sampler factory or None, pruner factory or None)
    "tpe + median, no cut at the first eval": (["sweep.sampler=tpe", "sweep.pruner=median"], None,
                                               lambda s: optuna.pruners.MedianPruner(
                                                   n_startup_trials=s.startup_trials,
                                                   n_warmup_steps=2 * s.trial.train.eval_steps)),
    "tpe univariate + 75th percentile": (["sweep.sampler=tpe", "sweep.pruner=percentile"],
                                         lambda s: optuna.samplers.TPESampler(
                                             n_startup_trials=s.startup_trials, seed=s.seed, multivariate=False),
                                         None),
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
    return {key(t.params): dict(t.intermediate_values)
            for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE}


def key(params: dict) -> tuple:
    return tuple(v for k, v in sorted(params.items()) if k != "seed")


def noise(study: optuna.Study, table: dict) -> dict[int, float]:
    """Per eval step: the standard deviation of the eval loss over training seeds, pooled over the
    configurations rerun (the grid's run is seed 42)."""
    groups: dict[tuple, list[dict]] = {}
    for t in study.trials:
        if t.state == optuna.trial.TrialState.COMPLETE:
            groups.setdefault(key(t.params), [table[key(t.params)]]).append(dict(t.intermediate_values))
    steps = sorted(next(iter(table.values())))
    return {s: statistics.fmean(statistics.stdev(c[s] for c in runs) for runs in groups.values()) for s in steps}


def nearest(value, choices: list, log: bool):
    """The grid point that answers a suggestion: the same choice, or the nearest number, on the
    scale the space searches it (log for the learning rate)."""
    if value in choices or not isinstance(value, (int, float)):
        return value
    scale = math.log if log else float
    return min(choices, key=lambda c: abs(scale(c) - scale(value)))


def replay(space: list[str], overrides: list[str], seed: int, land: "Landscape", budget: int,
           sigma: dict, sampler=None, pruner=None) -> dict:
    """One strategy's run against the grid's curves, searching the sweep's own space with its own
    sampler and pruner: steps (and trials) until a trial finished at or under the target, and
    what its pruner cut."""
    s = sweep_settings(["sweep.enqueue=[]", f"sweep.n_trials={budget}", f"sweep.seed={seed}", *space, *overrides],
                       check_values=False)
    study = optuna.create_study(sampler=sampler(s) if sampler else build_sampler(s),
                                pruner=pruner(s) if pruner else build_pruner(s))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    params = {p.name: p for p in s.space}
    spent, hit_at, hit_trials, cuts = 0, None, None, []
    for n in range(budget):
        trial = study.ask()
        values = suggest(trial, s.space)
        curve = land.table[tuple(nearest(values[name], land.choices[i], params[name].log)
                                 for i, name in enumerate(land.names))]
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
            if hit_at is None and curve[max(curve)] <= land.target:
                hit_at, hit_trials = spent, n + 1
    best_complete = min((t.value for t in study.trials if t.value is not None), default=float("inf"))
    return {"hit_at": hit_at, "hit_trials": hit_trials, "spent": spent, "cuts": len(cuts),
            "cut_best": sum(c["final"] < best_complete for c in cuts),
            "cut_near": sum(c["final"] <= land.target for c in cuts),
            "cut_in_noise": sum(c["gap"] < 2 * c["sigma"] for c in cuts)}


@dataclass
class Landscape:
    table: dict          # values in name order -> {step: eval loss}
    names: list          # the searched parameters, sorted
    choices: list        # per name, the grid's values
    targets: dict        # name -> the config key it sets
    target: float        # within NEAR of the best-to-median gap of the best
    steps: int           # the whole grid's training steps


def landscape(name: str, space: list[str], out: Path) -> Landscape:
    s = sweep_settings(["sweep.sampler=grid", "sweep.n_trials=1", "sweep.enqueue=[]", *space], check_values=False)
    points = grid(s.space)
    names = sorted(points)
    table = curves(run_sweep(name, out, space, math.prod(len(v) for v in points.values())))
    finals = {k: c[max(c)] for k, c in table.items()}
    best, median = min(finals.values()), statistics.median(finals.values())
    target = best + NEAR * (median - best)
    near = sorted((k for k, v in finals.items() if v <= target), key=finals.get)
    gaps = sorted(finals.values())
    print(f"{name}: {len(table)} configurations ({', '.join(names)}); best {best:.4f} at {min(finals, key=finals.get)}, "
          f"median {median:.4f}, worst {max(finals.values()):.4f}; target <= {target:.4f}: {len(near)} of them "
          f"{near}; the best two differ by {gaps[1] - gaps[0]:.4f}", flush=True)
    return Landscape(table, names, [sorted(points[n]) for n in names], {p.name: p.target for p in s.space}, target,
                     sum(max(c) for c in table.values()))


def seed_noise(name: str, space: list[str], g: Landscape, out: Path) -> dict[int, float]:
    """Seeds 1-3 of the landscape's best configuration and of it at another rank (the grid's run is
    seed 42): the eval loss's noise at each step, where the good trials are."""
    best = dict(zip(g.names, min(g.table, key=lambda k: g.table[k][max(g.table[k])])))
    other_r = 8 if best["lora_r"] != 8 else 32
    noise_space = [*space, *categorical("lora_r", [best["lora_r"], other_r], g.targets["lora_r"]),
                   *[o for p in best if p != "lora_r" for o in categorical(p, [best[p]], g.targets[p])],
                   f"+search.seed={{type: categorical, choices: {NOISE_SEEDS}, target: train.seed}}"]
    print(f"{name} noise: seeds {NOISE_SEEDS} of the best ({best}) and of it with r={other_r}...", flush=True)
    sigma = noise(run_sweep(f"noise-{name}", out, noise_space, len(NOISE_SEEDS) * 2), g.table)
    print(f"{name} eval loss noise over training seeds (sd): " + ", ".join(f"step {s}: {v:.4f}" for s, v in sigma.items()))
    return sigma


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "outputs" / "bench-search"))
    ap.add_argument("--seeds", type=int, default=5)
    a = ap.parse_args()
    out = Path(a.out)
    print("real trials of the demo task (tiny model, 40 steps, eval every 10), through the sweep...", flush=True)
    grids = {title: (replay_space, landscape(name, space, out)) for title, (name, space, replay_space) in LANDSCAPES.items()}
    sigmas = {title: seed_noise(name, space, grids[title][1], out) for title, (name, _, space) in LANDSCAPES.items()}

    strategies = {**{name: (overrides, None, None) for name, overrides in STRATEGIES.items()}, **VARIANTS}
    shares = {}
    for title, (space, g) in grids.items():
        print(f"\n### {title}: {a.seeds} seeds, up to {len(g.table)} trials each\n")
        print("| strategy | steps to target / grid steps (median) | trials to target (median) | found | "
              "all steps / grid steps (mean) | pruned | pruned the run's eventual best | pruned a near-best | "
              "pruned within 2 sd of the median |")
        print("|---|---|---|---|---|---|---|---|---|")
        for name, (overrides, sampler, pruner) in strategies.items():
            runs = [replay(space, overrides, seed, g, len(g.table), sigmas[title], sampler, pruner)
                    for seed in range(a.seeds)]
            share = statistics.median((r["hit_at"] if r["hit_at"] is not None else r["spent"]) / g.steps for r in runs)
            trials = statistics.median(r["hit_trials"] or len(g.table) for r in runs)
            shares[(title, name)] = share
            found = sum(r["hit_at"] is not None for r in runs)
            total = lambda k: sum(r[k] for r in runs)  # noqa: E731
            print(f"| {name} | {share:.3f} | {trials:g} | {found}/{a.seeds} | {total('spent') / a.seeds / g.steps:.2f} | "
                  f"{total('cuts')} | {total('cut_best')} | {total('cut_near')} | {total('cut_in_noise')} |", flush=True)
    default = next(iter(LANDSCAPES))
    print(f"\nsearch_share={shares[(default, DEFAULT)]:.3f} random_share={shares[(default, 'random')]:.3f}")


if __name__ == "__main__":
    main()
