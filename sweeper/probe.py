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

from sweeper.launch import TrialProcesses, hand_off
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


def probe_overrides(s: SweepSettings, values: dict, batch: int | None, out_dir) -> list[str]:
    t = s.trial.train
    out = to_overrides(values, s.space) + [
        f"train.max_steps={PROBE_STEPS}", f"train.eval_steps={PROBE_STEPS}", f"train.warmup_steps=0",
        "train.pad_to_multiple_of=${train.max_length}", "train.save_strategy=no",
        f"data.eval_size={t.per_device_eval_batch_size}", "tracking.mode=disabled", f"output_dir={out_dir}"]
    if batch is not None:  # per_device_train_batch_size=auto: measured at this per-device batch
        out += [f"train.per_device_train_batch_size={batch}", "train.gradient_accumulation_steps=1",
                "train.effective_batch_size=null"]
    return out


def probe_key(s: SweepSettings, device: Device, values: dict, batch: int | None) -> str:
    what = {"config": s.fingerprint_hash, "values": values, "device": device.kind, "memory": device.memory_bytes,
            **({"batch": batch} if batch is not None else {})}
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:16]


def gpu_used_bytes() -> dict[int, int]:
    """The driver's figure for each process with a context on a GPU, by pid."""
    if shutil.which("nvidia-smi") is None:
        return {}
    try:
        out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    used = {}
    for pid, mib in (line.split(",") for line in out.strip().splitlines() if "," in line):
        used[int(pid)] = max(used.get(int(pid), 0), int(float(mib)) * 2**20)
    return used


def run_probes(s: SweepSettings, device: Device, jobs: list[tuple[list[str], object]],
               waiting: TrialProcesses | None = None) -> list[dict]:
    """Train each probe config (overrides, out_dir) in its own trial process on the device, side
    by side; each one's peaks and outcome. The first takes `waiting`'s process (imports done),
    which starts another for the trials."""
    procs = []
    for i, (overrides, out_dir) in enumerate(jobs):
        job = {"trial_id": None, "trial_dir": str(out_dir), "sweep_overrides": s.public_overrides,
               "trial_overrides": overrides, "values": {}, "memory_share": None}
        processes = waiting if i == 0 and waiting is not None else TrialProcesses(out_dir / "spare.log", slot_env(device))
        proc = hand_off(processes, processes is waiting, job, "")
        procs.append((proc, ProgressWatch(proc.pid, out_dir / "progress.json", s.stall_timeout, s.trial_timeout)))
    gpu_peaks = [0] * len(procs)
    while any(proc.poll() is None for proc, _ in procs):
        used = gpu_used_bytes() if device.memory_bytes is not None else {}
        for i, (proc, watch) in enumerate(procs):
            gpu_peaks[i] = max(gpu_peaks[i], used.get(proc.pid, 0))
            if proc.poll() is None and watch.verdict():
                proc.kill()
                proc.wait()
        time.sleep(0.5)
    return [_probe_result(proc, out_dir, gpu_peak, device) for (proc, _), (_, out_dir), gpu_peak
            in zip(procs, jobs, gpu_peaks)]


def _probe_result(proc, out_dir, gpu_peak: int, device: Device) -> dict:
    result_path = out_dir / "result.json"
    if proc.returncode != 0 or not result_path.exists():
        return {"ok": False, "log": str(out_dir / "trial.log")}
    facts = json.loads(result_path.read_text())["facts"]
    peak = gpu_peak if device.memory_bytes is not None else facts["peak_rss_bytes"]
    return {"ok": True, "peak_bytes": peak, **facts}


def measured_peaks(s: SweepSettings, study, device: Device, view, batches: list,
                   waiting: TrialProcesses | None = None) -> dict:
    """The hungriest trial's peaks on this kind of device at each per-device batch ({"peak_bytes":
    on the device, "peak_rss_bytes": host memory}; None for a batch where even that trial alone
    does not run): cached in the study, else measured now, all batches side by side. A batch of
    None keeps the config's own."""
    values = hungriest(s.space)
    cached = study.user_attrs.get("memory_peaks", {})
    keys = {b: probe_key(s, device, values, b) for b in batches}
    todo = [b for b in batches if keys[b] not in cached]
    if todo:
        at = "" if todo == [None] else f" at per-device batch {', '.join(map(str, todo))}"
        view.note(f"measuring the hungriest trial's peak memory on {device.label}{at} ({PROBE_STEPS} steps, once per "
                  f"study): {', '.join(f'{k}={v}' for k, v in values.items())}")
        dirs = [s.dir / "probe" / keys[b] for b in todo]
        for b, out_dir, measured in zip(todo, dirs, run_probes(s, device, [
                (probe_overrides(s, values, b, d), d) for b, d in zip(todo, dirs)], waiting)):
            if not measured["ok"]:
                view.note(f"the memory probe{'' if b is None else f' at batch {b}'} did not finish (log: {measured['log']})")
                continue
            cached = {**cached, keys[b]: {k: v for k, v in measured.items() if k != "ok"}}
        study.set_user_attr("memory_peaks", cached)
    return {b: cached.get(keys[b]) for b in batches}


def plan_device(s: SweepSettings, study, device: Device, view, n_devices: int, cores: int,
                waiting: TrialProcesses | None = None) -> None:
    """Set the device's K (trials_per_device=auto) and per-device batch (per_device_train_batch_size
    =auto) from measured peaks; K no more than the study's trials per device, as a slot beyond them
    would only hold a spare. The batch is measured at 1 and at the whole effective batch side by
    side; if the whole batch does not run, at halves of it until one does."""
    from sweeper.packing import choose_batch, divisors, slots_for

    most = -(-s.n_trials // n_devices)

    def slots_of(peaks):
        return min(slots_for(device.memory_bytes, peaks, cores, n_devices), most)

    fixed = None if s.trials_per_device == "auto" else s.trials_per_device
    effective = s.trial.train.effective_batch_size
    if s.trial.train.per_device_train_batch_size != "auto":
        device.slots = fixed or slots_of(measured_peaks(s, study, device, view, [None], waiting)[None])
        return
    high = effective
    peaks = measured_peaks(s, study, device, view, sorted({1, high}), waiting)
    while peaks[high] is None and peaks[1] is not None and high > 1:
        high = max(d for d in divisors(effective) if d <= high // 2)
        peaks.update(measured_peaks(s, study, device, view, [high]))
    if peaks[1] is None:  # not even one row runs: one trial at a time, and its failure will say why
        device.slots, device.batch = fixed or 1, 1
        return
    device.batch, device.slots = choose_batch(effective, (1, peaks[1]), (high, peaks[high]), slots_of, fixed)
