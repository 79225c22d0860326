"""LCBench landscapes for the search suite, made once from YAHPO Gym's LCBench surrogate (an ONNX
network predicting learning curves of an MLP on 34 OpenML tasks; Zimmer, Lindauer and Hutter 2021;
Pfisterer et al. 2022, Apache 2.0) and kept in bench/landscapes/lcbench/<task>.json: curves and
pruning on landscapes nobody here made.

    python bench/lcbench.py [--surrogate ../shared/benchmarks/lcbench] [--out bench/landscapes/lcbench]

Each task: a grid of the learning rate (6 values a decade and a bit apart over LCBench's 1e-4..1e-1),
batch size, width and dropout (3 each), the other inputs at LCBench's defaults; the validation
cross-entropy every 4 epochs (the curve) up to epoch 52 (the final value). Parameter names are
LCBench's own, prefixed mlp_, so none is taken for one of the sweep's (a LoRA prior says nothing
about an MLP's SGD)."""
import argparse
import itertools
import json
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
# The inputs, in the order the network takes them (YAHPO Gym's lcbench config, cont_names).
INPUTS = ["epoch", "batch_size", "learning_rate", "momentum", "weight_decay", "num_layers", "max_units", "max_dropout"]
OUTPUTS = ["time", "val_accuracy", "val_cross_entropy", "val_balanced_accuracy", "test_cross_entropy",
           "test_balanced_accuracy"]
GRID = {  # LCBench input -> the values of the grid (log-scale ones marked in LOG)
    "learning_rate": [1e-4, 4e-4, 1.6e-3, 6.3e-3, 2.5e-2, 1e-1],
    "batch_size": [16, 91, 512],
    "max_units": [64, 256, 1024],
    "max_dropout": [0.0, 0.4, 0.8],
}
LOG = {"learning_rate", "batch_size", "max_units"}
FIXED = {"momentum": 0.545, "weight_decay": 0.050005, "num_layers": 3}  # config_space.json's defaults
EPOCHS = list(range(4, 53, 4))


def task_grid(session, code: int) -> list[dict]:
    names = list(GRID)
    configs = list(itertools.product(*GRID.values()))
    rows = [{**dict(zip(names, c)), **FIXED, "epoch": e} for c in configs for e in EPOCHS]
    x_cont = np.array([[r[i] for i in INPUTS] for r in rows], dtype=np.float32)
    x_cat = np.full((len(rows), 1), code, dtype=np.int32)
    inputs = session.get_inputs()
    out = session.run(None, {inputs[0].name: x_cat, inputs[1].name: x_cont})[0]
    loss = out[:, OUTPUTS.index("val_cross_entropy")].reshape(len(configs), len(EPOCHS))
    cells = []
    for c, curve in zip(configs, loss):
        curve = {str(e): round(float(v), 5) for e, v in zip(EPOCHS, curve)}
        cells.append({"params": {f"mlp_{n}": v for n, v in zip(names, c)}, "final": curve[str(EPOCHS[-1])],
                      "curve": curve})
    return cells


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--surrogate", default=str(ROOT.parent / "shared" / "benchmarks" / "lcbench"))
    ap.add_argument("--out", default=str(ROOT / "bench" / "landscapes" / "lcbench"))
    a = ap.parse_args()
    import onnxruntime

    src = Path(a.surrogate)
    session = onnxruntime.InferenceSession(str(src / "model.onnx"))
    codes = json.loads((src / "encoding.json").read_text())["OpenML_task_id"]
    tasks = next(h["choices"] for h in json.loads((src / "config_space.json").read_text())["hyperparameters"]
                 if h["name"] == "OpenML_task_id")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    for task in tasks:
        record = {
            "source": f"LCBench (Zimmer, Lindauer, Hutter 2021) through YAHPO Gym's surrogate (Pfisterer et al. 2022, "
                      f"Apache 2.0), OpenML task {task}: validation cross-entropy of an MLP every 4 epochs to 52; "
                      f"fixed: {FIXED}. Made by bench/lcbench.py",
            "parameters": {f"mlp_{n}": {"values": v, "log": n in LOG} for n, v in GRID.items()},
            "cells": task_grid(session, codes[task])}
        (out / f"task-{task}.json").write_text(json.dumps(record, separators=(",", ":")) + "\n")
    print(f"{len(tasks)} LCBench landscapes in {out}")


if __name__ == "__main__":
    main()
