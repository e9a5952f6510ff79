"""Issue 17: compare two benchmark runs that differ only in the training recipe (e.g. ``--train recipe=probe``).

Prints markdown tables for docs/model_recipe.md: per scenario and strategy the AUBC of each run and of the
linear-probe anchor (on the same labelled sets), the paired AUBC difference over seeds with a 95 % t
interval and the seeds won, the accuracy at each budget against the anchor (goal 1), and the full-pool
model against its best modality alone (goal 2).

    .venv/bin/python -m studies.model_recipe RUN_BASELINE RUN_NEW
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd

from benchmark import metrics as M
from benchmark.runner import load_results


def _aubc(df: pd.DataFrame, y: str = "accuracy") -> pd.DataFrame:
    return M.aubc_table(df[df["strategy"] != M.REFERENCE], y=y).set_index(["dataset", "strategy", "seed"])["aubc"]


def compare(old: pd.DataFrame, new: pd.DataFrame) -> str:
    """The markdown tables (AUBC in points: x 100)."""
    a_old, a_new, a_anc = _aubc(old), _aubc(new), _aubc(new, "anchor_acc")
    out = ["| scenario | strategy | AUBC old | AUBC new | anchor AUBC | new - old [95 % CI] | seeds won | new - anchor [95 % CI] |",
           "|---|---|---|---|---|---|---|---|"]
    for (ds, st), g in a_new.groupby(level=[0, 1], sort=False):
        seeds = g.index.get_level_values(2)
        o = a_old.loc[ds, st].reindex(seeds).to_numpy()
        n = g.to_numpy()
        anc = a_anc.loc[ds, st].reindex(seeds).to_numpy()
        d, lo, hi = M.t_interval(100 * (n - o))
        e, elo, ehi = M.t_interval(100 * (n - anc))
        out.append(f"| {ds} | {st} | {100 * np.nanmean(o):.2f} | {100 * np.nanmean(n):.2f} | {100 * np.nanmean(anc):.2f} | "
                   f"{d:+.2f} [{lo:+.2f}, {hi:+.2f}] | {int((n > o).sum())}/{len(n)} | {e:+.2f} [{elo:+.2f}, {ehi:+.2f}] |")
    out += ["", "Mean accuracy at each number of labels (new recipe, old recipe, anchor on the new run's labels):", "",
            "| scenario | strategy | " + " | ".join(str(int(x)) for x in sorted(new["n_labeled"][new["strategy"] != M.REFERENCE].unique())) + " |",
            "|---|---|" + "---|" * new["n_labeled"][new["strategy"] != M.REFERENCE].nunique()]
    for (ds, st), g in new[new["strategy"] != M.REFERENCE].groupby(["dataset", "strategy"], sort=False):
        go = old[(old["dataset"] == ds) & (old["strategy"] == st)]
        cells = []
        for k, h in g.groupby("n_labeled"):
            ho = go[go["n_labeled"] == k]
            cells.append(f"{100 * h['accuracy'].mean():.1f} / {100 * ho['accuracy'].mean():.1f} / {100 * h['anchor_acc'].mean():.1f}")
        out.append(f"| {ds} | {st} | " + " | ".join(cells) + " |")
    out += ["", "Full pool (mean over seeds): fused accuracy, its best modality's own head, the anchor:", "",
            "| scenario | old fused | old best head | new fused | new best head | anchor |", "|---|---|---|---|---|---|"]
    for ds in dict.fromkeys(new["dataset"]):
        row = [ds]
        for df in (old, new):
            f = df[(df["dataset"] == ds) & (df["strategy"] == M.REFERENCE)]
            heads = [c for c in f.columns if c.startswith("unimodal_acc:")]
            row += [f"{100 * f['accuracy'].mean():.1f}", f"{100 * f[heads].mean().max():.1f}"]
        f = new[(new["dataset"] == ds) & (new["strategy"] == M.REFERENCE)]
        row.append(f"{100 * f['anchor_acc'].mean():.1f}")
        out.append("| " + " | ".join(row) + " |")
    return "\n".join(out)


if __name__ == "__main__":
    print(compare(load_results(sys.argv[1]), load_results(sys.argv[2])))
