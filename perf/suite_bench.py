"""Benchmark-suite timings (issue 6, item 4): wall time of ``quick``, a sampled estimate of ``paper``,
and the throughput of the RQ fan-out with 1 and 2 real ``mmal worker`` processes.

Why a script and not a test: these are figures for RESULTS.md, never pass/fail. Why subprocesses: the
figures are for the commands people run (``mmal benchmark run``, ``mmal worker``), imports included.
Why the fan-out span is taken from RQ's own job timestamps: the driver selects recipes and builds the
scenarios serially before it enqueues anything, the same with any number of workers, so its wall time
hides what the workers add; the span from the first enqueue to the last cell written is what fans out.

    .venv/bin/python perf/suite_bench.py quick
    .venv/bin/python perf/suite_bench.py paper-sample --scenarios balanced --strategies random,badge,bmmal
    .venv/bin/python perf/suite_bench.py fanout --workers 1,2 --suite quick --seeds 0,1
    .venv/bin/python perf/suite_bench.py all          # the three, in that order

Every measurement waits (a few tries) for the 1-minute load average to drop under ``--max-load``,
runs its subprocesses under ``nice -n 10``, and records the load average at its start and end.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

ROOT = Path(__file__).resolve().parents[1]
MMAL = [str(ROOT / ".venv" / "bin" / "mmal")] if (ROOT / ".venv" / "bin" / "mmal").exists() else \
    [sys.executable, "-m", "mmal.cli"]
DEFAULT_QUEUE = "redis://127.0.0.1:6379/11"


# ----------------------------------------------------------------------------------------------
# Load and processes
# ----------------------------------------------------------------------------------------------
def loadavg() -> list[float]:
    """The 1, 5 and 15-minute load averages (what RESULTS.md records beside every figure)."""
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


def idle_cores(sample_s: float = 3.0) -> float:
    """Cores left idle by everyone over ``sample_s`` seconds (/proc/stat): the load average lags a minute."""
    def snap() -> tuple[int, int]:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return v[3] + v[4], sum(v)  # idle + iowait, total

    (i0, t0), _ = snap(), time.sleep(sample_s)
    i1, t1 = snap()
    return (os.cpu_count() or 1) * (i1 - i0) / max(1, t1 - t0)


def wait_for_quiet(max_load: float, tries: int, wait_s: float, min_idle: float = 0.0) -> list[float]:
    """Wait until the 1-minute load is under ``max_load`` and at least ``min_idle`` cores are idle (at most
    ``tries`` waits); returns the load average then."""
    load, idle = loadavg(), idle_cores() if min_idle else 0.0
    for _ in range(tries):
        if load[0] < max_load and idle >= min_idle:
            break
        print(f"load {load[0]:.2f} (limit {max_load}), idle cores {idle:.2f} (want {min_idle}): waiting {wait_s:.0f} s",
              file=sys.stderr, flush=True)
        time.sleep(wait_s)
        load, idle = loadavg(), idle_cores() if min_idle else 0.0
    if load[0] >= max_load or idle < min_idle:
        print(f"still busy (load {load[0]:.2f}, idle cores {idle:.2f}): measuring anyway (recorded)", file=sys.stderr,
              flush=True)
    return load


def niced(cmd: Sequence[str], nice: int) -> list[str]:
    """``cmd`` under ``nice -n``: the box is shared, our runs should yield to other people's."""
    return (["nice", "-n", str(nice)] if nice else []) + list(cmd)


