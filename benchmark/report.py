"""The benchmark report: PNG figures and one self-contained HTML page with the findings.

Why self-contained: a report is read long after the run, on another machine, often as an attachment;
images are embedded as base64 and nothing is fetched. Why the findings are computed, not written: the
seed paper's three claims are stated as true or false from this run's numbers by fixed rules
(:mod:`benchmark.metrics`), whatever they say, so a reader can check them against the tables.
Multi-label scenarios are drawn and summarised on micro-F1 (:func:`benchmark.metrics.headline_metric`)
and get their own table of micro-F1, macro-F1 and subset accuracy; a run may mix both kinds.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from backend.data import DataError
from backend.diagnostics import informativeness_shares
from backend.files import json_default
from benchmark import metrics as M
from benchmark.anchor import ANCHOR_COLUMNS

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22",
           "#7f7f7f", "#393b79", "#ad494a", "#637939", "#843c39"]
MOD_STYLES = ["-", "--", ":", "-."]


def _load(run_dir: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    from benchmark.runner import load_results

    df = load_results(run_dir)
    if df.empty:
        raise DataError(f"{run_dir / 'results.csv'} has no rows: the run finished no cell yet")
    rj = run_dir / "run.json"
    run = json.loads(rj.read_text()) if rj.exists() else {}
    return df, run


def _colors(strategies: list[str]) -> dict[str, str]:
    return {s: PALETTE[i % len(PALETTE)] for i, s in enumerate(strategies)}


def _save(fig: Figure, path: Path) -> str:
    """Write the PNG and return it base64-encoded for embedding."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    data = buf.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return base64.b64encode(data).decode("ascii")


def _truth(run: Mapping[str, Any], dataset: str) -> dict[str, float]:
    """Ground-truth informativeness of a scenario, averaged over its seeds (from run.json)."""
    per_seed = (run.get("scenarios") or {}).get(dataset) or {}
    acc: dict[str, list[float]] = {}
    for s in per_seed.values():
        for k, v in (s.get("informativeness") or {}).items():
            acc.setdefault(k, []).append(float(v))
    return {k: float(np.mean(v)) for k, v in acc.items()}


def _first_summary(run: Mapping[str, Any], dataset: str) -> dict[str, Any]:
    """The scenario summary of ``dataset``'s first seed in run.json ({} when absent)."""
    return dict(next(iter(((run.get("scenarios") or {}).get(dataset) or {}).values()), {}))


def _kind(run: Mapping[str, Any], dataset: str) -> str:
    """``"bayes"`` (synthetic ground truth) or ``"estimated"`` (real data: full-pool unimodal models)."""
    return str(_first_summary(run, dataset).get("informativeness_kind", "bayes"))


_OPTIMUM = {"bayes": "Bayes optimum", "estimated": "estimated optimum (full-pool model)"}
_METRIC_NAMES = {"accuracy": "accuracy", "micro_f1": "micro-F1"}
_ALONE = {"bayes": "Bayes accuracy of the modality alone",
          "estimated": "accuracy of a full-pool model of the modality alone (real data: no ground truth)"}


def _kinds_text(run: Mapping[str, Any], datasets: list[str], what: Mapping[str, str]) -> str:
    kinds = list(dict.fromkeys(_kind(run, ds) for ds in datasets)) or ["bayes"]
    if len(kinds) == 1:
        return what.get(kinds[0], kinds[0])
    return "; ".join(f"{what.get(k, k)} ({', '.join(ds for ds in datasets if _kind(run, ds) == k)})" for k in kinds)


def _grid(n: int, max_cols: int = 3) -> tuple[int, int]:
    cols = min(max_cols, n)
    return math.ceil(n / cols), cols


