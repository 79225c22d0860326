"""How many trials fit on a device and at which per-device batch: the arithmetic of packing and of
train.per_device_train_batch_size=auto, on peaks shaped like the ones measured on an H200
(docs/gpu.md, STACK.md). The measuring itself runs for real in test_slots.py and test_sweep.py."""
import pytest

from sweeper.packing import GIB, SPARE, choose_batch, divisors, fits, gpu_fraction, peaks_at, slots_for
from sweeper.probe import hungriest
from sweeper.search.space import Param

H200 = 141 * GIB
HOST = 10**15  # host memory is not what binds in these cases


def peaks(device_gib: float, host_gib: float = 4.0) -> dict:
    return {"peak_bytes": int(device_gib * GIB), "peak_rss_bytes": int(host_gib * GIB)}


def on_h200(p: dict) -> int:
    return max(1, min(fits(H200, p["peak_bytes"]), fits(HOST, p["peak_rss_bytes"])))


def test_fits_counts_the_margin_and_a_spare_per_trial():
    per_trial = int(10 * GIB * 1.15) + SPARE
    assert fits(3 * per_trial, 10 * GIB) == 3
    assert fits(3 * per_trial - 1, 10 * GIB) == 2
    assert fits(GIB, 10 * GIB) == 1  # never 0: one trial always gets its chance (and its own OOM)


def test_slots_for_caps_by_cores_on_the_cpu_and_by_memory_on_a_gpu():
    assert slots_for(None, peaks(0, 1), cores=2, devices=1) == 2
    assert slots_for(None, None, cores=2, devices=1) == 1  # nothing measured: one at a time
    assert slots_for(H200, peaks(10, 0.001), cores=2, devices=1) == fits(H200, 10 * GIB) == 11


def test_gpu_fraction_leaves_room_for_contexts_and_spares():
    share = gpu_fraction(H200, 4)
    assert 0 < share < 0.25 and share * H200 == pytest.approx(H200 / 4 - 1.1 * GIB, rel=1e-3)


def test_peaks_follow_the_line_through_two_measured_batches():
    low, high = (1, peaks(6.0, 3.0)), (16, peaks(13.5, 4.5))
    assert peaks_at(1, low, high) == peaks(6.0, 3.0) and peaks_at(16, low, high) == peaks(13.5, 4.5)
    assert peaks_at(8, low, high)["peak_bytes"] == pytest.approx(9.5 * GIB, abs=1)
    assert peaks_at(4, (4, peaks(7)), (4, peaks(7))) == peaks(7)  # effective batch 1 or 4 measured once


def test_auto_batch_keeps_the_effective_batch_and_the_most_rows_in_flight():
    assert divisors(16) == [1, 2, 4, 8, 16] and divisors(12) == [1, 2, 3, 4, 6, 12]
    # 8B 4-bit, batch 1 at 6 GiB and batch 16 at 13.5 GiB: K x batch grows with the batch.
    low, high = (1, peaks(6.0)), (16, peaks(13.5))
    batch, k = choose_batch(16, low, high, on_h200)
    assert (batch, k) == (16, on_h200(peaks(13.5)))
    assert 16 % batch == 0 and k * batch > on_h200(peaks(6.0)) * 1
    # Activations that dwarf the weights (long sequences): the whole batch fits once per card, a
    # batch of 1 twenty-seven times; with the study's 20 trials as the cap, 10 x 2 rows beat 1 x 16
    # and tie with 20 x 1, where the bigger batch wins.
    low, high = (1, peaks(4.0)), (16, peaks(120.0))
    assert on_h200(peaks_at(16, low, high)) == 1 and on_h200(peaks_at(1, low, high)) == 27

    def capped(p):
        return min(on_h200(p), 20)

    rows = {b: b * capped(peaks_at(b, low, high)) for b in divisors(16)}
    assert rows == {1: 20, 2: 20, 4: 16, 8: 16, 16: 16}
    assert choose_batch(16, low, high, capped) == (2, 10)


def test_auto_batch_on_the_peaks_an_h200_measured():
    """bench/gpu/NVIDIA-H200-2026-12-04.json: the probe of an 8B 8-bit r=32 trial, rows padded to
    256, measured 14.59 GB at batch 1 and 37.17 GB at batch 16 on a card of 143,771 MiB; the sweep
    chose 16 x 1 and K=3 (48 rows in flight; batch 8 would fit 5 times, 40 rows)."""
    card = 143771 * 2**20
    low = (1, {"peak_bytes": 14585692160, "peak_rss_bytes": 17299177472})
    high = (16, {"peak_bytes": 37174116352, "peak_rss_bytes": 17298509824})

    def on_card(p):
        return max(1, min(fits(card, p["peak_bytes"]), fits(HOST, p["peak_rss_bytes"])))

    assert on_card(peaks_at(8, low, high)) == 5
    assert choose_batch(16, low, high, on_card) == (16, 3)

    # The same trial probed with rows padded to the data's longest row (79 tokens; the -longest-row
    # check): 20.01 GB at batch 16, the real trials' own peak, and K=6 by memory.
    high = (16, {"peak_bytes": 20013121536, "peak_rss_bytes": 17298329600})
    low = (1, {"peak_bytes": 14646509568, "peak_rss_bytes": 17296871424})
    assert choose_batch(16, low, high, on_card) == (16, 6)


def test_auto_batch_with_k_fixed_takes_the_largest_batch_that_fits_k_times():
    low, high = (1, peaks(4.0)), (16, peaks(120.0))
    assert choose_batch(16, low, high, on_h200, fixed_slots=1) == (16, 1)
    batch, k = choose_batch(16, low, high, on_h200, fixed_slots=4)
    assert k == 4 and on_h200(peaks_at(batch, low, high)) >= 4 > on_h200(peaks_at(2 * batch, low, high))
    assert choose_batch(16, low, high, on_h200, fixed_slots=40) == (1, 40)  # nothing fits: the smallest, and OOM decides