def fresh_dir(path: Path) -> Path:
    """An empty run folder (a reused one would resume and skip cells, timing nothing)."""
    if path.exists():
        shutil.rmtree(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def run_timed(cmd: Sequence[str], log: Path) -> tuple[float, float]:
    """Run ``cmd`` to completion with its output in ``log``; returns (wall s, its CPU s); raises on failure."""
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    with open(log, "w") as f:
        rc = subprocess.call(list(cmd), stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
    wall = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)  # only this child was reaped meanwhile
    if rc != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {rc}; see {log}:\n{log.read_text()[-3000:]}")
    return wall, (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)


def cell_records(out: Path) -> list[dict[str, Any]]:
    """The run's cell files (``cells/<id>.json``), each with its file time as ``written``."""
    recs = []
    for p in sorted((out / "cells").glob("*.json")):
        rec = json.loads(p.read_text())
        rec["id"], rec["written"] = p.stem, p.stat().st_mtime
        recs.append(rec)
    return recs


def cell_split(recs: list[dict[str, Any]]) -> dict[str, float]:
    """Where a cell's own seconds go: training, querying, the rest (scenario build, diagnostics, I/O)."""
    total = sum(r["seconds"] for r in recs)
    train = sum(row["train_seconds"] for r in recs for row in r["rows"])
    query = sum(row["query_seconds"] for r in recs for row in r["rows"])
    return {"cell_seconds": total, "train_seconds": train, "query_seconds": query,
            "other_seconds": total - train - query}


def round0_trainings(recs: list[dict[str, Any]]) -> dict[str, int]:
    """How often each (scenario, seed)'s shared round-0 model was trained (1 = never duplicated).

    A strategy cell reports round-0 training seconds only when it trained the model itself instead of
    loading the cached one; two workers starting cells of the same pair at once both train it.
    """
    out: dict[str, int] = {}
    for r in recs:
        c = r["cell"]
        if c["strategy"] == "full_pool":
            continue
        key = f"{c['scenario']}/s{c['seed']}"
        out[key] = out.get(key, 0) + int(r["rows"][0]["train_seconds"] > 0)
    return out


def bench_args(a: argparse.Namespace) -> list[str]:
    """The ``mmal benchmark run`` flags that restrict the job set."""
    out = []
    for flag in ("scenarios", "strategies", "seeds", "rounds", "items"):
        v = getattr(a, flag, None)
        if v is not None:
            out += [f"--{flag}", str(v)]
    return out


# ----------------------------------------------------------------------------------------------
# 1. quick suite wall time, paper estimate
# ----------------------------------------------------------------------------------------------
def measure_suite(suite: str, out: Path, extra: Sequence[str], a: argparse.Namespace, report: bool) -> dict[str, Any]:
    """Wall time of one ``mmal benchmark run`` into a fresh folder, with where the time went."""
    fresh_dir(out)
    cmd = MMAL + ["benchmark", "run", "--suite", suite, "--out", str(out), "--no-progress", *extra]
    if not report:
        cmd.append("--no-report")
    load0 = wait_for_quiet(a.max_load, a.load_tries, a.load_wait)
    wall, cpu = run_timed(niced(cmd, a.nice), out.parent / f"{out.name}.log")
    load1 = loadavg()
    run = json.loads((out / "run.json").read_text())
    recs = cell_records(out)
    split = cell_split(recs)
    run_wall = float(run["wall_seconds_total"])
    return {"command": " ".join(niced(cmd, a.nice)), "wall_seconds": wall, "cpu_seconds": cpu,
            "load_start": load0, "load_end": load1,
            "cells": len(recs), "run_seconds": run_wall, **split,
            # driver work outside the cells: recipe selection, scenario builds/summaries, assembling results
            "setup_seconds": run_wall - split["cell_seconds"],
            "process_and_report_seconds": wall - run_wall,
            "per_strategy_cell_seconds": _per_strategy(recs), "recipes": run.get("recipes", {})}


def _per_strategy(recs: list[dict[str, Any]]) -> dict[str, float]:
    by: dict[str, list[float]] = {}
    for r in recs:
        by.setdefault(r["cell"]["strategy"], []).append(r["seconds"])
    return {k: statistics.mean(v) for k, v in by.items()}


def paper_estimate(sample: dict[str, Any], n_scenarios: int, n_strategies: int, n_seeds: int,
                   sampled_scenarios: int) -> dict[str, Any]:
    """Extrapolate the full ``paper`` wall time from a sample of its cells (an estimate, not a run).

    cells: each (scenario, seed) has the full-pool reference plus every strategy. setup: the sample's
    driver time outside cells (one recipe selection per scenario, scenario builds per seed), scaled
    by scenarios. Strategy cells are taken at the sampled strategies' mean, which is why the choice of
    sampled strategies (cheap and expensive ones) matters; reported with the sampled range.
    """
    per = dict(sample["per_strategy_cell_seconds"])
    ref = per.pop("full_pool", 0.0)
    strat_mean = statistics.mean(per.values())
    n_pairs = n_scenarios * n_seeds
    setup = sample["setup_seconds"] / sampled_scenarios * n_scenarios
    cells_s = n_pairs * (ref + n_strategies * strat_mean)
    lo = n_pairs * (ref + n_strategies * min(per.values()))
    hi = n_pairs * (ref + n_strategies * max(per.values()))
    return {"cells_total": n_pairs * (n_strategies + 1), "scenarios": n_scenarios, "strategies": n_strategies,
            "seeds": n_seeds, "reference_cell_seconds": ref, "strategy_cell_seconds_mean": strat_mean,
            "setup_seconds_per_scenario": sample["setup_seconds"] / sampled_scenarios,
            "estimate_seconds_1_process": setup + cells_s,
            "estimate_range_seconds_1_process": [setup + lo, setup + hi],
            "estimate_seconds_2_workers_ideal": setup + cells_s / 2,
            # the sample's CPU/wall ratio: what the same work would take on cores nobody else uses
            "estimate_seconds_1_process_quiet":
                (setup + cells_s) * min(1.0, sample["cpu_seconds"] / sample["wall_seconds"]),
            "how": (f"{n_scenarios} scenarios x {n_seeds} seeds x ({n_strategies} strategies at the sampled mean "
                    f"{strat_mean:.1f} s + reference {ref:.1f} s) + {n_scenarios} x setup "
                    f"{sample['setup_seconds'] / sampled_scenarios:.1f} s; range: every strategy as cheap / as "
                    "expensive as the cheapest / dearest sampled one; 2 workers: cells halved, setup serial")}


# ----------------------------------------------------------------------------------------------
# 2. RQ fan-out
# ----------------------------------------------------------------------------------------------
def _redis(url: str):  # noqa: ANN202 - redis is imported lazily so --help works without it
    from redis import Redis

    return Redis.from_url(url)


def start_workers(n: int, url: str, a: argparse.Namespace, logdir: Path,
                  timeout_s: float = 120.0) -> list[subprocess.Popen]:
    """Start ``n`` ``mmal worker`` processes and wait until all are registered and idle."""
    from rq import Worker

    conn = _redis(url)
    procs = []
    for i in range(n):
        log = open(logdir / f"worker{i}.log", "w")
        procs.append(subprocess.Popen(niced(MMAL + ["worker", "--queue", url], a.nice), stdout=log,
                                      stderr=subprocess.STDOUT, cwd=ROOT))
    t0 = time.perf_counter()
    while True:
        ws = Worker.all(connection=conn)
        if len(ws) >= n and all(w.get_state() == "idle" for w in ws):
            return procs
        dead = [p for p in procs if p.poll() is not None]
        if dead or time.perf_counter() - t0 > timeout_s:
            stop_workers(procs)
            raise RuntimeError(f"workers did not come up ({len(ws)}/{n} registered); see {logdir}/worker*.log")
        time.sleep(0.2)


def proc_cpu_seconds(pids: Sequence[int]) -> float:
    """CPU seconds used so far by these processes and their reaped children (RQ's per-job work horses).

    Why: on a shared box the wall-time ratio mixes our scaling with other people's load; CPU seconds
    per cell show whether a second worker made each cell dearer (duplicate work, oversubscription).
    """
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += sum(int(x) for x in fields[11:15]) / tick  # utime, stime, cutime, cstime
    return total


def stop_workers(procs: list[subprocess.Popen], timeout_s: float = 30.0) -> None:
    """Warm shutdown (SIGTERM) of the workers this script started (idle by now); SIGKILL after ``timeout_s``."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def job_timings(url: str) -> list[dict[str, Any]]:
    """Per finished benchmark job: RQ's enqueue/start/end times (epoch s), the worker, the cell's own seconds."""
    from rq import Queue
    from rq.job import Job
    from rq.registry import FinishedJobRegistry

    from benchmark.runner import QUEUE_NAME

    conn = _redis(url)
    ids = FinishedJobRegistry(QUEUE_NAME, connection=conn).get_job_ids()
    ids += Queue(QUEUE_NAME, connection=conn).get_job_ids()  # none expected: every job finished
    out = []
    for job in Job.fetch_many(ids, connection=conn):
        if job is None or job.ended_at is None:
            continue
        rec = job.return_value() or {}
        out.append({"id": job.id, "enqueued": job.enqueued_at.timestamp(), "started": job.started_at.timestamp(),
                    "ended": job.ended_at.timestamp(), "worker": job.worker_name, "pid": rec.get("pid"),
                    "cell_seconds": rec.get("seconds", float("nan"))})
    return sorted(out, key=lambda j: j["started"])


def fanout_stats(jobs: list[dict[str, Any]], recs: list[dict[str, Any]], n_workers: int) -> dict[str, Any]:
    """Throughput and where a job's time goes, from RQ's timestamps and the driver's cell files."""
    first = min(j["enqueued"] for j in jobs)
    last = max(r["written"] for r in recs)
    span = last - first
    written = {r["id"]: r["written"] for r in recs}
    busy = sum(j["ended"] - j["started"] for j in jobs)
    horse = [(j["ended"] - j["started"]) - j["cell_seconds"] for j in jobs]
    lag = [written[j["id"].split("-", 2)[2]] - j["ended"] for j in jobs if j["id"].split("-", 2)[2] in written]
    gaps: list[float] = []  # per worker: from one job's end to the next job's start (dequeue, fork)
    by_w: dict[str, list[dict[str, Any]]] = {}
    for j in jobs:
        by_w.setdefault(j["worker"], []).append(j)
    for js in by_w.values():
        gaps += [b["started"] - a["ended"] for a, b in zip(js, js[1:])]
    tail = last - max(j["started"] for j in jobs)  # the last job alone: one worker idles meanwhile
    return {"workers": n_workers, "cells": len(jobs), "span_seconds": span, "cells_per_minute": 60 * len(jobs) / span,
            "worker_utilisation": busy / (span * n_workers), "jobs_per_worker": {w: len(js) for w, js in by_w.items()},
            "cell_seconds_mean": statistics.mean(j["cell_seconds"] for j in jobs),
            "job_overhead_seconds_mean": statistics.mean(horse),  # in the work horse, outside run_cell
            "dequeue_gap_seconds_mean": statistics.mean(gaps) if gaps else 0.0,
            "driver_lag_seconds_mean": statistics.mean(lag) if lag else float("nan"),  # job end -> cell file
            "last_job_seconds": tail}


def measure_fanout(n_workers: int, url: str, out: Path, a: argparse.Namespace) -> dict[str, Any]:
    """One fan-out run: flush DB, start workers, run the driver with --queue, read RQ's timestamps."""
    conn = _redis(url)
    conn.flushdb()  # this DB only (the URL's); the benchmark DB is ours alone
    fresh_dir(out)
    logdir = out.parent / f"{out.name}-logs"
    logdir.mkdir(parents=True, exist_ok=True)
    load0 = wait_for_quiet(a.max_load, a.load_tries, a.load_wait, min_idle=a.min_idle * n_workers)
    t0 = time.perf_counter()
    procs = start_workers(n_workers, url, a, logdir)
    t_up = time.perf_counter() - t0
    try:
        cmd = MMAL + ["benchmark", "run", "--suite", a.suite, *bench_args(a), "--queue", url, "--out", str(out),
                      "--no-progress", "--no-report"]
        w_cpu0 = proc_cpu_seconds([p.pid for p in procs])
        wall, cpu = run_timed(niced(cmd, a.nice), logdir / "driver.log")
        time.sleep(1.0)  # the last work horse is reaped (its CPU counted) just after its job is marked done
        w_cpu = proc_cpu_seconds([p.pid for p in procs]) - w_cpu0
    finally:
        t0 = time.perf_counter()
        stop_workers(procs)
        t_down = time.perf_counter() - t0
    load1 = loadavg()
    jobs = job_timings(url)
    recs = cell_records(out)
    conn.flushdb()
    stats = fanout_stats(jobs, recs, n_workers)
    stats["workers_cpu_seconds_per_cell"] = w_cpu / max(1, stats["cells"])
    stats["workers_cpu_share"] = w_cpu / (stats["span_seconds"] * n_workers)  # of one core each, during the span
    run = json.loads((out / "run.json").read_text())
    return {"command": " ".join(niced(cmd, a.nice)),
            "worker_command": " ".join(niced(MMAL + ["worker", "--queue", url], a.nice)),
            "workers_start_seconds": t_up, "workers_stop_seconds": t_down,
            "driver_wall_seconds": wall, "driver_cpu_seconds": cpu, "workers_cpu_seconds": w_cpu,
            "driver_setup_seconds": float(run["wall_seconds_total"]) - stats["span_seconds"],
            "load_start": load0, "load_end": load1, **stats, **cell_split(recs),
            "round0_trainings": round0_trainings(recs)}


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------
def _fmt_load(r: dict[str, Any]) -> str:
    return f"load {r['load_start'][0]:.2f} -> {r['load_end'][0]:.2f}"


def cmd_quick(a: argparse.Namespace) -> dict[str, Any]:
    """Wall time of the README's main job, report included."""
    r = measure_suite("quick", Path(a.out) / "quick", [], a, report=True)
    print(f"quick: {r['wall_seconds']:.1f} s wall for {r['cells']} cells ({_fmt_load(r)}); cells "
          f"{r['cell_seconds']:.1f} s (train {r['train_seconds']:.1f}, query {r['query_seconds']:.1f}, other "
          f"{r['other_seconds']:.1f}), driver setup {r['setup_seconds']:.1f} s, imports+report "
          f"{r['process_and_report_seconds']:.1f} s", flush=True)
    return r


def cmd_paper_sample(a: argparse.Namespace) -> dict[str, Any]:
    """A few cells of the paper config, then the extrapolated full-suite wall time (labelled an estimate)."""
    from benchmark.suites import get_suite

    full = get_suite("paper")
    extra = ["--scenarios", a.scenarios, "--strategies", a.strategies, "--seeds", a.seeds]
    r = measure_suite("paper", Path(a.out) / "paper-sample", extra, a, report=False)
    est = paper_estimate(r, len(full.scenarios), len(full.strategies), len(full.seeds), len(a.scenarios.split(",")))
    r["estimate"] = est
    print(f"paper sample: {r['cells']} cells in {r['wall_seconds']:.1f} s ({_fmt_load(r)}); per cell: "
          + ", ".join(f"{k} {v:.1f} s" for k, v in r["per_strategy_cell_seconds"].items())
          + f"; setup {r['setup_seconds']:.1f} s", flush=True)
    h = 3600.0
    lo, hi = est["estimate_range_seconds_1_process"]
    print(f"paper ESTIMATE (not measured): {est['cells_total']} cells, ~{est['estimate_seconds_1_process'] / h:.1f} h "
          f"in one process (range {lo / h:.1f}-{hi / h:.1f} h), ~{est['estimate_seconds_2_workers_ideal'] / h:.1f} h "
          f"with 2 ideal workers; ~{est['estimate_seconds_1_process_quiet'] / h:.1f} h in one process on a quiet "
          f"core (scaled by the sample's CPU/wall {r['cpu_seconds'] / r['wall_seconds']:.2f}). How: {est['how']}",
          flush=True)
    return r


def _print_fanout(r: dict[str, Any]) -> None:
    print(f"fan-out, {r['workers']} worker(s): {r['cells']} cells in {r['span_seconds']:.1f} s = "
          f"{r['cells_per_minute']:.1f} cells/min ({_fmt_load(r)}); utilisation {r['worker_utilisation']:.2f}, cell "
          f"{r['cell_seconds_mean']:.2f} s, job overhead {r['job_overhead_seconds_mean']:.3f} s, dequeue gap "
          f"{r['dequeue_gap_seconds_mean']:.3f} s, driver lag {r['driver_lag_seconds_mean']:.3f} s, last job alone "
          f"{r['last_job_seconds']:.1f} s; worker CPU {r['workers_cpu_seconds_per_cell']:.2f} s/cell, each worker got "
          f"{r['workers_cpu_share']:.2f} of a core; round-0 models trained twice or more: "
          f"{sum(v > 1 for v in r['round0_trainings'].values())} of {len(r['round0_trainings'])}; driver wall "
          f"{r['driver_wall_seconds']:.1f} s (setup before enqueue {r['driver_setup_seconds']:.1f} s, driver CPU "
          f"{r['driver_cpu_seconds']:.1f} s)", flush=True)


def cmd_fanout(a: argparse.Namespace) -> dict[str, Any]:
    """The same job set on 1 then 2 (``--workers``) RQ workers; cells/minute and the ratio.

    A run in which a worker got less than ``--min-share`` of a core was slowed by other people's load, not
    by the fan-out; the whole series is then repeated, up to ``--attempts`` times. Every attempt is kept.
    """
    counts = [int(x) for x in str(a.workers).split(",")]
    attempts: list[list[dict[str, Any]]] = []
    for k in range(a.attempts):
        runs = []
        for n in counts:
            r = measure_fanout(n, a.queue, Path(a.out) / f"fanout-w{n}", a)
            _print_fanout(r)
            runs.append(r)
        attempts.append(runs)
        if min(r["workers_cpu_share"] for r in runs) >= a.min_share:
            break
        if k + 1 < a.attempts:
            print(f"a worker got under {a.min_share} of a core (other load): repeating", file=sys.stderr, flush=True)
    runs = max(attempts, key=lambda rs: min(r["workers_cpu_share"] for r in rs))  # the least contended series
    res: dict[str, Any] = {"runs": runs, "attempts": attempts}
    if len(runs) >= 2:
        one, many = runs[0], runs[-1]
        res["ratio"] = many["cells_per_minute"] / one["cells_per_minute"]
        # what the ratio would be if every worker had a whole core: per-worker throughput per CPU second
        res["ratio_per_core"] = (many["workers"] / one["workers"]) * (
            one["workers_cpu_seconds_per_cell"] / many["workers_cpu_seconds_per_cell"]) * (
            many["worker_utilisation"] / one["worker_utilisation"])
        print(f"fan-out ratio {many['workers']} / {one['workers']} workers: {res['ratio']:.2f}x measured "
              f"(workers got {one['workers_cpu_share']:.2f} / {many['workers_cpu_share']:.2f} of a core each); "
              f"{res['ratio_per_core']:.2f}x with a whole core per worker (derived from CPU seconds per cell and "
              "utilisation)", flush=True)
    return res


def parser() -> argparse.ArgumentParser:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["quick", "paper-sample", "fanout", "all"])
    p.add_argument("--out", default="runs/perf/suite", help="parent folder of the run folders")
    p.add_argument("--json", default="runs/perf/suite_bench.json", help="write the figures here ('' to skip)")
    p.add_argument("--nice", type=int, default=10)
    p.add_argument("--max-load", type=float, default=2.5, help="wait while the 1-minute load is at or above this")
    p.add_argument("--load-tries", type=int, default=4)
    p.add_argument("--load-wait", type=float, default=30.0, help="seconds per wait")
    p.add_argument("--queue", default=DEFAULT_QUEUE, help="Redis URL; its DB is flushed before and after")
    p.add_argument("--workers", default="1,2", help="fan-out worker counts, e.g. '1,2'")
    p.add_argument("--min-idle", type=float, default=0.8,
                   help="fan-out: also wait for this many idle cores per worker (sampled over 3 s)")
    p.add_argument("--min-share", type=float, default=0.9,
                   help="fan-out: a run whose workers got less of a core than this counts as contended")
    p.add_argument("--attempts", type=int, default=1, help="fan-out: repeat a contended series up to this often")
    p.add_argument("--suite", default="quick", help="fan-out job set: this suite ...")
    p.add_argument("--scenarios", default=None, help="... restricted to these (paper-sample default: balanced)")
    p.add_argument("--strategies", default=None)
    p.add_argument("--seeds", default=None)
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--items", type=int, default=None)
    return p


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the chosen measurements, print them, write the JSON; returns the figures."""
    a = parser().parse_args(argv)
    res: dict[str, Any] = {"machine": {"cpu_count": os.cpu_count(), "host": os.uname().nodename},
                           "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    if a.what in ("quick", "all"):
        res["quick"] = cmd_quick(a)
    if a.what in ("paper-sample", "all"):
        pa = argparse.Namespace(**vars(a))
        pa.scenarios = a.scenarios or "balanced"
        pa.strategies = a.strategies or "random,badge,bmmal"
        pa.seeds = a.seeds or "0"
        res["paper_sample"] = cmd_paper_sample(pa)
    if a.what in ("fanout", "all"):
        fa = argparse.Namespace(**vars(a))
        if a.what == "all":  # the paper-sample restrictions are not the fan-out's job set
            fa.scenarios = fa.strategies = fa.seeds = None
        if fa.suite == "quick" and fa.seeds is None:
            fa.seeds = "0,1"  # 60 cells: about 1.5 minutes on one worker, so the last job alone weighs little
        res["fanout"] = cmd_fanout(fa)
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
