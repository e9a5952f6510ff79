"""The Markdown (and CSV) tables of a finished run, as ``mmal benchmark table`` prints them and docs/ and
the README show them: per scenario and strategy (:func:`results_table`, :func:`table_markdown`) and one
scenarios x strategies matrix (:func:`matrix_markdown`).

Why a module of its own: :mod:`benchmark.cli` keeps only commands and flag parsing; tests regenerate the
README's table from here. Heavy modules are imported inside the functions, so importing this one stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence


def results_table(run_dir: Path) -> list[dict[str, Any]]:
    """One row per (scenario, strategy) of a finished run, the full-pool reference last per scenario.

    Columns: final-budget accuracy and AUBC (mean and 95 % t interval over seeds, cut at [0, 1]:
    :func:`benchmark.metrics.bounded_interval`), the AUBC difference to ``random`` paired by seed
    (mean and 95 % t half-width), the final-round modality
    contribution shares, representation gaps and reliance gap (means over seeds) and the scenario's
    informativeness (estimated for real data). ``metric`` names what final value and AUBC are of: accuracy,
    or for a multi-label scenario micro-F1, whose rows also carry the final macro-F1 and subset accuracy
    (``final_macro_f1``, ``final_subset_accuracy``, each with ``_low`` / ``_high``).
    """
    import json

    import numpy as np

    from benchmark.metrics import aubc_table, bounded_interval, headline_metric, t_interval
    from benchmark.runner import load_results

    df = load_results(run_dir)
    run = json.loads((Path(run_dir) / "run.json").read_text())
    table = aubc_table(df)
    rows: list[dict[str, Any]] = []

    def half(v: Any) -> tuple[float, float]:
        m, lo, hi = t_interval(v)
        return m, (hi - m) if np.isfinite(hi) else float("nan")

    def finals(g: Any, metric: str) -> dict[str, Any]:
        """The other multi-label scores at the final budget, mean and interval over these rows."""
        out: dict[str, Any] = {"metric": metric}
        for c in (("macro_f1", "subset_accuracy") if metric == "micro_f1" else ()):
            out[f"final_{c}"], out[f"final_{c}_low"], out[f"final_{c}_high"] = bounded_interval(g[c])
        return out

    for ds in dict.fromkeys(df["dataset"]):
        d = df[df["dataset"] == ds]
        metric = headline_metric(d)
        mods = [c.split(":", 1)[1] for c in d.columns if c.startswith("contribution:") and d[c].notna().any()]
        per_seed = (run.get("scenarios") or {}).get(ds) or {}
        info = {m: float(np.mean([s["informativeness"][m] for s in per_seed.values()])) for m in mods} if per_seed else {}
        kind = next(iter(per_seed.values()), {}).get("informativeness_kind", "bayes")
        t = table[table["dataset"] == ds]
        base = t[t["strategy"] == "random"].set_index("seed")["aubc"]
        last = d[d["strategy"] != "full_pool"].sort_values("round").groupby(["strategy", "seed"]).tail(1)
        for st in dict.fromkeys(t["strategy"]):
            ts = t[t["strategy"] == st]
            acc, acc_lo, acc_hi = bounded_interval(ts["final_accuracy"])
            au, au_lo, au_hi = bounded_interval(ts["aubc"])
            diff = ts.set_index("seed")["aubc"] - base
            dm, dh = half(diff.dropna()) if st != "random" else (float("nan"), float("nan"))
            ls = last[last["strategy"] == st]
            rows.append({"scenario": ds, "strategy": st, "n_seeds": len(ts), "final_labels": float(ts["final_cost"].mean()),
                         "final_acc": acc, "final_acc_low": acc_lo, "final_acc_high": acc_hi,
                         "aubc": au, "aubc_low": au_lo, "aubc_high": au_hi, "d_aubc_vs_random": dm, "d_aubc_ci": dh,
                         **finals(ls, metric),
                         **{f"contribution:{m}": float(ls[f"contribution:{m}"].mean()) for m in mods},
                         **{f"representation_gap:{m}": float(ls[f"representation_gap:{m}"].mean()) for m in mods},
                         "reliance_gap": float(ls["reliance_gap"].mean()),
                         **{f"informativeness:{m}": info.get(m, float("nan")) for m in mods},
                         "informativeness_kind": kind})
        ref = d[d["strategy"] == "full_pool"]
        if len(ref):
            acc, acc_lo, acc_hi = bounded_interval(ref[metric])
            rows.append({"scenario": ds, "strategy": "full_pool", "n_seeds": len(ref),
                         "final_labels": float(ref["cost"].mean()),
                         "final_acc": acc, "final_acc_low": acc_lo, "final_acc_high": acc_hi, "aubc": float("nan"),
                         "aubc_low": float("nan"), "aubc_high": float("nan"),
                         "d_aubc_vs_random": float("nan"), "d_aubc_ci": float("nan"), **finals(ref, metric),
                         **{f"contribution:{m}": float(ref[f"contribution:{m}"].mean()) for m in mods},
                         **{f"representation_gap:{m}": float(ref[f"representation_gap:{m}"].mean()) for m in mods},
                         "reliance_gap": float(ref["reliance_gap"].mean()),
                         **{f"informativeness:{m}": info.get(m, float("nan")) for m in mods},
                         "informativeness_kind": kind})
    return rows


def _pm(m: float, h: float, nd: int = 3) -> str:
    import math

    if not math.isfinite(m):
        return "–"
    return f"{m:.{nd}f} ± {h:.{nd}f}" if math.isfinite(h) else f"{m:.{nd}f}"


def _band(m: float, lo: float, hi: float, nd: int = 3) -> str:
    """``mean [low, high]`` (an interval cut at [0, 1] is not symmetric, so no ±), or the mean alone."""
    import math

    if not math.isfinite(m):
        return "–"
    return f"{m:.{nd}f} [{lo:.{nd}f}, {hi:.{nd}f}]" if math.isfinite(lo) else f"{m:.{nd}f}"


def table_markdown(rows: list[dict[str, Any]]) -> str:
    """The :func:`results_table` rows as one Markdown table per scenario (what docs/ shows)."""
    out: list[str] = []
    for ds in dict.fromkeys(r["scenario"] for r in rows):
        rs = [r for r in rows if r["scenario"] == ds]
        mods = [k.split(":", 1)[1] for k in rs[0] if k.startswith("contribution:")]
        kind = rs[0]["informativeness_kind"]
        info = ", ".join(f"{m} {rs[0][f'informativeness:{m}']:.3f}" for m in mods)
        what = "estimated: full-pool unimodal model" if kind == "estimated" else "Bayes-optimal"
        multi = rs[0].get("metric") == "micro_f1"
        sets = (" Multi-label: AUBC and the final value are micro-F1; informativeness, gaps and subset accuracy "
                "count whole sets." if multi else "")
        out.append(f"### {ds}\n\nEach modality alone ({what}, mean over seeds): {info}. Final budget: "
                   f"{rs[0]['final_labels']:.0f} cost units (1 per label, initial set included). Contributions "
                   f"and gaps: final round, mean over seeds.{sets}\n")
        extra = ["final macro-F1", "final subset accuracy"] if multi else []
        head = (["strategy", "final micro-F1 [95 % CI]" if multi else "final accuracy [95 % CI]",
                 "AUBC micro-F1 [95 % CI]" if multi else "AUBC [95 % CI]", "Δ AUBC vs random (paired)"] + extra
                + [f"contribution {m}" for m in mods]
                + [f"repr. gap {m}" for m in mods] + ["reliance gap"])
        out.append("| " + " | ".join(head) + " |")
        out.append("|" + "---|" * len(head))
        for r in rs:
            name = "full pool (reference)" if r["strategy"] == "full_pool" else r["strategy"]
            cells = [name, _band(r["final_acc"], r["final_acc_low"], r["final_acc_high"]),
                     _band(r["aubc"], r["aubc_low"], r["aubc_high"]),
                     _pm(r["d_aubc_vs_random"], r["d_aubc_ci"])] \
                + [_band(r[f"final_{c}"], r[f"final_{c}_low"], r[f"final_{c}_high"])
                   for c in (("macro_f1", "subset_accuracy") if multi else ())] \
                + [f"{r[f'contribution:{m}']:.2f}" for m in mods] \
                + [f"{r[f'representation_gap:{m}']:+.3f}" for m in mods] + [f"{r['reliance_gap']:.3f}"]
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def ours_strategies(names: Sequence[str]) -> list[str]:
    """The names (or specs) among ``names`` that are our modality-aware strategies (``origin`` ours)."""
    from backend.strategies import QueryError, StrategySpec

    out = []
    for n in names:
        try:
            if StrategySpec.parse(n).strategy_class.origin == "ours":
                out.append(n)
        except QueryError:  # a name from another version's registry: not ours
            continue
    return out


def matrix_markdown(run_dir: Path) -> str:
    """One Markdown table for a whole run: scenarios x strategies, mean AUBC in points (best in bold),
    then our best modality-aware strategy against the best of the seven baselines, paired by seed.

    Why: the README's results table must come straight from a run folder, so it can be regenerated
    and checked. Both "bests" are chosen after the fact by mean AUBC, which favours neither side
    systematically but makes the comparison optimistic for whichever has more members.
    """
    from benchmark.metrics import DEFAULT_BASELINES, aubc_table, paired_vs_best_baseline
    from benchmark.runner import load_results

    df = load_results(run_dir)
    df = df[df["strategy"] != "full_pool"]
    table = aubc_table(df)
    strategies = list(dict.fromkeys(table["strategy"]))
    ours = ours_strategies(strategies)
    means = table.groupby(["dataset", "strategy"], sort=False)["aubc"].mean().unstack("strategy")
    seeds = table.groupby("dataset", sort=False)["seed"].nunique()
    head = ["scenario", "seeds"] + [f"{s} (ours)" if s in ours else s for s in strategies]
    head += ["best ours − best baseline [95 % CI], seeds won"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for ds in dict.fromkeys(table["dataset"]):
        row = means.loc[ds]
        top = row.max()
        cells = [ds, str(int(seeds[ds]))]
        cells += [("**%.2f**" if row[s] == top else "%.2f") % (100 * row[s]) if s in row and row[s] == row[s] else ""
                  for s in strategies]
        verdict = ""
        if ours and any(b in strategies for b in DEFAULT_BASELINES):
            best_ours = max(ours, key=lambda s: row.get(s, float("-inf")))
            p = paired_vs_best_baseline(df[df["dataset"] == ds], candidates=[best_ours])
            if len(p):
                r = p.iloc[0]
                verdict = (f"{best_ours} − {r['best_baseline']}: {100 * r['mean_diff']:+.2f} "
                           f"[{100 * r['low']:+.2f}, {100 * r['high']:+.2f}], {round(r['win_rate'] * r['n'])}/{r['n']}")
        lines.append("| " + " | ".join(cells + [verdict]) + " |")
    return "\n".join(lines) + "\n"
