"""Reads the sweeps bench/gpu_packing_check.sh ran and writes their comparison: per trial its
device, peak memory as the driver saw it (nvidia-smi samples by pid), training tokens/s; per sweep
K, wall time, summed tokens/s and MFU (6 x params x tokens/s over the card's bf16 peak).
python bench/packing_report.py OUT_DIR MODEL_DIR SWEEP_DIR [SWEEP_DIR ...]"""
import json
import sys
from collections import defaultdict
from pathlib import Path

import optuna

# bf16 dense peak, FLOP/s: H200 as measured on this project's card (STACK.md), H100 SXM from its sheet.
BF16_PEAK = {"H200": 790e12, "H100": 989e12}


def params_of(model_dir: str) -> int:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir))
    return sum(p.numel() for p in model.parameters())


def gpu_peaks(samples: Path) -> dict[int, int]:
    """pid -> max MiB over `nvidia-smi --query-compute-apps=pid,used_memory` samples."""
    peaks = defaultdict(int)
    if samples.exists():
        for line in samples.read_text().splitlines():
            parts = [p.strip() for p in line.split(",")]
            if len(parts) == 2 and parts[0].isdigit() and parts[1].split()[0].isdigit():
                peaks[int(parts[0])] = max(peaks[int(parts[0])], int(parts[1].split()[0]))
    return peaks


def sweep_rows(sweep_dir: Path, peaks: dict, params: int, flops: float | None) -> tuple[dict, list[dict]]:
    study = optuna.load_study(study_name=sweep_dir.name, storage=f"sqlite:///{sweep_dir / 'study.db'}")
    trials = [t for t in study.trials if t.state.is_finished() and t.datetime_complete]
    rows = []
    for t in trials:
        metrics_file = sweep_dir / "trials" / str(t.number) / "metrics.json"
        m = json.loads(metrics_file.read_text()) if metrics_file.exists() else {}
        tps = m["train_tokens"] / m["train_runtime_s"] if m.get("train_runtime_s") else None
        rows.append({"trial": t.number, "state": t.state.name.lower(), "device": t.user_attrs.get("device"),
                     "values": {**t.params, **{k: v for k, v in t.user_attrs.items() if k == "lora_alpha"}},
                     "peak_gpu_mib": peaks.get(t.user_attrs.get("pid")), "tokens": m.get("train_tokens"),
                     "tokens_per_s": round(tps, 1) if tps else None,
                     "fail_reason": t.user_attrs.get("fail_reason")})
    start = min(t.datetime_start for t in trials)
    end = max(t.datetime_complete for t in trials)
    seconds = (end - start).total_seconds()
    tokens = sum(r["tokens"] or 0 for r in rows)
    summed = tokens / seconds if seconds else 0.0
    log = (sweep_dir / "sweep.log").read_text() if (sweep_dir / "sweep.log").exists() else ""
    slots = next((line for line in log.splitlines() if line.startswith("slots:")), "slots: ?")
    slots += "; " + next((line for line in log.splitlines() if line.startswith("per-device batch")),
                         "per-device batch: as configured")
    summary = {"sweep": sweep_dir.name, "slots": slots, "trials": len(rows), "trials_seconds": round(seconds, 1),
               "training_tokens": tokens, "summed_tokens_per_s": round(summed, 1),
               "mfu": round(6 * params * summed / flops, 4) if flops else None,
               "memory_peaks": study.user_attrs.get("memory_peaks")}
    return summary, rows


def main(out: Path, model_dir: str, sweeps: list[str]) -> None:
    card = (out / "card.txt").read_text().strip() if (out / "card.txt").exists() else "cpu"
    flops = next((v for k, v in BF16_PEAK.items() if k in card), None)
    params = params_of(model_dir)
    peaks = gpu_peaks(out / "gpu_samples.txt")
    lines = [f"card: {card}; model: {params / 1e9:.2f} B params; MFU = 6 x params x summed tokens/s / "
             f"{flops / 1e12 if flops else float('nan'):.0f} TFLOP/s", ""]
    results = []
    for sweep in sweeps:
        summary, rows = sweep_rows(Path(sweep), peaks, params, flops)
        results.append({"summary": summary, "trials": rows})
        lines += [f"### {summary['sweep']}: {summary['slots']}",
                  f"{summary['trials']} trials in {summary['trials_seconds']} s (first start to last end), "
                  f"{summary['training_tokens']} training tokens, summed {summary['summed_tokens_per_s']} tokens/s, "
                  f"MFU {summary['mfu']}", *(
                      [f"measured peak of the hungriest trial: {p.get('peak_bytes', 0) / 2**30:.2f} GiB on the device, "
                       f"{p.get('peak_rss_bytes', 0) / 2**30:.2f} GiB host RSS"
                       for p in (summary["memory_peaks"] or {}).values()]), "",
                  "| trial | state | device | values | peak GPU MiB | tokens/s |", "|---|---|---|---|---|---|"]
        lines += [f"| {r['trial']} | {r['state']} | {r['device']} | {r['values']} | {r['peak_gpu_mib']} | "
                  f"{r['tokens_per_s']} |" for r in rows] + [""]
    (out / "packing.md").write_text("\n".join(lines) + "\n")
    (out / "packing.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], sys.argv[3:])
