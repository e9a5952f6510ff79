"""paired_vs_best_baseline: paired differences against the scenario's best baseline, by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from benchmark.metrics import paired_vs_best_baseline


def _rows(strategy: str, accs: list[tuple[float, float]], dataset: str = "d") -> list[dict]:
    """Two rounds per seed (cost 10 -> 20): AUBC = mean of the two accuracies."""
    out = []
    for seed, (a0, a1) in enumerate(accs):
        out.append({"dataset": dataset, "strategy": strategy, "seed": seed, "round": 0, "cost": 10.0, "accuracy": a0})
        out.append({"dataset": dataset, "strategy": strategy, "seed": seed, "round": 1, "cost": 20.0, "accuracy": a1})
    return out


def test_paired_against_best_baseline_by_hand() -> None:
    df = pd.DataFrame(_rows("random", [(0.5, 0.6), (0.5, 0.6), (0.5, 0.6)])  # AUBC 0.55 each seed
                      + _rows("margin", [(0.5, 0.7), (0.5, 0.7), (0.5, 0.9)])  # 0.60, 0.60, 0.70: best baseline
                      + _rows("ours", [(0.5, 0.8), (0.5, 0.6), (0.5, 0.9)]))  # 0.65, 0.55, 0.70
    p = paired_vs_best_baseline(df)
    assert list(p["strategy"]) == ["ours"]
    r = p.iloc[0]
    assert r["best_baseline"] == "margin"
    diffs = np.array([0.05, -0.05, 0.0])
    assert r["mean_diff"] == pytest.approx(diffs.mean(), abs=1e-12)
    assert r["win_rate"] == pytest.approx(1 / 3)
    assert r["n"] == 3 and r["low"] < r["mean_diff"] < r["high"]
    assert r["strategy_mean"] == pytest.approx(np.mean([0.65, 0.55, 0.70]))


def test_paired_without_baselines_is_empty() -> None:
    df = pd.DataFrame(_rows("ours", [(0.5, 0.6), (0.5, 0.7)]))
    assert paired_vs_best_baseline(df).empty
    with pytest.raises(Exception, match="value"):
        paired_vs_best_baseline(pd.DataFrame(_rows("random", [(0.5, 0.6)])), value="nope")