def plot_learning_curves(df: pd.DataFrame, run: Mapping[str, Any], path: Path) -> str:
    """Accuracy (multi-label: micro-F1) over cost per scenario: mean and 95 % band per strategy, full-pool
    and optimum lines (the optimum is an accuracy: not drawn on micro-F1 axes)."""
    curves = M.learning_curves(df)
    refs = M.reference_lines(df)
    datasets = list(dict.fromkeys(df["dataset"]))
    strategies = [s for s in dict.fromkeys(df["strategy"]) if s != M.REFERENCE]
    col = _colors(strategies)
    rows, cols = _grid(len(datasets))
    fig = Figure(figsize=(4.6 * cols, 3.4 * rows))
    for i, ds in enumerate(datasets):
        ax = fig.add_subplot(rows, cols, i + 1)
        for st in strategies:
            c = curves[(curves["dataset"] == ds) & (curves["strategy"] == st)]
            if c.empty:
                continue
            ax.plot(c["x"], c["mean"], color=col[st], label=st, lw=1.6)
            if c["low"].notna().any():
                ax.fill_between(c["x"], c["low"], c["high"], color=col[st], alpha=0.15, lw=0)
        r = refs[refs["dataset"] == ds]
        if len(r):
            ax.axhline(float(r["mean"].iloc[0]), color="black", ls="--", lw=1, label="full pool (upper ref.)")
            if np.isfinite(r["low"].iloc[0]):
                ax.axhspan(float(r["low"].iloc[0]), float(r["high"].iloc[0]), color="black", alpha=0.06, lw=0)
        _plot_anchor(ax, df, ds)
        metric = M.headline_metric(df[df["dataset"] == ds])
        t = _truth(run, ds)
        if "all" in t and metric == "accuracy":
            ax.axhline(t["all"], color="grey", ls=":", lw=1, label=_OPTIMUM.get(_kind(run, ds), "optimum"))
        ax.set_title(ds, fontsize=10)
        ax.set_xlabel("labelling cost")
        ax.set_ylabel(f"test {_METRIC_NAMES.get(metric, metric)}")
        ax.grid(alpha=0.3)
    seen: dict[str, Any] = {}  # every line once, from whichever panel has it (an optimum line may be absent)
    for ax in fig.axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(lab, h)
    fig.legend(list(seen.values()), list(seen), loc="lower center", ncol=min(len(seen), 5), fontsize=8,
               bbox_to_anchor=(0.5, -0.02))
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return _save(fig, path)


def _anchor_column(df: pd.DataFrame, ds: str) -> str:
    """The anchor's column on ``ds``'s curve metric (``anchor_acc``, or ``anchor_micro_f1`` for label sets)."""
    return ANCHOR_COLUMNS[M.headline_metric(df[df["dataset"] == ds])]


def _anchor_rows(df: pd.DataFrame, ds: str) -> pd.DataFrame:
    """Rows of ``ds`` whose labelled sets the anchor curve follows: random's (else the first strategy's)."""
    col = _anchor_column(df, ds)
    if col not in df.columns:
        return df.iloc[0:0]
    d = df[(df["dataset"] == ds) & (df["strategy"] != M.REFERENCE) & df[col].notna()]
    if d.empty:
        return d
    st = "random" if (d["strategy"] == "random").any() else d["strategy"].iloc[0]
    return d[d["strategy"] == st]


def _plot_anchor(ax: Any, df: pd.DataFrame, ds: str) -> None:
    """The linear-probe anchor (benchmark.anchor): on the anchor rows' labels, and on the whole pool."""
    d = _anchor_rows(df, ds)
    if d.empty:
        return
    col = _anchor_column(df, ds)
    c = d.groupby("round").agg(x=("cost", "mean"), y=(col, "mean"))
    ax.plot(c["x"], c["y"], color="dimgrey", ls="-.", lw=1.2, label=f"linear probe ({d['strategy'].iloc[0]}'s labels)")
    full = df[(df["dataset"] == ds) & (df["strategy"] == M.REFERENCE)]
    if len(full) and full[col].notna().any():
        ax.axhline(float(full[col].mean()), color="dimgrey", ls="-.", lw=0.8, label="linear probe, full pool")


