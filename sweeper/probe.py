"""trials_per_device=auto: the peak memory of the space's hungriest trial (largest rank, 8-bit
where the space has it, all linear layers where it has them, every batch, train and eval, padded to
the data's longest row after truncation to max_length), measured once by training it a few steps
in a trial process on the device. On a GPU the peak is the driver's per-process figure
(nvidia-smi/NVML: CUDA context, allocator cache and bitsandbytes' paged optimizer included, which
torch.cuda.max_memory_allocated misses); on the CPU, the process's peak resident memory. Cached in
the study, keyed by what determines it."""
import hashlib
import json
import time
from pathlib import Path

from sweeper.executor import Executor
from sweeper.job import Job, Outcome
from sweeper.settings import SweepSettings
from sweeper.slots import Device, Slot
from sweeper.search.space import Param, tied_value, to_overrides

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
    out = to_overrides(values, s.space) + [
        f"train.max_steps={PROBE_STEPS}", f"train.eval_steps={PROBE_STEPS}", f"train.warmup_steps=0",
        # The trials' own data (data.eval_size kept: it decides which rows are held out), so the
        # longest row is theirs; no generated metric, whose memory is the forward pass's.
        "train.pad_to_multiple_of=longest", "train.save_strategy=no", "data.metric=null",
        "tracking.mode=disabled", f"output_dir={out_dir}"]
    if batch is not None:  # per_device_train_batch_size=auto: measured at this per-device batch
        out += [f"train.per_device_train_batch_size={batch}", "train.gradient_accumulation_steps=1",
                "train.effective_batch_size=null"]
    return out


def probe_key(s: SweepSettings, device: Device, values: dict, batch: int | None) -> str:
    what = {"config": s.fingerprint_hash, "values": values, "device": device.kind, "memory": device.memory_bytes,
            **({"batch": batch} if batch is not None else {})}
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_probes(s: SweepSettings, device: Device, jobs: list[tuple[list[str], Path]], executor: Executor) -> list[dict]:
    """Train each probe config (overrides, out_dir) in its own trial process on the device, side
    by side (slots 0, 1, ...); each one's peaks and outcome. The first takes slot 0's waiting
    process (imports done) and leaves a spare there for the trials."""
    handles = []
    for i, (overrides, out_dir) in enumerate(jobs):
        job = Job(out_dir, s.public_overrides, overrides, {})
        handles.append(executor.submit(job, Slot(device, i), "", keep_spare=i == 0))
    gpu_peaks = [0] * len(handles)
    while any(h.poll() is None for h in handles):  # a stalled probe is stopped by its own poll
        if device.memory_bytes is not None:
            gpu_peaks = [max(p, now) for p, now in zip(gpu_peaks, executor.device_memory(handles))]
        time.sleep(0.5)
    return [_probe_result(h.poll(), out_dir, gpu_peak, device) for h, (_, out_dir), gpu_peak
            in zip(handles, jobs, gpu_peaks)]


def _probe_result(outcome: Outcome, out_dir: Path, gpu_peak: int, device: Device) -> dict:
    if outcome.state != "complete":
        return {"ok": False, "log": str(out_dir / "trial.log")}
    peak = gpu_peak if device.memory_bytes is not None else outcome.facts["peak_rss_bytes"]
    return {"ok": True, "peak_bytes": peak, **outcome.facts}


def measured_peaks(s: SweepSettings, study, device: Device, view, batches: list, executor: Executor) -> dict:
    """The hungriest trial's peaks on this kind of device at each per-device batch ({"peak_bytes":
    on the device, "peak_rss_bytes": host memory}; None for a batch where even that trial alone
    does not run): cached in the study, else measured now, all batches side by side. A batch of
    None keeps the config's own. Sweep processes sharing the study (SLURM tasks, local sweeps)
    measure once between them: the others wait on a lock in the study's folder (shared by every
    node), then read the figure."""
    from filelock import FileLock, Timeout

    values = hungriest(s.space)
    keys = {b: probe_key(s, device, values, b) for b in batches}
    cached = study.user_attrs.get("memory_peaks", {})
    if all(keys[b] in cached for b in batches):
        return {b: cached[keys[b]] for b in batches}
    (s.dir / "probe").mkdir(parents=True, exist_ok=True)
    lock = FileLock(s.dir / "probe" / "measuring.lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        view.note(f"waiting for another sweep process of this study to measure the hungriest trial's memory "
                  f"(lock: {lock.lock_file})")
        lock.acquire()
    try:
        return _measure(s, study, device, view, batches, executor, values, keys)
    finally:
        lock.release()


def _measure(s: SweepSettings, study, device: Device, view, batches: list, executor: Executor, values: dict,
             keys: dict) -> dict:
    cached = study.user_attrs.get("memory_peaks", {})  # read again under the lock: another may have measured
    todo = [b for b in batches if keys[b] not in cached]
    if todo:
        at = "" if todo == [None] else f" at per-device batch {', '.join(map(str, todo))}"
        view.note(f"measuring the hungriest trial's peak memory on {device.label}{at} ({PROBE_STEPS} steps, once per "
                  f"study): {', '.join(f'{k}={v}' for k, v in values.items())}")
        dirs = [s.dir / "probe" / keys[b] for b in todo]
        for b, out_dir, measured in zip(todo, dirs, run_probes(s, device, [
                (probe_overrides(s, values, b, d), d) for b, d in zip(todo, dirs)], executor)):
            if not measured["ok"]:
                view.note(f"the memory probe{'' if b is None else f' at batch {b}'} did not finish (log: {measured['log']})")
                continue
            cached = {**cached, keys[b]: {k: v for k, v in measured.items() if k != "ok"}}
            # On the CPU the peak is the host's own figure: said once, not twice.
            where = ("host memory, peak RSS" if device.memory_bytes is None else
                     f"on the GPU, as the driver sees it; host {measured['peak_rss_bytes'] / 2**30:.2f} GiB")
            view.note(f"measured{'' if b is None else f' at batch {b}'}: {measured['peak_bytes'] / 2**30:.2f} GiB "
                      f"({where})")
        study.set_user_attr("memory_peaks", {**study.user_attrs.get("memory_peaks", {}), **cached})
    return {b: cached.get(keys[b]) for b in batches}


def plan_device(s: SweepSettings, study, device: Device, view, n_devices: int, cores: int, executor: Executor) -> None:
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
        device.slots = fixed or slots_of(measured_peaks(s, study, device, view, [None], executor)[None])
        return
    high = effective
    peaks = measured_peaks(s, study, device, view, sorted({1, high}), executor)
    while peaks[high] is None and peaks[1] is not None and high > 1:
        high = max(d for d in divisors(effective) if d <= high // 2)
        peaks.update(measured_peaks(s, study, device, view, [high], executor))
    if peaks[1] is None:  # not even one row runs: one trial at a time, and its failure will say why
        device.slots, device.batch = fixed or 1, 1
        return
    device.batch, device.slots = choose_batch(effective, (1, peaks[1]), (high, peaks[high]), slots_of, fixed)