def test_auto_batch_never_goes_above_the_largest_batch_that_ran():
    # The whole effective batch did not run; 4 did: 8 and 16 are never chosen, whatever the line says.
    batch, _ = choose_batch(16, (1, peaks(1.0)), (4, peaks(1.5)), on_h200)
    assert batch == 4


def test_the_probe_measures_the_hungriest_values():
    space = [Param(name="r", type="categorical", target="lora.r", choices=[8, 32, 16]),
             Param(name="bits", type="categorical", target="quant.bits", choices=[4, 8]),
             Param(name="modules", type="categorical", target="lora.target_modules", choices=["attention", "all-linear"]),
             Param(name="len", type="int", target="train.max_length", low=64, high=256),
             Param(name="lr", type="float", target="train.learning_rate", low=1e-5, high=1e-3)]
    assert hungriest(space) == {"r": 32, "bits": 8, "modules": "all-linear", "len": 256, "lr": 1e-5}


def test_sweep_processes_sharing_a_study_measure_once(tmp_path):
    """Two sweep processes (SLURM tasks, or local sweeps on one study) plan the same device at once:
    one trains the probe, the other waits on the study folder's lock and reads its figure. The
    probe's trial process is stood in for (what is tested is who measures); test_sweep.py and
    test_slots.py run it for real."""
    import threading
    import time

    import optuna

    from sweeper.job import Outcome
    from sweeper.probe import measured_peaks
    from sweeper.settings import sweep_settings
    from sweeper.slots import Device

    s = sweep_settings([f"sweep.dir={tmp_path}", f"sweep.storage=sqlite:///{tmp_path / 'study.db'}"],
                       check_values=False)
    optuna.create_study(study_name=s.study_name, storage=s.storage)
    submitted, notes = [], []

    class Probe:  # a probe's trial process: runs a second, then reports its peak
        def __init__(self):
            self.end = time.monotonic() + 1

        def poll(self):
            return Outcome("complete", None, 6, facts={"peak_rss_bytes": 2**30}) if time.monotonic() > self.end else None

    class Executor:
        def submit(self, job, slot, storage_url, keep_spare):
            submitted.append(job)
            return Probe()

    class View:
        def note(self, text):
            notes.append(text)

    got = []

    def plan():
        study = optuna.load_study(study_name=s.study_name, storage=s.storage)  # each process its own
        got.append(measured_peaks(s, study, Device("cpu", None), View(), [None], Executor()))

    threads = [threading.Thread(target=plan) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(submitted) == 1
    assert got == [{None: {"peak_bytes": 2**30, "peak_rss_bytes": 2**30}}] * 2
    assert sum(n.startswith("measuring the hungriest trial's peak memory") for n in notes) == 1
    assert sum(n.startswith("waiting for another sweep process") for n in notes) == 1


def test_cpu_threads_keep_to_the_cores_slurm_granted(monkeypatch):
    """Inside a SLURM job on a cluster that binds no cores (TaskPlugin=task/none, as tests/slurm's),
    the affinity mask is the whole node: --cpus-per-task is what the worker may use."""
    import os

    from sweeper.slots import Device, cpu_cores, cpu_threads, slot_env

    mask = len(os.sched_getaffinity(0))
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    assert cpu_cores() == mask and cpu_threads(1) == mask
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    assert cpu_cores() == 1 and cpu_threads(2) == 1
    assert slot_env(Device("cpu", None))["OMP_NUM_THREADS"] == "1"  # a spare's torch, before K is known
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", str(mask + 8))  # more than the mask: the mask binds
    assert cpu_cores() == mask
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "")
    assert cpu_cores() == mask


def test_a_trial_yields_a_core_while_its_slots_next_spare_imports():
    """One thread fewer for as long as a spare's imports took, then every thread the slot has."""
    import time

    import torch

    from sweeper.worker import yield_a_core

    before = torch.get_num_threads()
    try:
        callback = yield_a_core(2, 0.3)
        assert torch.get_num_threads() == 1
        callback.on_step_end(None, None, None)
        assert torch.get_num_threads() == 1  # the spare is still importing
        time.sleep(0.35)
        callback.on_step_end(None, None, None)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_longest_row_padding_pads_train_and_eval_batches_to_the_datas_longest_row():
    """The memory probe's padding (train.pad_to_multiple_of=longest), on TRL's own collator: a batch
    of short rows comes out as long as the longest row of either split, the worst batch these data
    make; a real trial's batch pads to its own longest row, so the probe's peak bounds it."""
    from types import SimpleNamespace

    from datasets import Dataset
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from trainers.sft import pad_to_longest_row

    # TRL filters out rows truncation left without a label: a dropped row (12 tokens) does not count.
    train = Dataset.from_dict({"input_ids": [[1, 2, 3], [1] * 7, [4, 5], [3] * 12]}).filter(lambda r: r["input_ids"][0] != 3)
    evals = Dataset.from_dict({"input_ids": [[1] * 9, [2]]})
    trainer = SimpleNamespace(train_dataset=train, eval_dataset=evals,
                              data_collator=DataCollatorForLanguageModeling(pad_token_id=0))
    assert pad_to_longest_row(trainer) == 9
    batch = trainer.data_collator([{"input_ids": [1, 2, 3]}, {"input_ids": [4, 5]}])
    assert tuple(batch["input_ids"].shape) == (2, 9) and batch["labels"][0, 3:].eq(-100).all()
