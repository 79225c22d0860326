"""make bench-overhead: what the sweep costs over running the same trials by hand. The same K
trials (same values) run (a) as K processes of bench/hand_run.py, a plain TRL script, one after
the other, and (b) through `make sweep` with those values enqueued, pruning off, one trial at a
time. The two ways are interleaved over R rounds (a then b, b then a, ...), so a machine whose
load changes during the benchmark slows both alike; each round gives its own ratio b/a and the
median is reported. Prints each round's wall times and the machine's load, and the fixed cost per
trial (wall time not spent loading the model or training) split by phase, averaged over rounds.
Last line: overhead_ratio=<median b/a> fixed_cost_s=<median fixed cost of b>.
python bench/overhead.py [--trials 8] [--steps 150] [--rounds 3] [--out outputs/bench-overhead]"""
import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
MODEL, DATA = ROOT / "artifacts" / "tiny-llama", ROOT / "artifacts" / "data" / "synthetic_prices.jsonl"


def trial_values(k: int) -> list[dict]:
    """K distinct trials (the sweep skips an enqueued duplicate and samples instead): r 16/32/8,
    4/8-bit in turn; dropout 0.1 for the first three, then 0.05, 0.15, 0.2; the preset's rate."""
    return [{"lora_r": [16, 32, 8][i % 3], "lora_alpha": 2 * [16, 32, 8][i % 3],
             "lora_dropout": [0.1, 0.05, 0.15, 0.2][i // 3 % 4], "quant_bits": [4, 8][i % 2], "learning_rate": 0.002}
            for i in range(k)]


# The training phases both ways spend the same on; everything else is fixed cost.
WORK = {"model_loaded": "model load", "train_end": "training (evals included)"}
PHASE = {"imported": "process start and imports", "configured": "config", "data_loaded": "data",
         "model_loaded": "model load", "wandb_started": "W&B", "trainer_built": "trainer setup (tokenize, LoRA)",
         "train_begin": "trainer setup (tokenize, LoRA)", "train_end": "training (evals included)",
         "saved": "save", "wandb_finished": "W&B", "exited": "process exit"}


def phases(marks: list, start: float, end: float | None = None) -> dict[str, float]:
    """Seconds per phase: each mark closes the phase named after it."""
    out, last = {}, start
    for name, t in marks + ([("exited", end)] if end else []):
        out[PHASE.get(name, name)] = out.get(PHASE.get(name, name), 0.0) + t - last
        last = t
    return out


def ensure_demo_inputs() -> None:
    from trainers.data import ensure_embedded_data
    from trainers.config import compose_config
    from trainers.settings import trial_settings
    from trainers.tiny_model import ensure_tiny_model

    ensure_tiny_model(str(MODEL))
    ensure_embedded_data(trial_settings(compose_config([])).data)


def hand_runs(values: list[dict], steps: int, out: Path) -> list[dict]:
    runs = []
    for i, v in enumerate(values):
        run_dir = out / "hand" / f"trial-{i}"
        run_dir.mkdir(parents=True)
        start = time.time()
        with open(run_dir / "log.txt", "w") as log:  # W&B offline, as the sweep's trials here
            code = subprocess.run([sys.executable, str(ROOT / "bench" / "hand_run.py"), "--model", str(MODEL),
                                   "--data", str(DATA), "--out", str(run_dir), "--r", str(v["lora_r"]),
                                   "--alpha", str(v["lora_alpha"]), "--dropout", str(v["lora_dropout"]),
                                   "--bits", str(v["quant_bits"]), "--lr", str(v["learning_rate"]),
                                   "--steps", str(steps), "--eval-steps", str(steps // 3),
                                   "--name", f"hand-{i}"], stdout=log, stderr=subprocess.STDOUT,
                                  env={**os.environ, "WANDB_MODE": "offline"}).returncode
        end = time.time()
        if code != 0:
            sys.exit(f"hand-run {i} failed: {run_dir / 'log.txt'}")
        r = json.loads((run_dir / "hand_run.json").read_text())
        runs.append({"wall_s": end - start, "phases": phases(r["marks"], start, end), "eval_loss": r["eval_loss"]})
        print(f"  hand-run {i}: {end - start:.1f} s, eval_loss {r['eval_loss']:.4f}", flush=True)
    return runs


def sweep_run(values: list[dict], steps: int, out: Path) -> tuple[float, list[dict], dict]:
    enqueue = "[" + ", ".join("{" + ", ".join(f"{k}: {v}" for k, v in x.items()) + "}" for x in values) + "]"
    args = [f"sweep.dir={out / 'sweep'}", "sweep.study_name=overhead", f"sweep.n_trials={len(values)}",
            "sweep.pruner=none", "sweep.trials_per_device=1", f"sweep.enqueue={enqueue}", f"train.max_steps={steps}",
            f"train.eval_steps={steps // 3}", "data.metric=null", "tracking.mode=offline"]
    start = time.time()
    with open(out / "sweep.log", "w") as log:
        code = subprocess.run(["make", "--no-print-directory", "sweep", f"ARGS={shlex.join(args)}"], cwd=ROOT,
                              stdout=log, stderr=subprocess.STDOUT).returncode
    end = time.time()
    if code != 0:
        sys.exit(f"the sweep failed: {out / 'sweep.log'}")
    trials = []
    for d in sorted((out / "sweep" / "trials").iterdir(), key=lambda p: int(p.name)):
        m = json.loads((d / "metrics.json").read_text())
        trials.append({"marks": m["phase_marks"], "eval_loss": m["eval_loss"]})
    trials.sort(key=lambda t: t["marks"][0][1])
    # The sweep's own time: before the first trial has its job, between trials, after the last.
    own = {"sweep start (imports, checks, study)": trials[0]["marks"][0][1] - start,
           "between trials (result, tell, ask, hand-off)": sum(b["marks"][0][1] - a["marks"][-1][1]
                                                               for a, b in zip(trials, trials[1:])),
           "sweep end (leaderboard, report, W&B summary run)": end - trials[-1]["marks"][-1][1]}
    for t in trials:
        t["phases"] = phases(t["marks"][1:], t["marks"][0][1])
    return end - start, trials, own


def fixed_cost(wall: float, runs: list[dict]) -> float:
    work = sum(r["phases"].get(p, 0.0) for r in runs for p in WORK.values())
    return (wall - work) / len(runs)


def one_round(values: list[dict], steps: int, out: Path, hand_first: bool) -> dict:
    """Both ways, in the given order; wall times, per-trial phases, the sweep's own time, losses."""
    out.mkdir(parents=True, exist_ok=True)
    load = [os.getloadavg()[0]]
    got = {}
    for way in (("hand", "sweep") if hand_first else ("sweep", "hand")):
        print(f"  {'(a) by hand, one process each' if way == 'hand' else '(b) make sweep, one trial at a time'}:",
              flush=True)
        if way == "hand":
            got["hand"] = hand_runs(values, steps, out)
        else:
            got["sweep_wall"], got["trials"], got["own"] = sweep_run(values, steps, out)
        load.append(os.getloadavg()[0])
    got["hand_wall"] = sum(r["wall_s"] for r in got["hand"])
    got["ratio"] = got["sweep_wall"] / got["hand_wall"]
    got["load"] = load
    same = all(abs(h["eval_loss"] - t["eval_loss"]) < 1e-3 for h, t in zip(got["hand"], got["trials"]))
    print(f"  eval losses by hand {[round(h['eval_loss'], 4) for h in got['hand']]}, in the sweep "
          f"{[round(t['eval_loss'], 4) for t in got['trials']]}: {'the same' if same else 'DIFFERENT'} training")
    if not same:  # a ratio of unlike work means nothing
        sys.exit("the sweep's trials did not train what the hand runs trained: no ratio")
    return got


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=8)  # the default sweep's n_trials
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "outputs" / "bench-overhead"))
    a = ap.parse_args()
    out = Path(a.out)
    shutil.rmtree(out, ignore_errors=True)
    values = trial_values(a.trials)
    ensure_demo_inputs()
    print(f"{a.trials} trials of {a.steps} steps on the demo model, both ways, in {a.rounds} interleaved rounds",
          flush=True)
    rounds = []
    for i in range(a.rounds):
        print(f"round {i + 1} ({'hand runs first' if i % 2 == 0 else 'sweep first'}):", flush=True)
        rounds.append(one_round(values, a.steps, out / f"round-{i + 1}", hand_first=i % 2 == 0))
    n = len(values) * len(rounds)
    names = list(dict.fromkeys([*PHASE.values()]))
    print(f"\n| phase, seconds per trial (mean of {len(rounds)} rounds) | (a) by hand | (b) sweep |\n|---|---|---|")
    for name in names:
        h = sum(r["phases"].get(name, 0.0) for got in rounds for r in got["hand"]) / n
        sw = sum(t["phases"].get(name, 0.0) for got in rounds for t in got["trials"]) / n
        print(f"| {name}{' (work)' if name in WORK.values() else ''} | {h:.2f} | {sw:.2f} |")
    for name in rounds[0]["own"]:
        print(f"| {name} | - | {sum(got['own'][name] for got in rounds) / n:.2f} |")
    hand_fixed = [fixed_cost(got["hand_wall"], got["hand"]) for got in rounds]
    sweep_fixed = [fixed_cost(got["sweep_wall"], got["trials"]) for got in rounds]
    print(f"| **fixed cost per trial** (wall - model load - training), median | {statistics.median(hand_fixed):.2f} | "
          f"{statistics.median(sweep_fixed):.2f} |\n")
    print("| round | order | (a) wall s | (b) wall s | ratio b/a | fixed cost a / b, s | load avg (1 min) before, "
          "between, after |\n|---|---|---|---|---|---|---|")
    for i, (got, hf, sf) in enumerate(zip(rounds, hand_fixed, sweep_fixed)):
        print(f"| {i + 1} | {'a, b' if i % 2 == 0 else 'b, a'} | {got['hand_wall']:.1f} | {got['sweep_wall']:.1f} | "
              f"{got['ratio']:.3f} | {hf:.2f} / {sf:.2f} | {', '.join(f'{x:.2f}' for x in got['load'])} |")
    ratios = [got["ratio"] for got in rounds]
    print(f"\nratios by round {', '.join(f'{r:.3f}' for r in ratios)}: spread {max(ratios) - min(ratios):.3f}")
    print(f"overhead_ratio={statistics.median(ratios):.3f} fixed_cost_s={statistics.median(sweep_fixed):.2f}")


if __name__ == "__main__":
    main()