def plot_modalities(df: pd.DataFrame, run: Mapping[str, Any], dataset: str, path: Path) -> str:
    """One scenario: contribution shares (top row) and representation gaps (bottom) over rounds, per strategy."""
    d = df[df["dataset"] == dataset]
    mods = M.modalities_of(df, dataset)
    strategies = [s for s in dict.fromkeys(d["strategy"]) if s != M.REFERENCE]
    t = _truth(run, dataset)
    deserved = {}
    if t and all(m in t for m in mods) and "chance" in t:
        deserved = informativeness_shares({m: t[m] for m in mods}, t["chance"])
    fig = Figure(figsize=(2.7 * len(strategies), 5.2))
    mcol = {m: PALETTE[j % len(PALETTE)] for j, m in enumerate(mods)}
    for j, st in enumerate(strategies):
        g = d[d["strategy"] == st]
        for row, prefix, ylabel in ((0, "contribution", "contribution share"), (1, "representation_gap", "representation gap")):
            ax = fig.add_subplot(2, len(strategies), row * len(strategies) + j + 1)
            for m in mods:
                c = M.learning_curves(g, y=f"{prefix}:{m}",
                                      bounds=M.ACCURACY_BOUNDS if prefix == "contribution" else M.GAP_BOUNDS)
                ax.plot(c["round"], c["mean"], color=mcol[m], label=m, lw=1.5)
                if c["low"].notna().any():
                    ax.fill_between(c["round"], c["low"], c["high"], color=mcol[m], alpha=0.15, lw=0)
                if row == 0 and m in deserved:
                    ax.axhline(deserved[m], color=mcol[m], ls=":", lw=1)
            if row == 0:
                ax.set_ylim(0, 1)
                ax.set_title(st, fontsize=9)
            else:
                ax.axhline(0, color="black", lw=0.6)
                ax.set_xlabel("round")
            if j == 0:
                ax.set_ylabel(ylabel, fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
    handles, labels = fig.axes[0].get_legend_handles_labels()
    fig.legend(handles, [f"modality {x}" for x in labels], loc="upper right", fontsize=8)
    fig.suptitle(f"{dataset}: reliance (dotted = share each modality deserves) and representation gap", fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.93, 0.95))
    return _save(fig, path)


def plot_penalty(p: pd.DataFrame, path: Path) -> str:
    """Heatmap of the pairwise penalty matrix (row beats column), with column means."""
    n = len(p)
    fig = Figure(figsize=(1.0 + 0.75 * n, 1.2 + 0.7 * n))
    ax = fig.add_subplot(1, 1, 1)
    vals = p.to_numpy(float)
    im = ax.imshow(vals, cmap="Reds", vmin=0, vmax=max(1e-9, float(np.nanmax(vals)) if vals.size else 1.0))
    ax.set_xticks(range(n), [f"{c}\n(mean {v:.2f})" for c, v in zip(p.columns, vals.mean(axis=0))], rotation=60,
                  ha="right", fontsize=7)
    ax.set_yticks(range(n), list(p.index), fontsize=7)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{vals[i, j]:.2f}", ha="center", va="center", fontsize=6,
                    color="white" if vals[i, j] > 0.6 * np.nanmax(vals) and vals[i, j] > 0 else "black")
    ax.set_xlabel("loser (column mean: how often it loses)", fontsize=8)
    ax.set_ylabel("winner", fontsize=8)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    return _save(fig, path)


# ----------------------------------------------------------------------------------------------
# HTML
# ----------------------------------------------------------------------------------------------
def _f(x: Any, nd: int = 3) -> str:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return html.escape(str(x))
    return "n/a" if not np.isfinite(v) else f"{v:.{nd}f}"


def _ci(mean: float, lo: float, hi: float) -> str:
    if not np.isfinite(lo):
        return _f(mean)
    return f"{_f(mean)} <span class=ci>[{_f(lo)}, {_f(hi)}]</span>"


