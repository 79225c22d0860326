"""Where trials run: the devices a sweep uses and K slots on each. GPUs are found with nvidia-smi
(NVML), which creates no CUDA context in the sweep process; without a GPU the device is the CPU,
whose cores the slots split. Each slot's trial processes start with their device already in
CUDA_VISIBLE_DEVICES, and each slot keeps its own warm spare."""
import os
import shutil
import subprocess
from dataclasses import dataclass

from trainers.settings import ConfigError


@dataclass
class Device:
    name: str                   # "cpu", or the GPU id as CUDA_VISIBLE_DEVICES names it
    memory_bytes: int | None    # the GPU's memory (None on the CPU)
    kind: str = "cpu"           # the GPU's model, as the driver names it
    slots: int = 1              # K: trials side by side now; lowered after an out-of-memory failure
    threads: int | None = None  # CPU: torch threads per trial process
    batch: int | None = None    # per-device batch, when the sweep decides it (per_device_train_batch_size=auto)
    effective: int | None = None  # the rows per optimizer step that batch x accumulation keeps

    @property
    def accumulation(self) -> int | None:
        return None if self.batch is None else self.effective // self.batch

    def batch_overrides(self) -> list[str]:
        if self.batch is None:
            return []
        return [f"train.per_device_train_batch_size={self.batch}", f"train.gradient_accumulation_steps={self.accumulation}"]

    @property
    def label(self) -> str:
        return "cpu" if self.name == "cpu" else f"gpu{self.name}"


@dataclass
class Slot:
    device: Device
    index: int

    @property
    def label(self) -> str:
        return f"{self.device.label}.{self.index}" if self.device.slots > 1 or self.index else self.device.label


def visible_gpus() -> list[tuple[str, int, str]]:
    """(id, memory in bytes, model) of each GPU this process may use, asked of the driver (no CUDA context)."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index,memory.total,name", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = [(i.strip(), int(float(m)) * 2**20, n.strip())
            for i, m, n in (line.split(",", 2) for line in out.strip().splitlines())]
    allowed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if allowed is not None:  # the sweep itself was limited to some GPUs: honour it
        wanted = [d.strip() for d in allowed.split(",") if d.strip()]
        gpus = [g for g in gpus if g[0] in wanted]
    return gpus


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


def find_devices(setting) -> list[Device]:
    """sweep.devices: auto (every visible GPU, else the CPU), cpu, or a list of GPU ids."""
    gpus = {} if setting == "cpu" else {i: (m, n) for i, m, n in visible_gpus()}
    if setting == "cpu" or (setting == "auto" and not gpus):
        return [Device("cpu", None)]
    ids = list(gpus) if setting == "auto" else [str(d) for d in setting]
    missing = [i for i in ids if i not in gpus]
    if missing:  # its trials would find no GPU there and train on the CPU under a GPU's name
        listed = ", ".join(gpus) if gpus else "none"
        raise ConfigError("sweep.devices", setting, f"no GPU {', '.join(missing)} on this machine (the driver lists: "
                          f"{listed}); allowed: auto, cpu, or ids the driver lists")
    return [Device(i, *gpus[i]) for i in ids]


def parse_devices(value):
    if value in ("auto", "cpu"):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if isinstance(value, list) and value and all(isinstance(v, int) and v >= 0 for v in value) \
            and len(set(value)) == len(value):
        return value
    raise ConfigError("sweep.devices", value, "auto, cpu, or a list of distinct GPU ids, e.g. [0, 1]")


def parse_trials_per_device(value):
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return value
    raise ConfigError("sweep.trials_per_device", value, "a whole number >= 1, or auto")


def slot_env(device: Device) -> dict:
    """The environment of a slot's trial processes: its GPU, or its share of the CPU's cores."""
    if device.name == "cpu":
        # torch reads these at import, which a spare does before it has a trial.
        threads = str(device.threads or cpu_cores())
        return {"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    return {"CUDA_VISIBLE_DEVICES": device.name}


def cpu_cores() -> int:
    """The cores this process may use: its affinity mask and, inside a SLURM job, the job's
    --cpus-per-task (SLURM_CPUS_PER_TASK). A cluster that does not bind tasks to cores
    (TaskPlugin=task/none) leaves the mask at the whole node: two one-core workers on a node would
    each train with every core, and the oversubscribed threads ran their trials 6x slower."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    granted = os.environ.get("SLURM_CPUS_PER_TASK", "")
    return max(1, min(cores, int(granted))) if granted.isdigit() and int(granted) > 0 else cores


def cpu_threads(slots: int) -> int:
    return max(1, cpu_cores() // slots)
