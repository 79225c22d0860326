"""make gpu-check: the one GPU check. Builds an 8B-shaped random-init Llama locally (no download),
runs one trial of it by hand (bench/hand_run.py, a plain TRL script) and then a short real sweep
of the same model (4-bit and 8-bit trials, pruning on, per-device batch and trials per GPU left to
`auto`), samples the driver's memory figure per process meanwhile, and writes
bench/gpu/<card>-<date>.json and .md: per trial tokens/s (steps after the first 10), MFU (6 x params
x tokens/s over the card's bf16 peak), peak memory and fixed cost; summed for the sweep; the same
for the hand-run trial. Then the same four configurations under sweep.pruner=asha with K fixed:
which legs paused, which continued from whose checkpoint, the steps each trained, and the most
processes holding GPU memory at once (paused trials must hold none).
`--cpu` runs the same path with a tiny shape, so the one GPU run works.
On the device tool (its image lacks bitsandbytes, trl, datasets, optuna, hydra, wandb, and the
trial processes' grpcio: carry .devsite.tgz from ../shared/device/make-devsite grpcio greenlet
filelock, and artifacts/; neither sweep needs the report's matplotlib, scikit-learn or scipy):
  bash bench/gpu_device_run.sh (it sets up the site and runs this script)"""
import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.overhead import DATA, PHASE, phases  # noqa: E402
from bench.packing_report import BF16_PEAK, params_of  # noqa: E402

