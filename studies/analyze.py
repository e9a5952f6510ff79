"""Verdicts for goals 1-3 of issue 7 from a benchmark run folder (``mmal benchmark run --suite modality``).

    .venv/bin/python -m studies.analyze runs/modality [--candidate reducible_margin]

Goal 1 (win where modalities matter): on every goal-1 scenario the candidate beats the best of the
seven baselines by >= 1 AUBC point, paired over >= 8 seeds, wins >= 80 % of them, 95 % interval > 0.
Goal 2 (lose nowhere): on balanced, redundancy, uniqueness, synergy at most 0.3 points below the best.
Goal 3 (reverse the neglect): at mid-budget every modality's representation gap (Bayes accuracy of
the modality alone on items having it minus its own head's accuracy) is <= 10 % of that Bayes
accuracy under the candidate, on scenarios where the best baseline's (best by AUBC) is larger.
Reads cells/*.json, so it works on a run that is still going.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.metrics import DEFAULT_BASELINES, aubc_table, paired_vs_best_baseline, summarize

GOAL1 = ("missing_mcar_10", "missing_mcar_30", "missing_mcar_50", "missing_mnar_10", "missing_mnar_30",
         "missing_mnar_50", "difficulty", "noisy_modality")
GOAL2 = ("balanced", "redundancy", "uniqueness", "synergy")


def load_cells(run: Path) -> tuple[pd.DataFrame, dict]:
    """All rows of the finished cells, and run.json."""
    rows = []
    for f in sorted((run / "cells").glob("*.json")):
        rows.extend(json.loads(f.read_text())["rows"])
    meta = json.loads((run / "run.json").read_text())
    return pd.DataFrame(rows), meta


def goal_tables(df: pd.DataFrame, candidate: str) -> pd.DataFrame:
    """The paired table of ``candidate`` with the goal-1 / goal-2 verdict per scenario."""
    p = paired_vs_best_baseline(df, candidates=[candidate])
    out = []
    for _, r in p.iterrows():
        d = 100 * r["mean_diff"]
        lo, hi = 100 * r["low"], 100 * r["high"]
        if r["dataset"] in GOAL1:
            goal, met = 1, bool(d >= 1.0 and r["win_rate"] >= 0.8 and lo > 0 and r["n"] >= 8)
        elif r["dataset"] in GOAL2:
            goal, met = 2, bool(d >= -0.3)
        else:
            goal, met = 0, None
        out.append({"goal": goal, "scenario": r["dataset"], "best_baseline": r["best_baseline"],
                    "diff_points": round(d, 2), "ci_low": round(lo, 2), "ci_high": round(hi, 2),
                    "win_rate": round(float(r["win_rate"]), 2), "seeds": int(r["n"]),
                    "ours": round(100 * r["strategy_mean"], 2), "best_baseline_aubc": round(100 * r["baseline_mean"], 2),
                    "met": met})
    return pd.DataFrame(out).sort_values(["goal", "scenario"])


def gap_table(df: pd.DataFrame, meta: dict, candidate: str) -> pd.DataFrame:
    """Goal 3: relative representation gaps at mid-budget, candidate vs best-AUBC baseline vs least-gap baseline."""
    a = summarize(aubc_table(df), "aubc")
    out = []
    for ds, d in df.groupby("dataset", sort=False):
        mods = [c.split(":", 1)[1] for c in d.columns if c.startswith("representation_gap:") and d[c].notna().any()]
        mid = int(d["round"].max()) // 2
        dm = d[d["round"] == mid]
        achievable = {m: float(np.mean([s["informativeness_present"][m] for s in meta["scenarios"][ds].values()]))
                      for m in mods}
        aa = a[(a["dataset"] == ds) & a["strategy"].isin(DEFAULT_BASELINES)]
        best = aa.loc[aa["mean"].idxmax(), "strategy"]

        def rel(st: str) -> dict[str, float]:
            g = dm[dm["strategy"] == st]
            return {m: float(g[f"representation_gap:{m}"].mean() / achievable[m]) for m in mods}

        ours, base = rel(candidate), rel(best)
        least = min((s for s in DEFAULT_BASELINES if s in set(dm["strategy"])), key=lambda s: max(rel(s).values()))
        out.append({"scenario": ds, "mid_round": mid, "best_baseline": best,
                    "ours_max_rel_gap": round(max(ours.values()), 3),
                    "best_baseline_max_rel_gap": round(max(base.values()), 3),
                    "least_gap_baseline": least, "least_gap_baseline_max_rel_gap": round(max(rel(least).values()), 3),
                    "ours_gaps": {m: round(v, 3) for m, v in ours.items()},
                    "met": bool(max(ours.values()) <= 0.10 and max(base.values()) > max(ours.values()))})
    return pd.DataFrame(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path)
    ap.add_argument("--candidate", default="reducible_margin")
    a = ap.parse_args()
    df, meta = load_cells(a.run)
    pd.set_option("display.width", 250)
    pd.set_option("display.max_columns", 30)
    pd.set_option("display.max_colwidth", 60)
    aubc = summarize(aubc_table(df), "aubc")
    print((aubc.pivot(index="strategy", columns="dataset", values="mean") * 100).round(2).to_string())
    print()
    print(goal_tables(df, a.candidate).to_string(index=False))
    print()
    print(gap_table(df, meta, a.candidate).to_string(index=False))


if __name__ == "__main__":
    main()
