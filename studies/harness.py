"""Small, resumable experiment harness for the modality-aware study (issue 7).

Why not ``mmal benchmark run``: the study names exploratory variants by short names (``studies.variants``:
specs of registered strategies, and settings of a strategy that is not a product strategy), and keeps one
file per cell under runs/<name>. Cells are the same ``benchmark.protocol.run_cell`` the benchmark runs
(same initial sets, same round-0 model, same recipe for every strategy), so numbers are comparable; the
variants' objects come from ``studies.variants.make_strategy`` (nothing is registered in the product).

    .venv/bin/python -m studies.harness --name dev --scenarios difficulty,missing_mnar_30 \
        --strategies margin,badge,pattern_margin --seeds 100-103 --workers 2
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import pandas as pd

from benchmark.metrics import DEFAULT_BASELINES, aubc_table, paired_vs_best_baseline, summarize
from benchmark.suites import BenchmarkConfig

DEV_PARAMS = {"n_items": 1500, "n_test": 1000, "n_val": 300, "dims": 12, "mc_samples": 20000}


def make_config(scenarios: list[str], strategies: list[str], seeds: list[int], **kw: Any) -> BenchmarkConfig:
    """The study's default protocol (small pool, 8 rounds of 60 after 60 random labels)."""
    base = dict(suite="study", scenario_params=dict(DEV_PARAMS), n_initial=60, batch_size=60, rounds=8,
                train_overrides={"epochs": 60, "patience": 10}, reference=False)
    base.update(kw)
    return BenchmarkConfig(scenarios=tuple(scenarios), strategies=tuple(strategies), seeds=tuple(seeds), **base)


def _job(cfg: dict, scenario: str, strategy: str, seed: int, cache: str) -> list[dict]:
    from benchmark.protocol import run_cell
    from studies.variants import make_strategy

    return run_cell(BenchmarkConfig.from_dict(cfg), scenario, strategy, seed, cache_dir=cache,
                    make_strategy=make_strategy)


def run(name: str, cfg: BenchmarkConfig, workers: int = 2) -> pd.DataFrame:
    """Run every missing cell into runs/<name>/cells and return all rows."""
    out = Path("runs") / name
    (out / "cells").mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1))
    todo = []
    for sc in cfg.scenarios:
        for seed in cfg.seeds:
            for st in cfg.strategies:
                f = out / "cells" / f"{sc.replace('+', '--')}__{st}__s{seed}.json"
                if not f.exists():
                    todo.append((sc, st, seed, f))
    t0 = time.time()
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as ex:
        futs = {ex.submit(_job, cfg.to_dict(), sc, st, seed, str(out / "cache")): f for sc, st, seed, f in todo}
        for i, fut in enumerate(as_completed(futs), 1):
            futs[fut].write_text(json.dumps(fut.result()))
            if i % 20 == 0 or i == len(todo):
                print(f"{i}/{len(todo)} cells, {time.time() - t0:.0f} s", flush=True)
    return load(name)


def load(name: str) -> pd.DataFrame:
    """All rows of runs/<name>."""
    rows = []
    for f in sorted((Path("runs") / name / "cells").glob("*.json")):
        rows.extend(json.loads(f.read_text()))
    return pd.DataFrame(rows)


def show(df: pd.DataFrame, baselines: tuple[str, ...] = DEFAULT_BASELINES) -> None:
    """Print mean AUBC per (scenario, strategy) and the paired table against the best baseline."""
    a = summarize(aubc_table(df), "aubc")
    piv = a.pivot(index="strategy", columns="dataset", values="mean") * 100
    pd.set_option("display.width", 250)
    pd.set_option("display.max_columns", 30)
    print(piv.round(2).to_string())
    p = paired_vs_best_baseline(df, baselines=baselines)
    if len(p):
        p = p.copy()
        for c in ("mean_diff", "low", "high"):
            p[c] = (p[c] * 100).round(2)
        print(p[["dataset", "strategy", "best_baseline", "mean_diff", "low", "high", "win_rate", "n"]].to_string(index=False))


def _seeds(s: str) -> list[int]:
    if "-" in s and "," not in s:
        a, b = s.split("-")
        return list(range(int(a), int(b) + 1))
    return [int(x) for x in s.split(",")]


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", required=True)
    ap.add_argument("--scenarios", required=True)
    ap.add_argument("--strategies", required=True)
    ap.add_argument("--seeds", default="100-103")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--show-only", action="store_true")
    args = ap.parse_args()
    cfg = make_config(args.scenarios.split(","), args.strategies.split(","), _seeds(args.seeds))
    df = load(args.name) if args.show_only else run(args.name, cfg, args.workers)
    df = df[df["dataset"].isin(cfg.scenarios) & df["strategy"].isin(cfg.strategies) & df["seed"].isin(cfg.seeds)]
    show(df)