TRIALS = [{"lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.1, "quant_bits": 4, "learning_rate": 0.0001},
          {"lora_r": 32, "lora_alpha": 64, "lora_dropout": 0.1, "quant_bits": 8, "learning_rate": 0.0001},
          {"lora_r": 32, "lora_alpha": 64, "lora_dropout": 0.1, "quant_bits": 4, "learning_rate": 0.0001},
          {"lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.1, "quant_bits": 8, "learning_rate": 0.0001}]

# The four configurations as one sweep.enqueue override, for both sweeps.
ENQUEUE = "[" + ", ".join("{" + ", ".join(f"{k}: {v}" for k, v in t.items()) + "}" for t in TRIALS) + "]"


class MemorySampler(threading.Thread):
    """nvidia-smi's per-process memory (what the driver sees: context and caches included), every second."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peaks: dict[int, int] = {}
        self.series: list[tuple[float, dict[int, int]]] = []  # (time, {pid: bytes}) each second
        self.stop = threading.Event()

    def run(self):
        from sweeper.slots import gpu_used_bytes

        while not self.stop.wait(1.0):
            used = gpu_used_bytes()
            self.series.append((time.time(), used))
            for pid, b in used.items():
                self.peaks[pid] = max(self.peaks.get(pid, 0), b)

    def most_training_at_once(self, since: float, floor: int = 2**30) -> int:
        """The most processes at once holding more than floor (a spare's bare context is ~0.6 GiB)."""
        return max((sum(b > floor for b in used.values()) for t, used in self.series if t >= since), default=0)


def card() -> str:
    if shutil.which("nvidia-smi") is None:
        return "cpu"
    out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True)
    return (out.stdout.strip().splitlines() or ["unknown GPU"])[0]


def trial_row(name: str, marks: list, wall_s: float | None, tokens: int, warm_tps: float | None, peak: int | None,
              params: int, flops: float | None, start: float) -> dict:
    p = phases(marks, start, start + wall_s if wall_s else None)
    work = p.get(PHASE["model_loaded"], 0.0) + p.get(PHASE["train_end"], 0.0)
    total = (wall_s if wall_s else marks[-1][1] - start)
    return {"trial": name, "tokens": tokens, "warm_tokens_per_s": round(warm_tps, 1) if warm_tps else None,
            "mfu": round(6 * params * warm_tps / flops, 4) if flops and warm_tps else None,
            "peak_gpu_gib": round(peak / 2**30, 2) if peak else None, "fixed_cost_s": round(total - work, 2),
            "model_load_s": round(p.get(PHASE["model_loaded"], 0.0), 2),
            "train_s": round(p.get(PHASE["train_end"], 0.0), 2), "wall_s": round(total, 2)}


def hand_run(model: Path, out: Path, a, sampler, params, flops) -> dict:
    run_dir = out / "hand"
    run_dir.mkdir(parents=True)
    start = time.time()
    proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / "hand_run.py"), "--model", str(model), "--data", str(DATA),
                             "--out", str(run_dir), "--r", "16", "--alpha", "32", "--bits", "4", "--steps", str(a.steps),
                             "--eval-steps", str(a.steps // 2), "--lr", "1e-4", "--warmup", "20", "--max-grad-norm", "0.3",
                             "--batch", str(a.batch), "--max-length", "256",
                             "--eval-batch", "8", "--eval-size", "16", "--optim", a.optim,
                             *(["--gradient-checkpointing"] if not a.cpu else [])],
                            stdout=open(out / "hand.log", "w"), stderr=subprocess.STDOUT)
    proc.wait()
    wall = time.time() - start
    if proc.returncode != 0:
        sys.exit(f"the hand-run trial failed: {out / 'hand.log'}")
    r = json.loads((run_dir / "hand_run.json").read_text())
    return trial_row("hand-run 4-bit r=16", r["marks"], wall, r["train_tokens"], r["warm_tokens_per_s"],
                     sampler.peaks.get(proc.pid), params, flops, start)


def sweep(model: Path, out: Path, a, sampler, params, flops) -> tuple[dict, list[dict]]:
    args = [f"model.name_or_path={model}", "model.build=null", "train=gpu", f"train.max_steps={a.steps}",
            f"train.eval_steps={a.steps // 2}", "train.logging_steps=10", "data.eval_size=16", "train.max_length=256",
            "train.per_device_eval_batch_size=8", "train.per_device_train_batch_size=auto",
            f"train.effective_batch_size={a.batch}", f"train.optim={a.optim}", "data.metric=null",
            f"sweep.n_trials={a.n_trials}", f"sweep.enqueue={ENQUEUE}", "sweep.pruner=median",
            "sweep.trials_per_device=auto", "sweep.checkpoints=false", "sweep.final_report=false",
            "sweep.recheck_seeds=0", "sweep.study_name=gpu-check",
            f"sweep.dir={out / 'sweep'}", "tracking.mode=offline",
            *(["train.gradient_checkpointing=false"] if a.cpu else [])]
    start = time.time()
    with open(out / "sweep.log", "w") as log:
        code = subprocess.run([sys.executable, "-m", "sweeper", *args], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT).returncode
    wall = time.time() - start
    if code != 0:
        sys.exit(f"the sweep failed: {out / 'sweep.log'}")
    import optuna

    study = optuna.load_study(study_name="gpu-check", storage=f"sqlite:///{out / 'sweep' / 'study.db'}")
    rows, spans, tokens = [], [], 0
    for t in study.trials:
        m_path = out / "sweep" / "trials" / str(t.number) / "metrics.json"
        a_ = t.user_attrs
        marks = json.loads(m_path.read_text())["phase_marks"] if m_path.exists() else None
        if marks:
            rows.append({**trial_row(f"trial {t.number} {t.params.get('quant_bits')}-bit r={t.params.get('lora_r')}",
                                     marks[1:], None, a_.get("train_tokens", 0), a_.get("warm_tokens_per_s"),
                                     sampler.peaks.get(a_.get("pid")), params, flops, marks[0][1]),
                         "state": t.state.name.lower(), "device": a_.get("device")})
            named = dict(marks)
            spans.append((named.get("train_begin"), named.get("train_end")))
        else:  # pruned or failed: no metrics.json, but the trial's cost is on it
            warm = a_.get("warm_tokens_per_s")
            peak = sampler.peaks.get(a_.get("pid"))
            rows.append({"trial": f"trial {t.number} {t.params.get('quant_bits')}-bit r={t.params.get('lora_r')}",
                         "state": t.state.name.lower(), "device": a_.get("device"), "tokens": a_.get("train_tokens", 0),
                         "warm_tokens_per_s": warm, "mfu": round(6 * params * warm / flops, 4) if flops and warm else None,
                         "peak_gpu_gib": round(peak / 2**30, 2) if peak else None, "train_s": a_.get("train_s"),
                         "wall_s": a_.get("wall_s"), "fail_reason": a_.get("fail_reason")})
        tokens += a_.get("train_tokens", 0) or 0
    spans = [s for s in spans if s[0] and s[1]]
    training = max(e for _, e in spans) - min(b for b, _ in spans) if spans else 0.0
    lines = (out / "sweep.log").read_text().splitlines()
    said = [line for line in lines if line.startswith(("slots:", "per-device batch", "target "))]
    summed = tokens / training if training else 0.0
    peaks = study.user_attrs.get("memory_peaks")
    return {"wall_s": round(wall, 1), "training_span_s": round(training, 1), "tokens": tokens,
            "summed_tokens_per_s": round(summed, 1), "summed_mfu": round(6 * params * summed / flops, 4) if flops else None,
            "decided": said, "memory_peaks": peaks, "k_memory_allows": k_memory_allows(peaks),
            "probe_padded_to": probe_padding(out / "sweep" / "probe")}, rows


def k_memory_allows(peaks: dict | None) -> int | None:
    """K the device's and host's memory allow at the effective batch, before the cap of the
    study's own trial count (sweep.n_trials per device)."""
    from sweeper.packing import slots_for
    from sweeper.slots import visible_gpus

    gpus = visible_gpus()
    if not peaks or not gpus:
        return None
    hungriest = max(peaks.values(), key=lambda p: p["peak_bytes"])  # measured at the effective batch
    return slots_for(gpus[0][1], hungriest, os.cpu_count() or 1, 1)


def probe_padding(probe_dir: Path) -> list[int]:
    """The lengths the memory probes padded every batch to (train.pad_to_multiple_of=longest)."""
    import re

    found = (re.search(r"every batch padded to (\d+) tokens", f.read_text()) for f in probe_dir.glob("*/trial.log"))
    return sorted(int(m.group(1)) for m in found if m)


def asha_sweep(model: Path, out: Path, a, sampler) -> dict:
    """sweep.pruner=asha on the same model: the four configurations side by side to the first rung,
    the top half continued from their checkpoints. Paused trials must hold no GPU memory, so no more
    than K processes train at once although six trial legs run; each leg trains only its new steps."""
    steps, k = (20, 4) if not a.cpu else (8, 2)
    args = [f"model.name_or_path={model}", "model.build=null", "train=gpu", f"train.max_steps={steps}",
            f"train.eval_steps={steps // 2}", "train.logging_steps=5", "data.eval_size=16", "train.max_length=256",
            "train.per_device_eval_batch_size=8", f"train.per_device_train_batch_size={a.batch // 2}",
            "train.gradient_accumulation_steps=2", f"train.optim={a.optim}", "data.metric=null",
            f"sweep.n_trials={len(TRIALS)}", f"sweep.enqueue={ENQUEUE}", "sweep.pruner=asha", "sweep.asha_eta=2",
            f"sweep.trials_per_device={k}", "sweep.recheck_seeds=0", "sweep.final_report=false",
            "sweep.study_name=gpu-asha", f"sweep.dir={out / 'asha'}", "tracking.mode=offline",
            *(["train.gradient_checkpointing=false"] if a.cpu else [])]
    start = time.time()
    with open(out / "asha.log", "w") as log:
        code = subprocess.run([sys.executable, "-m", "sweeper", *args], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT).returncode
    wall = time.time() - start
    import optuna

    study = optuna.load_study(study_name="gpu-asha", storage=f"sqlite:///{out / 'asha' / 'study.db'}")
    legs = []
    for t in study.trials:
        u = t.user_attrs
        legs.append({"trial": t.number, "state": t.state.name.lower(), "bits": t.params.get("quant_bits"),
                     "r": t.params.get("lora_r"), "device": u.get("device"), "paused_at": u.get("paused_at"),
                     "continued_from": u.get("continued_from"), "resumed_from_step": u.get("resumed_from_step"),
                     "evals": {int(step): round(v, 4) for step, v in t.intermediate_values.items()},
                     "peak_gpu_gib": round(sampler.peaks[u["pid"]] / 2**30, 2) if sampler.peaks.get(u.get("pid")) else None,
                     "wall_s": u.get("wall_s"), "fail_reason": u.get("fail_reason")})
    trained = sum(max(x["evals"], default=0) - (x["resumed_from_step"] or 0) for x in legs)
    return {"exit": code, "wall_s": round(wall, 1), "k": k, "max_steps": steps, "legs": legs,
            "steps_trained": trained, "steps_without_pausing": len(TRIALS) * steps,
            "most_training_at_once": sampler.most_training_at_once(start)}


def markdown(result: dict) -> str:
    cols = ["trial", "state", "device", "warm_tokens_per_s", "mfu", "peak_gpu_gib", "fixed_cost_s", "model_load_s",
            "train_s", "wall_s"]
    lines = [f"# GPU check: {result['card']}, {result['date']}", "",
             f"{result['model_params'] / 1e9:.2f} B params ({result['shape']}); {result['steps']} steps per trial, "
             f"tokens/s after step 10; MFU = 6 x params x tokens/s / {result['bf16_peak_tflops']} TFLOP/s; "
             f"whole check {result['check_s']} s", "", *(f"- {line}" for line in result["sweep"]["decided"]), "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in [result.get("hand_run") or {"trial": "hand-run (not run)"}, *result["sweep_trials"]]:
        lines.append("| " + " | ".join(str(r.get(c, "")) for c in cols) + " |")
    s = result["sweep"]
    lines += ["", f"sweep: {s['wall_s']} s wall, {s['tokens']} training tokens over {s['training_span_s']} s of training, "
                  f"summed {s['summed_tokens_per_s']} tokens/s, summed MFU {s['summed_mfu']}"]
    if s.get("memory_peaks"):
        measured = ", ".join(f"{p['peak_bytes'] / 2**30:.1f} GiB" for p in s["memory_peaks"].values())
        lines += ["", f"memory probe: every batch padded to {s.get('probe_padded_to') or 'max_length'} tokens; "
                      f"peaks measured {measured}; K the memory allows at batch {result.get('batch')}: "
                      f"{s.get('k_memory_allows')} (before the cap of sweep.n_trials)"]
    h = result.get("asha")
    if h:
        lines += ["", f"## sweep.pruner=asha (eta 2, rungs {h['max_steps'] // 2} and {h['max_steps']}, K={h['k']}, "
                      f"exit {h['exit']}, {h['wall_s']} s)", "",
                  "| trial | state | bits | r | paused_at | continued_from | resumed_from_step | evals | peak_gpu_gib |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for x in h["legs"]:
            lines.append("| " + " | ".join(str(x[c]) for c in ("trial", "state", "bits", "r", "paused_at", "continued_from",
                                                                 "resumed_from_step", "evals", "peak_gpu_gib")) + " |")
        lines += ["", f"steps trained {h['steps_trained']} (every configuration to the end: {h['steps_without_pausing']}); "
                      f"most processes holding over 1 GiB at once: {h['most_training_at_once']} (K={h['k']})"]
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cpu", action="store_true", help="a tiny shape on the CPU: a dry run of the whole check")
    ap.add_argument("--out", default="/tmp/gpu-check")
    ap.add_argument("--results", default=str(ROOT / "bench" / "gpu"))
    ap.add_argument("--parts", default="hand,sweep,asha", help="which of hand, sweep, asha to run (comma-separated)")
    ap.add_argument("--n-trials", type=int, default=len(TRIALS), help="the sweep's trials: the four enqueued, then sampled")
    ap.add_argument("--tag", default="", help="appended to the results' file name: a partial check beside a full one")
    a = ap.parse_args()
    parts = set(a.parts.split(","))
    a.steps, a.batch, a.optim = (20, 4, "adamw_torch") if a.cpu else (50, 16, "paged_adamw_32bit")
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    check_start = time.time()
    out = Path(a.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    from bench.overhead import ensure_demo_inputs

    ensure_demo_inputs()
    model = out / "random-llama"
    subprocess.run([sys.executable, str(ROOT / "bench" / "random_model.py"), str(model), "--tokenizer",
                    str(ROOT / "artifacts" / "tiny-llama"), *(["--small"] if a.cpu else [])], check=True)
    name = card()
    flops = next((v for k, v in BF16_PEAK.items() if k in name), None)
    params = params_of(model)
    sampler = MemorySampler()
    sampler.start()
    print(f"{name}: {params / 1e9:.2f} B params; parts: {sorted(parts)}", flush=True)
    hand = hand_run(model, out, a, sampler, params, flops) if "hand" in parts else None
    print(f"hand-run: {hand}\nsweep...", flush=True)
    summary, trials = sweep(model, out, a, sampler, params, flops)
    date = datetime.date.today().isoformat()
    result = {"card": name, "date": date, "model_params": params, "shape": "2 layers, 256 wide" if a.cpu else
              "Llama-3.1-8B", "steps": a.steps, "batch": a.batch, "bf16_peak_tflops": flops / 1e12 if flops else None,
              "hand_run": hand, "sweep": summary, "sweep_trials": trials, "check_s": round(time.time() - check_start, 1)}
    results = Path(a.results)
    results.mkdir(parents=True, exist_ok=True)
    stem = results / f"{name.replace(' ', '-')}-{date}{a.tag}"
    save(result, stem)  # written before the asha sweep too: a time limit there keeps what was measured
    if "asha" in parts:
        print("asha sweep...", flush=True)
        result["asha"] = asha_sweep(model, out, a, sampler)
    sampler.stop.set()
    result["check_s"] = round(time.time() - check_start, 1)
    save(result, stem)
    print(markdown(result))
    print(f"written: {stem}.json and .md")


def save(result: dict, stem: Path) -> None:
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    stem.with_suffix(".md").write_text(markdown(result))


if __name__ == "__main__":
    main()