def _table(header: list[str], rows: list[list[str]]) -> str:
    h = "".join(f"<th>{html.escape(c)}</th>" for c in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>"


def _verdict(v: bool | None) -> str:
    if v is None:
        return "<span class='v na'>NOT TESTABLE</span>"
    return "<span class='v t'>TRUE</span>" if v else "<span class='v f'>FALSE</span>"


def _aubc_html(df: pd.DataFrame, families: Mapping[str, str]) -> str:
    a = M.summarize(M.aubc_table(df), "aubc")
    fin = M.summarize(M.aubc_table(df), "final_accuracy")
    refs = M.reference_lines(df)
    datasets = list(dict.fromkeys(a["dataset"]))
    strategies = list(dict.fromkeys(a["strategy"]))
    rows = []
    for st in strategies:
        r = [f"<b>{html.escape(st)}</b> <span class=ci>{html.escape(families.get(st, ''))}</span>"]
        for ds in datasets:
            x = a[(a["dataset"] == ds) & (a["strategy"] == st)]
            y = fin[(fin["dataset"] == ds) & (fin["strategy"] == st)]
            if x.empty:
                r.append("")
                continue
            best = float(a[a["dataset"] == ds]["mean"].max())
            cell = _ci(*x[["mean", "low", "high"]].iloc[0])
            if np.isclose(float(x["mean"].iloc[0]), best):
                cell = f"<b>{cell}</b>"
            r.append(f"{cell}<br><span class=ci>final {_ci(*y[['mean', 'low', 'high']].iloc[0])}</span>")
        rows.append(r)
    ref = ["<i>full pool (upper reference)</i>"]
    for ds in datasets:
        x = refs[refs["dataset"] == ds]
        ref.append(_ci(*x[["mean", "low", "high"]].iloc[0]) if len(x) else "")
    rows.append(ref)
    anchor = ["<i>linear probe on random's labels (anchor)</i>"]
    for ds in datasets:
        d = _anchor_rows(df, ds)
        if d.empty:
            anchor.append("")
            continue
        x = M.summarize(M.aubc_table(d, y=_anchor_column(df, ds)), "aubc")
        anchor.append(_ci(*x[["mean", "low", "high"]].iloc[0]))
    if any(anchor[1:]):
        rows.append(anchor)
    heads = [ds if M.headline_metric(df[df["dataset"] == ds]) == "accuracy" else f"{ds} (micro-F1)" for ds in datasets]
    return _table(["strategy"] + heads, rows)


def _multilabel_html(df: pd.DataFrame, run: Mapping[str, Any]) -> str:
    """Per multi-label scenario: AUBC on micro-F1 and the final micro-F1, macro-F1 and subset accuracy of
    every strategy (mean [95 % t interval over seeds, cut at [0, 1]]) and of the full-pool model ('' if none)."""
    parts = []
    for ds in dict.fromkeys(df["dataset"]):
        d = df[df["dataset"] == ds]
        if M.headline_metric(d) != "micro_f1":
            continue
        au = M.summarize(M.aubc_table(d), "aubc")
        last = d[d["strategy"] != M.REFERENCE].sort_values("round").groupby(["strategy", "seed"]).tail(1)
        cols = ("micro_f1", "macro_f1", "subset_accuracy")
        rows = []
        for st in dict.fromkeys(au["strategy"]):
            a = au[au["strategy"] == st].iloc[0]
            ls = last[last["strategy"] == st]
            rows.append([f"<b>{html.escape(st)}</b>", _ci(a["mean"], a["low"], a["high"])]
                        + [_ci(*M.bounded_interval(ls[c])) for c in cols])
        ref = d[d["strategy"] == M.REFERENCE]
        if len(ref):
            rows.append(["<i>full pool (upper reference)</i>", ""] + [_ci(*M.bounded_interval(ref[c])) for c in cols])
        first = _first_summary(run, ds)
        size = first.get("label_cardinality")
        what = (f"{first.get('n_classes', '?')} classes, {_f(size, 2)} per item in the pool" if size is not None
                else "label sets")
        parts.append(f"<h3>{html.escape(ds)}</h3><p>{html.escape(what)}.</p>"
                     + _table(["strategy", "AUBC (micro-F1)", "final micro-F1", "final macro-F1",
                               "final subset accuracy"], rows))
    return "".join(parts)


def _paired_html(df: pd.DataFrame) -> str:
    """The paired-difference table of :func:`benchmark.metrics.paired_vs_best_baseline` ('' when not applicable)."""
    p = M.paired_vs_best_baseline(df)
    if p.empty:
        return ""
    rows = []
    for _, r in p.iterrows():
        d, lo, hi = 100 * r["mean_diff"], 100 * r["low"], 100 * r["high"]
        color = "#1a7f37" if lo > 0 else ("#cf222e" if hi < 0 else "inherit")
        rows.append([html.escape(str(r["dataset"])), f"<b>{html.escape(str(r['strategy']))}</b>",
                     html.escape(str(r["best_baseline"])),
                     f"<span style='color:{color}'>{d:+.2f} [{lo:+.2f}, {hi:+.2f}]</span>",
                     f"{100 * r['win_rate']:.0f} %", str(int(r["n"])),
                     f"{100 * r['strategy_mean']:.2f} / {100 * r['baseline_mean']:.2f}"])
    return _table(["scenario", "strategy", "best baseline", "paired AUBC difference (points)", "seeds won", "seeds",
                   "AUBC strategy / baseline"], rows)


def _claims_html(c1: Mapping[str, Any], c2: Mapping[str, Any], c3: Mapping[str, Any]) -> str:
    parts = []
    # claim 1
    rows = []
    for r in c1["per_scenario"]:
        rows.append([html.escape(r["dataset"]),
                     f"{html.escape(r['early_dominant'])} {_f(r['early_dominant_share'])}",
                     f"{html.escape(r['late_dominant'])} {_f(r['late_dominant_share'])}",
                     _f(r["reference_dominant_share"]),
                     ", ".join(f"{html.escape(m)} {_f(v)}" for m, v in r["early_gaps"].items()),
                     ", ".join(f"{html.escape(m)} {_f(v)}" for m, v in r["late_gaps"].items()),
                     _f(r["late_reliance_gap"]),
                     ("share " if r["by_share"] else "") + ("representation" if r["by_representation"] else "") or "no"])
    parts.append(f"<h3>Claim 1. {html.escape(c1['claim'])} {_verdict(c1['verdict'])}</h3>"
                 f"<p>By contribution share it holds in {c1['n_by_share']} of {c1['n_scenarios']} scenarios "
                 f"({_verdict(c1['share_verdict'])}); by representation gap in {c1['n_by_representation']} of "
                 f"{c1['n_scenarios']} ({_verdict(c1['representation_verdict'])}). Rule: {html.escape(c1['rule'])}.</p>"
                 + _table(["scenario", "early: dominant, share", "late: dominant, share", "full-pool model share",
                           "early representation gaps", "late representation gaps", "late reliance gap",
                           "relies on one (late)"], rows))
    # claim 2
    rows = [[html.escape(p["strategy"]), f"{p['n_fixed']} of {p['n_checked']}",
             html.escape(", ".join(p["fixed"]) or "-"), _f(p["mean_delta_dominant_share"]),
             _f(p["mean_delta_gap_spread"]), _f(p["mean_delta_reliance_gap"])] for p in c2["per_strategy"]]
    flagged = ", ".join(f"{html.escape(f['dataset'])} (share {_f(f['random_dominant_share'])}, gap spread "
                        f"{_f(f['random_gap_spread'])})" for f in c2["flagged"]) or "none"
    reason = f" ({html.escape(c2['reason'])})" if c2.get("reason") else ""
    parts.append(f"<h3>Claim 2. {html.escape(c2['claim'])} {_verdict(c2['verdict'])}{reason}</h3>"
                 f"<p>Scenarios where random sampling ends relying on one modality: {flagged}. "
                 f"Rule: {html.escape(c2.get('rule', ''))}. Deltas are strategy minus random, late in the budget "
                 "(negative = less reliance).</p>"
                 + _table(["strategy", "scenarios fixed", "which", "delta dominant share", "delta gap spread",
                           "delta reliance gap"], rows))
    # claim 3
    rows = [[html.escape(r["dataset"]), f"{html.escape(r['best_unimodal'])} {_f(r['best_unimodal_aubc'])}",
             f"{html.escape(r['best_multimodal'])} {_f(r['best_multimodal_aubc'])}", _f(r["unimodal_family_mean"]),
             _f(r["multimodal_family_mean"])] for r in c3["per_scenario"]]
    wins = "; ".join(f"{html.escape(p['strategy'])} beats the best unimodal strategy in {p['scenarios_beating_best_unimodal']} "
                     f"of {p['n_scenarios']} scenarios" for p in c3["per_strategy"]) or "-"
    reason = f" ({html.escape(c3['reason'])})" if c3.get("reason") else ""
    parts.append(f"<h3>Claim 3. {html.escape(c3['claim'])} {_verdict(c3['verdict'])}{reason}</h3>"
                 f"<p>Multimodal: {html.escape(', '.join(c3['multimodal']) or '-')}; unimodal: "
                 f"{html.escape(', '.join(c3['unimodal']) or '-')}. {wins}. Rule: {html.escape(c3['rule'])}.</p>"
                 + _table(["scenario", "best unimodal (AUBC)", "best multimodal (AUBC)", "unimodal mean",
                           "multimodal mean"], rows))
    return "\n".join(parts)


_CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1300px;color:#222}
table{border-collapse:collapse;margin:0.6em 0 1.4em;font-size:0.85em}td,th{border:1px solid #ccc;padding:3px 7px;vertical-align:top}
th{background:#f3f3f3}.ci{color:#777;font-size:0.85em}img{max-width:100%;border:1px solid #eee}
.v{padding:1px 8px;border-radius:4px;color:white;font-size:0.85em}.t{background:#2e7d32}.f{background:#c62828}.na{background:#777}
code,pre{background:#f6f6f6;padding:2px 4px}pre{padding:8px;overflow-x:auto;font-size:0.8em}"""


def build_report(run_dir: str | Path) -> Path:
    """Write ``run_dir/report.html`` and ``run_dir/figures/*.png`` from ``results.csv`` and ``run.json``."""
    run_dir = Path(run_dir)
    df, run = _load(run_dir)
    figs = run_dir / "figures"
    families = run.get("strategy_families") or {}
    strategies = [s for s in dict.fromkeys(df["strategy"]) if s != M.REFERENCE]
    families = {s: families.get(s, "unknown") for s in strategies}
    datasets = list(dict.fromkeys(df["dataset"]))

    img_curves = plot_learning_curves(df, run, figs / "learning_curves.png")
    pen = M.penalty_matrix(df)
    img_pen = plot_penalty(pen, figs / "penalty_matrix.png") if len(pen) > 1 else None
    img_mod = {ds: plot_modalities(df, run, ds, figs / f"modalities_{_safe(ds)}.png") for ds in datasets}
    c1, c2, c3 = M.claim_reliance(df), M.claim_strategies(df), M.claim_multimodal(df, families)
    findings = {"claim1": c1, "claim2": c2, "claim3": c3}
    (run_dir / "findings.json").write_text(json.dumps(findings, indent=1, default=json_default))

    cfg = run.get("config", {})
    parts = [f"<h1>mmal benchmark report: {html.escape(str(cfg.get('suite', run_dir.name)))}</h1>"]
    parts.append(f"<p>{len(datasets)} scenarios x {len(strategies)} strategies x "
                 f"{df['seed'].nunique()} seeds; {len(df)} result rows; status {html.escape(str(run.get('status', '?')))}; "
                 f"wall time {_f(run.get('wall_seconds_total', float('nan')), 1)} s.</p>")
    parts.append("<h2>Findings: the seed paper's three claims on this run</h2>" + _claims_html(c1, c2, c3))
    parts.append("<h2>Learning curves</h2><p>Mean test accuracy (multi-label scenarios: micro-F1) over seeds with "
                 "95 % t intervals cut at [0, 1]; dashed: the same "
                 "recipe trained on the whole pool (upper reference); dotted: "
                 f"{html.escape(_kinds_text(run, datasets, _OPTIMUM))}.</p>"
                 f"<img src='data:image/png;base64,{img_curves}'>")
    parts.append("<h2>Area under the budget curve</h2><p>AUBC (accuracy over labelling cost, normalised to [0, 1]; "
                 "micro-F1 for the scenarios marked so) mean [95 % t interval, cut at [0, 1]] over seeds; bold = best "
                 "per scenario; below it the final accuracy (micro-F1).</p>"
                 + _aubc_html(df, families))
    multi = _multilabel_html(df, run)
    if multi:
        parts.append("<h2>Multi-label scenarios</h2><p>Items carry sets of classes; a class is predicted when its "
                     "sigmoid is at least 1/2. Micro-F1 pools every (item, class) decision; macro-F1 averages the "
                     "per-class F1 (0 for a class never predicted correctly); subset accuracy counts items whose whole "
                     "set is right (it is also these scenarios' <code>accuracy</code> column, and what their "
                     "informativeness, head accuracies and representation gaps measure). Final budget, mean [95 % t "
                     "interval] over seeds.</p>" + multi)
    paired = _paired_html(df)
    if paired:
        parts.append("<h2>New strategies against the best baseline (paired over seeds)</h2><p>AUBC of each strategy "
                     f"that is not one of the baselines ({', '.join(M.DEFAULT_BASELINES)}) minus the AUBC of the "
                     "scenario's best baseline (highest mean AUBC, chosen after the fact), in AUBC points, paired by "
                     "seed: mean [95 % t interval], share of seeds won, seeds. Green: interval above zero; red: below."
                     "</p>" + paired)
    if img_pen is not None:
        parts.append("<h2>Pairwise penalty matrix</h2><p>Share of (scenario, budget point) pairs where the row strategy "
                     "is significantly better than the column strategy (paired t-test over seeds, p &lt; 0.05).</p>"
                     f"<img src='data:image/png;base64,{img_pen}'>")
    parts.append("<h2>Modality reliance over rounds</h2><p>Top: dataset-level Shapley contribution share of each "
                 "modality (dotted: the share its ground-truth informativeness deserves). Bottom: representation gap "
                 f"= {html.escape(_kinds_text(run, datasets, _ALONE))} minus the accuracy of the model's own head "
                 "for it (multi-label: subset accuracies on both sides).</p>")
    for ds in datasets:
        parts.append(f"<h3>{html.escape(ds)}</h3><img src='data:image/png;base64,{img_mod[ds]}'>")
    parts.append("<h2>Scenarios and ground truth</h2>" + _scenarios_html(run, datasets))
    parts.append("<h2>Training recipe (identical for every strategy)</h2>" + _recipes_html(run, datasets))
    parts.append("<h2>Cost of the strategies</h2>" + _timing_html(df))
    parts.append("<h2>Run</h2><pre>" + html.escape(json.dumps({k: run.get(k) for k in
                 ("config", "seeds", "packages", "machine", "invocations", "fingerprint")}, indent=1, default=str)) + "</pre>")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>mmal benchmark report</title>"
            f"<style>{_CSS}</style></head><body>{''.join(parts)}</body></html>")
    out = run_dir / "report.html"
    out.write_text(page, encoding="utf-8")
    return out


def _scenarios_html(run: Mapping[str, Any], datasets: list[str]) -> str:
    rows = []
    for ds in datasets:
        per_seed = (run.get("scenarios") or {}).get(ds) or {}
        first = next(iter(per_seed.values()), {})
        t = _truth(run, ds)
        mods = first.get("modalities", [])
        rows.append([html.escape(ds), html.escape(first.get("description", "")),
                     ", ".join(f"{html.escape(m)} {_f(t.get(m))}" for m in mods), _f(t.get("all")), _f(t.get("chance")),
                     ", ".join(f"{html.escape(m)} {_f(v, 2)}" for m, v in (first.get("presence_rate") or {}).items()),
                     f"{first.get('n_pool', '?')} / {first.get('n_test', '?')}"])
    how = {"bayes": "Bayes-optimal accuracy of the generating process (Monte Carlo on fresh samples)",
           "estimated": "test accuracy of the recipe trained on the whole pool with that modality alone (real data)"}
    multi = [ds for ds in datasets if _first_summary(run, ds).get("multi_label")]
    sets = (f" Multi-label scenarios ({html.escape(', '.join(multi))}): subset accuracies (the most probable whole "
            "set; chance = the most frequent set).") if multi else ""
    return (f"<p>Informativeness = {html.escape(_kinds_text(run, datasets, how))}, mean over seeds.{sets}</p>"
            + _table(["scenario", "what it isolates", "each modality alone", "all together", "chance", "presence rate",
                      "pool / test"], rows))


def _recipes_html(run: Mapping[str, Any], datasets: list[str]) -> str:
    rows = []
    for ds in datasets:
        r = (run.get("recipes") or {}).get(ds) or {}
        tr, fu = r.get("train", {}), r.get("fusion", {})
        chosen = "default" if r.get("chosen") is None else \
            f"candidate {r['chosen']} of {len(r.get('scores', []))} (val acc {', '.join(_f(s) for s in r.get('scores', []))})"
        rows.append([html.escape(ds), html.escape(f"{fu.get('kind')} hidden={fu.get('hidden')} embed={fu.get('embed_dim')} "
                                                  f"dropout={fu.get('dropout')}"),
                     html.escape(f"epochs<={tr.get('epochs')} lr={tr.get('lr')} wd={tr.get('weight_decay')} "
                                 f"batch={tr.get('batch_size')} patience={tr.get('patience')} val={tr.get('val_fraction')} "
                                 f"aux={tr.get('aux_weight')} warm_start={tr.get('warm_start')}"), html.escape(chosen)])
    return ("<p>Retrained from scratch every round (unless warm_start) with early stopping on a validation split of the "
            "labelled items; chosen once per scenario on validation data, never on the test set.</p>"
            + _table(["scenario", "fusion", "training", "selection"], rows))


def _timing_html(df: pd.DataFrame) -> str:
    d = df[(df["strategy"] != M.REFERENCE) & (df["round"] > 0)]
    if d.empty:
        return "<p>No query rounds.</p>"
    g = d.groupby("strategy", sort=False)[["query_seconds", "train_seconds"]].mean()
    rows = [[html.escape(s), _f(r["query_seconds"], 4), _f(r["train_seconds"], 3)] for s, r in g.iterrows()]
    return _table(["strategy", "mean query seconds per round", "mean train seconds per round"], rows)


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name.replace("+", "--"))
