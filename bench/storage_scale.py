"""Many trial processes on one PostgreSQL study: what a big SLURM sweep (64 GPUs x K=8 = 512 trial
processes) asks of the database. N simulated trials, spread over M simulated nodes, each report an
eval loss, ask the pruner and (the node's sweep process, on their behalf) send a heartbeat every
--interval seconds for --seconds, through one of two paths:

  direct: each trial opens the study on the database itself (what every trial process did before
          this benchmark): one connection pool per trial, so connections grow with trials;
  node:   each trial talks to its node's sweep process, as trial processes do now: Optuna's gRPC
          storage proxy serving the sweep process's storage of sweeper.study.NODE_CONNECTIONS
          connections (sweeper.study.serve_trials), so connections grow with nodes.

A simulated trial is a thread with its own storage object (its own connection pool, as a process
has), so hundreds fit on a 2-core machine; a node is a process. The database's connection count is
sampled from pg_stat_activity meanwhile. Prints, per path: operations done, errors (the first of
each kind), the most connections seen, and operation latency. Last line, for the node path:
connections_direct=<peak> connections_node=<peak> errors_direct=<n> errors_node=<n>.
python bench/storage_scale.py [--trials 320] [--nodes 8] [--seconds 30] [--interval 2]
[--url postgresql://postgres@127.0.0.1:5432/test]"""
import argparse
import multiprocessing as mp
import random
import statistics
import subprocess
import sys
import threading
import time
import uuid
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def quiet() -> None:
    import optuna

    warnings.simplefilter("ignore")
    optuna.logging.set_verbosity(optuna.logging.ERROR)


def trial_loop(storage_of, rdb, name: str, seconds: float, interval: float, out: list, barrier) -> None:
    """One simulated trial: its own storage, one trial, a report and a pruner question per interval."""
    import optuna

    ops, errors = [], []
    try:
        barrier.wait()
        study = optuna.load_study(study_name=name, storage=storage_of(),
                                  pruner=optuna.pruners.PercentilePruner(75.0, n_startup_trials=2))
        trial = study.ask()
        step, end = 0, time.monotonic() + seconds
        time.sleep(random.uniform(0, interval))  # trials do not evaluate in lockstep
        while time.monotonic() < end:
            started = time.monotonic()
            try:
                trial.report(1.0 / (step + 1) + random.random() * 1e-3, step)
                trial.should_prune()
                rdb.record_heartbeat(trial._trial_id)  # the node's sweep process does this for its trials
                ops.append(time.monotonic() - started)
            except Exception as e:  # what the stress looks for
                errors.append(f"{type(e).__name__}: {str(e).splitlines()[0][:160]}")
            step += 1
            time.sleep(max(0.0, interval - (time.monotonic() - started)))
        study.tell(trial, 1.0 / (step + 1))
    except Exception as e:
        errors.append(f"{type(e).__name__}: {str(e).splitlines()[0][:160]}")
    out.append((ops, errors))


def node(url: str, name: str, path: str, trials: int, seconds: float, interval: float, results) -> None:
    """One simulated node: its sweep process's RDB storage (heartbeats; in the node path also the
    proxy every trial talks to), and its trials as threads."""
    quiet()
    import optuna

    from sweeper.settings import sweep_settings
    from sweeper.study import NODE_CONNECTIONS, build_storage, serve_trials, trial_storage

    s = sweep_settings([f"sweep.storage={url}", f"sweep.study_name={name}"], check_values=False)
    try:
        if path == "node":  # exactly what a sweep process does for its trial processes
            rdb = build_storage(s, connections=NODE_CONNECTIONS)
            address = serve_trials(optuna.load_study(study_name=name, storage=rdb))

            def storage_of():
                return trial_storage(address)
        else:
            rdb = build_storage(s)

            def storage_of():
                return build_storage(s)
    except Exception as e:  # the node's own sweep process could not open the study: none of its trials run
        results.append([([], [f"{type(e).__name__} (node): {str(e).splitlines()[0][:160]}"])] * trials)
        return
    out, barrier = [], threading.Barrier(trials)
    threads = [threading.Thread(target=trial_loop, args=(storage_of, rdb, name, seconds, interval, out, barrier))
               for _ in range(trials)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    results.append(out)


def connections(url: str) -> int:
    from sqlalchemy.engine import make_url

    u = make_url(url)
    sql = f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{u.database}'"
    proc = subprocess.run(["psql", "-h", u.host or "127.0.0.1", "-p", str(u.port or 5432), "-U", u.username or "postgres",
                           "-d", "postgres", "-tAc", sql], capture_output=True, text=True)
    if proc.returncode != 0:  # "too many clients already": the sampler itself was refused, so at the limit
        return -1
    return int(proc.stdout.strip() or 0)


def run(url: str, path: str, trials: int, nodes: int, seconds: float, interval: float) -> dict:
    import optuna

    quiet()
    name = f"scale-{path}-{uuid.uuid4().hex[:8]}"
    optuna.create_study(study_name=name, storage=url)
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager:
        results = manager.list()
        per_node = [trials // nodes + (i < trials % nodes) for i in range(nodes)]
        procs = [ctx.Process(target=node, args=(url, name, path, n, seconds, interval, results)) for n in per_node]
        before = connections(url)
        for p in procs:
            p.start()
        peak, refused = before, 0
        while any(p.is_alive() for p in procs):
            now = connections(url)
            refused += now < 0
            peak = max(peak, now)
            time.sleep(0.5)
        results = [r for node_out in results for r in node_out]
    ops = [o for r, _ in results for o in r]
    errors = [e for _, errs in results for e in errs]
    optuna.delete_study(study_name=name, storage=url)
    kinds = {}
    for e in errors:
        kinds[e[:120]] = kinds.get(e[:120], 0) + 1
    return {"path": path, "trials": trials, "nodes": nodes, "ops": len(ops), "errors": len(errors),
            "error_kinds": kinds, "connections_before": before, "connections_peak": peak, "sampler_refused": refused,
            "trials_that_ran": sum(1 for r, _ in results if r),
            "p50_ms": round(1000 * statistics.median(ops), 1) if ops else None,
            "p95_ms": round(1000 * statistics.quantiles(ops, n=20)[-1], 1) if len(ops) > 1 else None}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/test")
    ap.add_argument("--trials", type=int, default=320)
    ap.add_argument("--nodes", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--interval", type=float, default=2.0)
    a = ap.parse_args()
    print(f"{a.trials} simulated trials on {a.nodes} nodes, an eval report, a pruner question and a heartbeat every "
          f"{a.interval:g} s each, for {a.seconds:g} s; PostgreSQL at {a.url}", flush=True)
    got = {}
    for path in ("direct", "node"):
        got[path] = r = run(a.url, path, a.trials, a.nodes, a.seconds, a.interval)
        print(f"{path}: {r['ops']} operations, {r['errors']} errors, {r['trials_that_ran']}/{a.trials} trials ran, "
              f"connections {r['connections_before']} before, {r['connections_peak']} at most"
              f"{f' (and {refused} samples refused: the server was full)' if (refused := r['sampler_refused']) else ''}; "
              f"latency p50 "
              f"{r['p50_ms']} ms, p95 {r['p95_ms']} ms; errors by kind: {r['error_kinds'] or 'none'}", flush=True)
    print(f"connections_direct={got['direct']['connections_peak']} connections_node={got['node']['connections_peak']} "
          f"errors_direct={got['direct']['errors']} errors_node={got['node']['errors']}")


if __name__ == "__main__":
    main()
