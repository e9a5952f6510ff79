"""Protocol and runner: fair cells, identical results for identical seeds (in-process and on real RQ
workers with a real Redis), budgets, and resuming an interrupted run without recomputing or duplicating."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from backend.data import DataError
from benchmark.oracle import BudgetError, OracleConfig, SimulatedOracle
from benchmark.protocol import TIMING_COLUMNS, initial_indices, result_columns, run_cell, build_scenario
from benchmark.runner import QUEUE_NAME, completed_cells, plan_cells, results_identical, run_benchmark
from benchmark.suites import BenchmarkConfig, get_suite

REDIS_URL = "redis://127.0.0.1:6379/15"

TINY = BenchmarkConfig(
    suite="test", scenarios=("difficulty",), strategies=("random", "margin"), seeds=(0, 1),
    scenario_params={"n_items": 200, "n_test": 200, "n_val": 50, "dims": 6, "mc_samples": 4000},
    n_initial=20, batch_size=20, rounds=2, train_overrides={"epochs": 10, "patience": 3},
)


def _strip(rows):
    return [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in rows]


def test_cell_rows_columns_and_identical_reruns(tmp_path):
    rows = run_cell(TINY, "difficulty", "margin", 0, cache_dir=tmp_path / "c1")
    assert [r["round"] for r in rows] == [0, 1, 2]
    assert [r["n_labeled"] for r in rows] == [20, 40, 60]
    assert [r["cost"] for r in rows] == [20.0, 40.0, 60.0]
    assert list(rows[0]) == result_columns(["a", "b"])
    for r in rows:
        assert sum(r[f"contribution:{m}"] for m in "ab") == pytest.approx(1.0)
        assert 0 <= r["accuracy"] <= 1 and 0 <= r["macro_f1"] <= 1 and 0 <= r["reliance_gap"] <= 1
        sc = build_scenario(TINY, "difficulty", 0)
        assert r["representation_gap:b"] == pytest.approx(sc.informativeness_present["b"] - r["unimodal_acc:b"])
    # a cache miss in another folder and a cache hit give the same numbers
    again = run_cell(TINY, "difficulty", "margin", 0, cache_dir=tmp_path / "c2")
    hit = run_cell(TINY, "difficulty", "margin", 0, cache_dir=tmp_path / "c1")
    assert _strip(rows) == _strip(again) == _strip(hit)


def test_every_strategy_starts_from_the_same_initial_set_and_round0_model(tmp_path):
    a = run_cell(TINY, "difficulty", "random", 1, cache_dir=tmp_path)
    b = run_cell(TINY, "difficulty", "margin", 1, cache_dir=tmp_path)
    ra, rb = _strip(a[:1])[0], _strip(b[:1])[0]
    ra.pop("strategy"), rb.pop("strategy")
    assert ra == rb
    assert len(list(tmp_path.glob("*.pt"))) == 1  # trained once, loaded by both
    sc = build_scenario(TINY, "difficulty", 1)
    assert np.array_equal(initial_indices(sc, 20, 1), initial_indices(sc, 20, 1))
    assert not np.array_equal(initial_indices(sc, 20, 1), initial_indices(build_scenario(TINY, "difficulty", 0), 20, 0))
    # the strategies then diverge
    assert _strip(a[1:]) != _strip(b[1:])


def test_full_pool_reference_cell(tmp_path):
    rows = run_cell(TINY, "difficulty", "full_pool", 0, cache_dir=tmp_path)
    assert len(rows) == 1 and rows[0]["n_labeled"] == 200 and rows[0]["strategy"] == "full_pool"


def test_budget_in_cost_units_truncates_the_last_batch(tmp_path):
    cfg = TINY.with_(rounds=None, budget=50.0)
    rows = run_cell(cfg, "difficulty", "random", 0, cache_dir=tmp_path)
    assert [r["n_labeled"] for r in rows] == [20, 40, 60, 70]
    assert rows[-1]["cost"] - rows[0]["cost"] == pytest.approx(50.0)
    # per-present-modality costs: items cost 1 + 0.5 per present modality = 2 here
    cfg2 = TINY.with_(rounds=None, budget=60.0, oracle=OracleConfig(cost_per_modality=0.5))
    rows2 = run_cell(cfg2, "difficulty", "random", 0, cache_dir=tmp_path)
    assert [r["n_labeled"] for r in rows2] == [20, 40, 50]
    assert rows2[0]["cost"] == pytest.approx(40.0)


def test_oracle_noise_cost_and_budget():
    sc = build_scenario(TINY.with_(scenario_params={**TINY.scenario_params, "n_items": 2000}), "difficulty", 0)
    o = SimulatedOracle(sc.pool, OracleConfig(noise_rate=0.2), budget=10, seed=3)
    assert o.flipped.mean() == pytest.approx(0.2, abs=0.03)
    assert (o.answers[o.flipped] != sc.pool.true_labels[o.flipped]).all()  # a flip is always wrong
    first = o.label([5, 1, 2])
    o2 = SimulatedOracle(sc.pool, OracleConfig(noise_rate=0.2), budget=10, seed=3)
    assert np.array_equal(o2.label([2]), first[2:])  # answers do not depend on the order of requests
    assert o.spent == 3 and o.remaining == 7
    assert list(o.affordable(np.arange(100, 120))) == list(range(100, 107))
    with pytest.raises(BudgetError, match="only 7"):
        o.label(np.arange(100, 120))
    with pytest.raises(DataError, match="outside"):
        o.label([5000])
    with pytest.raises(DataError, match="noise_rate"):
        OracleConfig(noise_rate=1.5)
    with pytest.raises(DataError, match="unknown modalities"):
        SimulatedOracle(sc.pool, OracleConfig(cost_per_modality={"zz": 1.0}))
    miss = build_scenario(TINY.with_(scenarios=("missing_mcar_50",)), "missing_mcar_50", 0)
    om = SimulatedOracle(miss.pool, OracleConfig(cost_per_item=1.0, cost_per_modality={"a": 2.0}))
    assert set(np.unique(om.item_costs)) == {1.0, 3.0}


def test_config_validation_and_suites():
    with pytest.raises(DataError, match="full_pool"):
        BenchmarkConfig(strategies=("full_pool",))
    with pytest.raises(DataError, match="rounds, budget"):
        BenchmarkConfig(rounds=None, budget=None)
    with pytest.raises(DataError, match="seeds"):
        BenchmarkConfig(seeds=(0, 0))
    assert BenchmarkConfig.from_dict(TINY.to_dict()).fingerprint() == TINY.fingerprint()
    paper = get_suite("paper")
    assert len(paper.seeds) >= 5 and "all" not in paper.strategies and len(paper.strategies) >= 6
    with pytest.raises(DataError, match="unknown suite"):
        get_suite("nope")
    with pytest.raises(DataError, match="unknown strategy 'nope'"):
        run_benchmark(TINY.with_(strategies=("nope",)), "/tmp/never-written", progress=False)
    assert len(plan_cells(TINY)) == 1 * 2 * (2 + 1)


def _no_duplicates(df: pd.DataFrame) -> bool:
    return not df.duplicated(["dataset", "strategy", "seed", "round"]).any()


def test_resume_after_interruption_runs_only_the_missing_cells(tmp_path):
    full = run_benchmark(TINY, tmp_path / "full", progress=False)
    assert len(full) == 2 * (1 + 2 * 3) and _no_duplicates(full)

    out = tmp_path / "interrupted"
    part = run_benchmark(TINY, out, progress=False, max_cells=2)
    assert len(completed_cells(out)) == 2 and _no_duplicates(part)
    assert json.loads((out / "run.json").read_text())["status"] == "incomplete"

    seen: list[str] = []

    def crash_after_one(cell):
        seen.append(cell.id)
        raise KeyboardInterrupt  # a real interruption in the middle of the run

    with pytest.raises(KeyboardInterrupt):
        run_benchmark(TINY, out, progress=False, on_cell=crash_after_one)
    assert len(completed_cells(out)) == 3
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "cells").glob("*.json")}

    ran: list[str] = []
    final = run_benchmark(TINY, out, progress=False, on_cell=lambda c: ran.append(c.id))
    assert len(ran) == len(plan_cells(TINY)) - 3  # nothing finished is recomputed
    assert all(c not in ran for c in seen)
    for name, t in stamps.items():
        assert (out / "cells" / name).stat().st_mtime_ns == t
    assert _no_duplicates(final)
    assert results_identical(full, final)
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "complete" and len(run["invocations"]) == 3
    assert {"config", "seeds", "packages", "machine", "recipes", "scenarios", "strategy_families"} <= set(run)
    assert run["packages"]["torch"] and run["machine"]["cpu_count"]
    # a finished run resumes to a no-op; a different config refuses the folder
    ran.clear()
    run_benchmark(TINY, out, progress=False, on_cell=lambda c: ran.append(c.id))
    assert ran == []
    with pytest.raises(DataError, match="different configuration"):
        run_benchmark(TINY.with_(rounds=3), out, progress=False)
    assert (out / "results.parquet").exists()
    assert pd.read_csv(out / "results.csv").shape == final.shape


def _redis():
    import redis

    conn = redis.Redis.from_url(REDIS_URL)
    conn.ping()  # a real redis-server must be up (.ci/run starts one): fail loudly, never skip
    return conn


def _start_workers(n: int, cache: Path) -> list[subprocess.Popen]:
    rq_bin = Path(sys.executable).parent / "rq"
    env = {**os.environ, "MMAL_CACHE_DIR": str(cache)}
    procs = []
    for i in range(n):
        procs.append(subprocess.Popen(
            [str(rq_bin), "worker", "-w", "benchmark.runner.BenchmarkWorker", "--url", REDIS_URL, QUEUE_NAME,
             "--name", f"mmal-test-{os.getpid()}-{i}"],
            env=env, cwd=str(Path(__file__).resolve().parents[1]), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT))
    return procs


def _stop_workers(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()  # warm shutdown of the workers this test started
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=10)


def test_rq_workers_give_identical_results(tmp_path):
    conn = _redis()
    conn.flushdb()
    cfg = TINY.with_(seeds=(0,))
    local = run_benchmark(cfg, tmp_path / "local", progress=False)
    workers = _start_workers(2, tmp_path / "worker-cache")
    try:
        t0 = time.time()
        queued = run_benchmark(cfg, tmp_path / "rq", progress=False, queue=REDIS_URL, poll_s=0.2)
        assert time.time() - t0 < 300
    finally:
        _stop_workers(workers)
    assert results_identical(local, queued)
    records = [json.loads(p.read_text()) for p in (tmp_path / "rq" / "cells").glob("*.json")]
    assert len(records) == len(plan_cells(cfg))
    assert all(r["pid"] != os.getpid() for r in records)  # computed in worker processes, not here
    # workers on this machine see the run folder and share its round-0 cache
    assert list((tmp_path / "rq" / "cache").glob("*.pt"))
    run = json.loads((tmp_path / "rq" / "run.json").read_text())
    assert run["invocations"][-1]["queue"] == REDIS_URL

    # finished jobs are kept in Redis: a new driver with the same config collects them without workers
    again = run_benchmark(cfg, tmp_path / "rq2", progress=False, queue=REDIS_URL, poll_s=0.1)
    assert results_identical(local, again)
    conn.flushdb()


def test_rq_worker_runs_multi_label_cells_identically(tmp_path):
    conn = _redis()
    conn.flushdb()
    cfg = TINY.with_(scenarios=("multilabel+missing_mcar_30",), seeds=(0,), reference=False)
    local = run_benchmark(cfg, tmp_path / "local", progress=False)
    assert local["micro_f1"].notna().all() and local["subset_accuracy"].notna().all()
    workers = _start_workers(1, tmp_path / "worker-cache")
    try:
        queued = run_benchmark(cfg, tmp_path / "rq", progress=False, queue=REDIS_URL, poll_s=0.2)
    finally:
        _stop_workers(workers)
    assert results_identical(local, queued)
    records = [json.loads(p.read_text()) for p in (tmp_path / "rq" / "cells").glob("*.json")]
    assert len(records) == 2 and all(r["pid"] != os.getpid() for r in records)
    conn.flushdb()


def test_unreachable_queue_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="cannot reach the queue"):
        run_benchmark(TINY, tmp_path, progress=False, queue="redis://127.0.0.1:1/0")


def test_recipe_chosen_on_validation_data_once_per_scenario(tmp_path):
    cfg = TINY.with_(seeds=(0,), strategies=("random",),
                     recipe_candidates=({"train": {"epochs": 1}}, {"train": {"epochs": 15, "lr": 1e-2}}))
    df = run_benchmark(cfg, tmp_path, progress=False)
    run = json.loads((tmp_path / "run.json").read_text())
    rec = run["recipes"]["difficulty"]
    assert len(rec["scores"]) == 2 and rec["chosen"] == int(np.argmax(rec["scores"]))
    assert rec["train"]["epochs"] == [1, 15][rec["chosen"]]
    assert rec["n_labeled"] == 20 + 40 // 2  # initial set + half the query budget
    # the recorded recipe is the one the cells used: rerunning the cell with it reproduces the rows
    rows = run_cell(cfg, "difficulty", "random", 0, recipe=rec["overrides"], cache_dir=tmp_path / "cache")
    assert _strip(rows) == _strip(df[df["strategy"] == "random"].to_dict("records"))
    with pytest.raises(DataError, match="recipe overrides"):
        run_cell(cfg, "difficulty", "random", 0, recipe={"optimizer": {}})


def test_local_worker_processes_give_identical_results(tmp_path):
    cfg = TINY.with_(seeds=(1,))
    one = run_benchmark(cfg, tmp_path / "one", progress=False)
    two = run_benchmark(cfg, tmp_path / "two", progress=False, workers=2)
    assert results_identical(one, two)
