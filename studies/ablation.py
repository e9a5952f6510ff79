"""Ablation of ``reducible_margin`` on the development seeds (100-103; the confirmatory run uses 0-7).

    .venv/bin/python -m studies.harness --name land --scenarios difficulty,missing_mnar_30,noisy_modality \
        --strategies random,entropy,margin,bald,badge,coreset,bmmal,reducible_margin,rm_noquota,rm_strat_only,\
rm_outlier_only,rm_absent,rm_quota25,rm_quota50,rm_z2,rm_nostrat_q25,ma_noquota,missing_aware,\
underrelied_uncertainty,head_disagreement --seeds 100-103
    .venv/bin/python -m studies.ablation land

Prints a markdown table: mean AUBC (points) per scenario, and the paired difference against margin
(the strategy every variant starts from) with its 95 % interval.
"""

from __future__ import annotations

import sys

import pandas as pd

from benchmark.metrics import aubc_table, t_interval
from studies.harness import load

ROWS = [
    ("margin", "base: fused margin"),
    ("rm_strat_only", "+ presence-pattern stratification"),
    ("rm_outlier_only", "+ outlying (corrupted) copies last"),
    ("rm_noquota", "+ stratification + outliers last"),
    ("reducible_margin", "+ stratification + outliers last + auto weak-modality quota (final)"),
    ("rm_quota25", "... with a fixed 25 % quota"),
    ("rm_quota50", "... with a fixed 50 % quota"),
    ("rm_nostrat_q25", "outliers last + fixed 25 % quota, no stratification"),
    ("rm_z2", "outlier threshold z = 2 instead of 3 (no quota)"),
    ("rm_absent", "outlying copies treated as absent (own stratum) instead of last"),
    ("ma_noquota", "margin minus estimated missing-modality excess (missing_aware, no quota)"),
    ("missing_aware", "existing: discounted margin + imbalance-sized weak quota"),
    ("underrelied_uncertainty", "existing: fused + weak-head entropy, mixed by imbalance"),
    ("head_disagreement", "existing: JS divergence of unimodal heads vs fused"),
]
BASELINES = ("random", "entropy", "margin", "bald", "badge", "coreset", "bmmal")


def table(name: str) -> str:
    """The markdown ablation table of runs/<name>."""
    t = aubc_table(load(name))
    wide = t.pivot_table(index=["dataset", "seed"], columns="strategy", values="aubc")
    datasets = list(dict.fromkeys(t["dataset"]))
    best = {ds: max(BASELINES, key=lambda b: wide.loc[ds][b].mean()) for ds in datasets}
    head = "| variant | " + " | ".join(f"{ds}: AUBC, vs margin [95 % CI]" for ds in datasets) + " |"
    lines = [head, "|" + "---|" * (len(datasets) + 1)]
    for st, what in ROWS + [(b, "baseline") for b in BASELINES if b != "margin"]:
        cells = []
        for ds in datasets:
            w = wide.loc[ds]
            if st not in w:
                cells.append("")
                continue
            m, lo, hi = t_interval((w[st] - w["margin"]).to_numpy() * 100)
            mark = " (best baseline)" if st == best[ds] else ""
            cells.append(f"{100 * w[st].mean():.2f}{mark}, {m:+.2f} [{lo:+.2f}, {hi:+.2f}]" if st != "margin"
                         else f"{100 * w[st].mean():.2f}{mark}")
        lines.append(f"| `{st}`: {what} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    pd.set_option("display.width", 250)
    print(table(sys.argv[1] if len(sys.argv) > 1 else "land"))
