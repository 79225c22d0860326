"""trials_per_device=auto: the peak memory of the space's hungriest trial (largest rank, 8-bit
where the space has it, all linear layers where it has them, every batch padded to max_length, one
full eval batch), measured once by training it a few steps in a trial process on the device. On a
GPU the peak is the driver's per-process figure (nvidia-smi/NVML: CUDA context, allocator cache and
bitsandbytes' paged optimizer included, which torch.cuda.max_memory_allocated misses); on the CPU,
the process's peak resident memory. Cached in the study, keyed by what determines it."""
import hashlib
import json
import shutil
import subprocess
import time

from sweeper.launch import TrialProcesses
from sweeper.settings import SweepSettings
from sweeper.slots import Device, slot_env
from sweeper.space import Param, tied_value, to_overrides
from sweeper.watch import ProgressWatch

PROBE_STEPS = 6  # enough for the optimizer state to exist and the allocator to settle; not a benchmark
BITS_ORDER = {8: 2, 4: 1, None: 0}


def _hunger(p: Param, value) -> tuple:
    """Larger is hungrier, for the keys that change memory; other keys keep their first value."""
    if p.target == "quant.bits":
        return (BITS_ORDER.get(value, 0),)
    if p.target == "lora.target_modules":
        return (2 if value == "all-linear" else 1 if value == "attention" else 0,)
    if p.target in ("lora.r", "train.max_length", "train.per_device_train_batch_size",
                    "train.per_device_eval_batch_size"):
        return (value,)
    return (0,)


def hungriest(space: list[Param]) -> dict:
    values = {}
    for p in space:
        if p.type == "categorical":
            values[p.name] = max(p.choices, key=lambda v: _hunger(p, v))  # ties: the first choice
        elif p.type in ("int", "float"):
            kind = int if p.type == "int" else float
            values[p.name] = kind(p.high) if _hunger(p, p.high) > _hunger(p, p.low) else kind(p.low)
    for p in space:
        if p.type == "tied":
            values[p.name] = tied_value(p, values[p.of])
    return values


def probe_overrides(s: SweepSettings, values: dict, out_dir) -> list[str]:
    t = s.trial.train
    return to_overrides(values, s.space) + [
        f"train.max_steps={PROBE_STEPS}", f"train.eval_steps={PROBE_STEPS}", f"train.warmup_steps=0",
        "train.pad_to_multiple_of=${train.max_length}", "train.save_strategy=no",
        f"data.eval_size={t.per_device_eval_batch_size}", "tracking.mode=disabled", f"output_dir={out_dir}"]


def probe_key(s: SweepSettings, device: Device, values: dict) -> str:
    what = {"config": s.fingerprint_hash, "values": values, "device": device.kind, "memory": device.memory_bytes}
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:16]


def gpu_used_bytes(pid: int) -> int:
    """The driver's figure for this process on its GPU (0 before it has a context)."""
    if shutil.which("nvidia-smi") is None:
        return 0
    try:
        out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    used = [int(float(m)) * 2**20 for p, m in (line.split(",") for line in out.strip().splitlines() if "," in line)
            if p.strip() == str(pid)]
    return max(used, default=0)


def run_probe(s: SweepSettings, device: Device, overrides: list[str], out_dir) -> dict:
    """Train the probe config in a trial process on the device; its peaks and outcome."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("result.json", "progress.json"):
        (out_dir / stale).unlink(missing_ok=True)
    job = {"trial_id": None, "trial_dir": str(out_dir), "sweep_overrides": s.public_overrides,
           "trial_overrides": overrides, "values": {}, "memory_share": None}
    (out_dir / "job.json").write_text(json.dumps(job, indent=2))
    proc = TrialProcesses(out_dir / "spare.log", slot_env(device)).take(keep_spare=False)
    proc.stdin.write(json.dumps({"job": str(out_dir / "job.json"), "storage": ""}) + "\n")
    proc.stdin.close()
    watch = ProgressWatch(proc.pid, out_dir / "progress.json", s.stall_timeout, s.trial_timeout)
    gpu_peak = 0
    while proc.poll() is None:
        if device.memory_bytes is not None:
            gpu_peak = max(gpu_peak, gpu_used_bytes(proc.pid))
        if watch.verdict():
            proc.kill()
            proc.wait()
            break
        time.sleep(0.5)
    result_path = out_dir / "result.json"
    if proc.returncode != 0 or not result_path.exists():
        return {"ok": False, "log": str(out_dir / "trial.log")}
    facts = json.loads(result_path.read_text())["facts"]
    peak = gpu_peak if device.memory_bytes is not None else facts["peak_rss_bytes"]
    return {"ok": True, "peak_bytes": peak, **facts}


def measured_peak(s: SweepSettings, study, device: Device, view) -> dict | None:
    """The hungriest trial's peaks on this kind of device ({"peak_bytes": on the device,
    "peak_rss_bytes": host memory}): cached in the study, else measured now. None when even that
    trial alone does not run (then the device runs one trial at a time)."""
    values = hungriest(s.space)
    key = probe_key(s, device, values)
    peaks = study.user_attrs.get("memory_peaks", {})
    if key in peaks:
        return peaks[key]
    view.note(f"measuring the hungriest trial's peak memory on {device.label} ({PROBE_STEPS} steps, once per "
              f"study): {', '.join(f'{k}={v}' for k, v in values.items())}")
    out_dir = s.dir / "probe" / key
    measured = run_probe(s, device, probe_overrides(s, values, out_dir), out_dir)
    if not measured["ok"]:
        view.note(f"the memory probe did not finish (log: {measured['log']}): one trial at a time on {device.label}")
        return None
    measured = {k: v for k, v in measured.items() if k != "ok"}
    study.set_user_attr("memory_peaks", {**peaks, key: measured})
    return measured
