"""Summary statistics of a benchmark run: AUBC, confidence intervals, penalty matrices, the three claims.

Why these: single final accuracies at one budget hide where strategies differ, so the area under the
budget curve (AUBC, Zhan et al. 2021) summarises a whole run; seeds differ more than strategies in
small studies, so every number comes with a 95 % interval over seeds (for accuracies, AUBC and shares:
:func:`bounded_interval`, which never leaves [0, 1]); and pairwise penalty matrices
(Ash et al. 2020, Lueth et al. 2023) count significant wins at every budget point instead of
averaging differences away.

Multi-label scenarios (rows with a ``micro_f1`` value) are summarised on micro-F1 instead of accuracy
(:func:`headline_metric`; their ``accuracy`` is the subset accuracy, see :mod:`benchmark.scores`): every
function whose ``y`` defaults to None picks each dataset's own metric, so one run can mix both kinds.
"""

from __future__ import annotations

import math
import re
from typing import Any, Mapping

import numpy as np
import pandas as pd
from scipy import stats

from backend.data import DataError
from benchmark.scores import HEADLINE

REFERENCE = "full_pool"
BASELINE = "random"
GAP_THRESHOLD = 0.10  # representation gaps differing by this much = one modality is neglected
SHARE_MARGIN = 0.20  # dominant share >= 1/M + SHARE_MARGIN * (1 - 1/M) = "relies mainly on one" (0.6 for M=2)
CONSISTENT = 0.8  # "consistently better" = better in at least this share of scenarios


def t_interval(values: Any, conf: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high) Student-t interval of the mean; the interval is NaN with fewer than 2 values."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan"), float("nan")
    m = float(v.mean())
    if v.size < 2:
        return m, float("nan"), float("nan")
    half = float(stats.t.ppf(0.5 + conf / 2, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))
    return m, m - half, m + half


ACCURACY_BOUNDS = (0.0, 1.0)
GAP_BOUNDS = (-1.0, 1.0)  # a difference of two accuracies (representation gap, paired difference)


def bounded_interval(values: Any, conf: float = 0.95,
                     bounds: tuple[float, float] | None = ACCURACY_BOUNDS) -> tuple[float, float, float]:
    """(mean, low, high): the Student-t interval of the mean intersected with ``bounds`` (default [0, 1]).

    Why clipping and not a transformed interval: the mean of accuracies lies in [0, 1], so cutting the
    t interval at the bounds never removes a value the mean can take and keeps its coverage exactly,
    while a band such as [0.555, 1.053] claims accuracies that cannot exist. A logit-t interval breaks
    down at accuracies of exactly 1 (common on easy data: the logit is infinite, and any epsilon decides
    the width), and a percentile bootstrap under-covers with the 2 to 5 seeds a run has. ``bounds=None``
    gives the plain :func:`t_interval`.
    """
    m, lo, hi = t_interval(values, conf)
    if bounds is None or not np.isfinite(lo):
        return m, lo, hi
    a, b = bounds
    return m, float(min(max(lo, a), b)), float(max(min(hi, b), a))


def bootstrap_interval(values: Any, conf: float = 0.95, n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high) percentile-bootstrap interval of the mean (seeded)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan"), float("nan")
    if v.size < 2:
        return float(v.mean()), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, (n_boot, v.size))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - conf) / 2, (1 + conf) / 2])
    return float(v.mean()), float(lo), float(hi)


def modalities_of(df: pd.DataFrame, dataset: str | None = None) -> list[str]:
    """Modality names with contribution columns (non-empty for ``dataset`` when given)."""
    sub = df if dataset is None else df[df["dataset"] == dataset]
    out = []
    for c in df.columns:
        m = re.fullmatch(r"contribution:(.+)", c)
        if m and sub[c].notna().any():
            out.append(m.group(1))
    return out


def dominance_threshold(n_modalities: int) -> float:
    """Share above which a model 'relies mainly on one modality' (0.6 for two modalities)."""
    if n_modalities < 1:
        raise DataError("need at least one modality")
    u = 1.0 / n_modalities
    return u + SHARE_MARGIN * (1.0 - u)


def headline_metric(d: pd.DataFrame) -> str:
    """The column curves and AUBC use for these rows (one dataset's): ``micro_f1`` when they are a
    multi-label scenario's (the column holds values), else ``accuracy``."""
    return HEADLINE[bool("micro_f1" in d.columns and d["micro_f1"].notna().any())]


def _metric(d: pd.DataFrame, y: str | None) -> str:
    return headline_metric(d) if y is None else y


def _strategy_rows(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["strategy"] != REFERENCE]


def _check(df: pd.DataFrame, cols: list[str]) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise DataError(f"results are missing columns {missing}")


def aubc_table(df: pd.DataFrame, x: str = "cost", y: str | None = None) -> pd.DataFrame:
    """Per (dataset, strategy, seed): AUBC in [0, 1] and the final value of ``y`` (column ``final_accuracy``,
    whatever ``y`` is; column ``metric`` names it). ``y`` None: each dataset's :func:`headline_metric`.

    AUBC = trapezoid area of ``y`` over ``x`` from the initial cost to the largest cost any strategy
    reached on that dataset, divided by that range; a curve that stopped early is held at its last
    value. With no query rounds at all it is the initial value.
    """
    _check(df, ["dataset", "strategy", "seed", "round", x] + ([y] if y is not None else []))
    rows = []
    for ds, d in _strategy_rows(df).groupby("dataset", sort=False):
        y_ds = _metric(d, y)
        _check(d, [y_ds])
        lo = float(d.loc[d["round"] == 0, x].min()) if (d["round"] == 0).any() else float(d[x].min())
        hi = float(d[x].max())
        for (st, seed), c in d.groupby(["strategy", "seed"], sort=False):
            c = c.sort_values("round")
            xs, ys = c[x].to_numpy(float), c[y_ds].to_numpy(float)
            if hi > lo:
                if xs[-1] < hi:
                    xs, ys = np.append(xs, hi), np.append(ys, ys[-1])
                area = float(np.trapezoid(ys, xs) / (hi - lo))
            else:
                area = float(ys[0])
            rows.append({"dataset": ds, "strategy": st, "seed": int(seed), "aubc": area,
                         "final_accuracy": float(c[y_ds].iloc[-1]),
                         "final_cost": float(c[x].iloc[-1]), "metric": y_ds})
    return pd.DataFrame(rows, columns=["dataset", "strategy", "seed", "aubc", "final_accuracy", "final_cost", "metric"])


def summarize(table: pd.DataFrame, value: str, by: tuple[str, ...] = ("dataset", "strategy"),
              method: str = "t", bounds: tuple[float, float] | None = ACCURACY_BOUNDS) -> pd.DataFrame:
    """Mean and 95 % interval of ``value`` over seeds for each group (``method``: 't' or 'bootstrap').

    ``bounds``: the range the value lives in (default [0, 1]: accuracy, AUBC); the t interval is cut at
    it (:func:`bounded_interval`). Pass ``None`` for unbounded values.
    """
    if method not in ("t", "bootstrap"):
        raise DataError(f"method must be 't' or 'bootstrap', got {method!r}")
    rows = []
    for key, g in table.groupby(list(by), sort=False):
        v = g[value].to_numpy()
        m, lo, hi = bounded_interval(v, bounds=bounds) if method == "t" else bootstrap_interval(v)
        key = key if isinstance(key, tuple) else (key,)
        rows.append({**dict(zip(by, key)), "mean": m, "low": lo, "high": hi, "n": int(g[value].notna().sum())})
    return pd.DataFrame(rows, columns=[*by, "mean", "low", "high", "n"])


def learning_curves(df: pd.DataFrame, y: str | None = None, x: str = "cost",
                    bounds: tuple[float, float] | None = ACCURACY_BOUNDS) -> pd.DataFrame:
    """Per (dataset, strategy, round): mean ``x`` and mean ``y`` (None: each dataset's
    :func:`headline_metric`, named in column ``metric``) with a 95 % t interval over seeds, cut at
    ``bounds`` (default [0, 1]; :func:`bounded_interval`)."""
    _check(df, ["dataset", "strategy", "round", x] + ([y] if y is not None else []))
    rows = []
    for ds, d in _strategy_rows(df).groupby("dataset", sort=False):
        y_ds = _metric(d, y)
        for (st, r), g in d.groupby(["strategy", "round"], sort=False):
            m, lo, hi = bounded_interval(g[y_ds].to_numpy(), bounds=bounds)
            rows.append({"dataset": ds, "strategy": st, "round": int(r), "x": float(g[x].mean()), "mean": m,
                         "low": lo, "high": hi, "n": len(g), "metric": y_ds})
    out = pd.DataFrame(rows, columns=["dataset", "strategy", "round", "x", "mean", "low", "high", "n", "metric"])
    return out.sort_values(["dataset", "strategy", "round"], kind="stable").reset_index(drop=True)


def reference_lines(df: pd.DataFrame, y: str | None = None) -> pd.DataFrame:
    """The full-pool model per dataset: mean and 95 % interval over seeds of ``y`` (None: each dataset's
    :func:`headline_metric`), inside [0, 1] (the upper reference)."""
    ref = df[df["strategy"] == REFERENCE]
    parts = [summarize(g, _metric(df[df["dataset"] == ds], y), by=("dataset",))
             for ds, g in ref.groupby("dataset", sort=False)]
    empty = pd.DataFrame(columns=["dataset", "mean", "low", "high", "n"])
    return pd.concat(parts, ignore_index=True) if parts else empty


def penalty_matrix(df: pd.DataFrame, y: str | None = None, alpha: float = 0.05) -> pd.DataFrame:
    """Pairwise penalty matrix (Ash et al. 2020; Lueth et al. 2023), normalised to [0, 1], on ``y``
    (None: each dataset's :func:`headline_metric`).

    For each dataset and each budget point after round 0, a paired two-sided t-test over seeds
    compares strategies i and j; when i is significantly better, P[i, j] += 1 / L (L = the number
    of budget points of that dataset). The sum over datasets is divided by the number of datasets:
    P[i, j] is the share of (dataset, budget) points where i beats j. Column means say how often a
    strategy loses.
    """
    _check(df, ["dataset", "strategy", "seed", "round"] + ([y] if y is not None else []))
    d = _strategy_rows(df)
    strategies = list(dict.fromkeys(d["strategy"]))
    p = pd.DataFrame(0.0, index=strategies, columns=strategies)
    datasets = list(dict.fromkeys(d["dataset"]))
    for ds in datasets:
        sub = d[(d["dataset"] == ds) & (d["round"] > 0)]
        rounds = sorted(sub["round"].unique())
        if not rounds:
            continue
        wide = sub.pivot_table(index=["round", "seed"], columns="strategy", values=_metric(d[d["dataset"] == ds], y),
                               aggfunc="first")
        for r in rounds:
            w = wide.loc[r]
            for i in strategies:
                for j in strategies:
                    if i == j or i not in w or j not in w:
                        continue
                    pair = w[[i, j]].dropna()
                    if len(pair) < 2:
                        continue
                    diff = pair[i].to_numpy() - pair[j].to_numpy()
                    if np.allclose(diff, diff[0]):  # zero variance: t undefined; a constant nonzero gap counts
                        if diff[0] > 0:
                            p.loc[i, j] += 1.0 / len(rounds)
                        continue
                    t, pv = stats.ttest_rel(pair[i], pair[j])
                    if pv < alpha and t > 0:
                        p.loc[i, j] += 1.0 / len(rounds)
    return p / max(len(datasets), 1)


# ----------------------------------------------------------------------------------------------
# Modality reliance summaries and the seed paper's three claims
# ----------------------------------------------------------------------------------------------
def _phase_rows(d: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Early (first third of the rounds, round 0 included) and late (each cell's last round) rows."""
    last = d.groupby(["strategy", "seed"])["round"].transform("max")
    late = d[d["round"] == last]
    early = d[d["round"] <= np.floor(last / 3.0)]
    return early, late


def reliance_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, strategy) and phase (early/late): dominant share, dominant modality, gaps.

    Columns: dataset, strategy, phase, dominant, dominant_share, share_<m>, gap_<m>, neglected,
    gap_spread (max minus min representation gap), reliance_gap, accuracy.
    """
    rows = []
    for ds, d in df.groupby("dataset", sort=False):
        mods = modalities_of(df, ds)
        if not mods:
            continue
        for st, ds_st in d.groupby("strategy", sort=False):
            if st == REFERENCE:
                phases = [("reference", ds_st)]
            else:
                early, late = _phase_rows(ds_st)
                phases = [("early", early), ("late", late)]
            for phase, g in phases:
                shares = g[[f"contribution:{m}" for m in mods]].to_numpy(float)
                gaps = g[[f"representation_gap:{m}" for m in mods]].to_numpy(float)
                mean_share = np.nanmean(shares, axis=0)
                mean_gap = np.nanmean(gaps, axis=0)
                row: dict[str, Any] = {"dataset": ds, "strategy": st, "phase": phase,
                                       "dominant": mods[int(np.nanargmax(mean_share))],
                                       "dominant_share": float(np.nanmean(np.nanmax(shares, axis=1))),
                                       "neglected": mods[int(np.nanargmax(mean_gap))],
                                       "gap_spread": float(np.nanmax(mean_gap) - np.nanmin(mean_gap)),
                                       "reliance_gap": float(g["reliance_gap"].mean()) if "reliance_gap" in g else float("nan"),
                                       "accuracy": float(g["accuracy"].mean()), "n_modalities": len(mods)}
                for m, s, gp in zip(mods, mean_share, mean_gap):
                    row[f"share_{m}"] = float(s)
                    row[f"gap_{m}"] = float(gp)
                rows.append(row)
    return pd.DataFrame(rows)


def _flags(row: Mapping[str, Any]) -> tuple[bool, bool]:
    t = dominance_threshold(int(row["n_modalities"]))
    return bool(row["dominant_share"] >= t), bool(row["gap_spread"] >= GAP_THRESHOLD)


def claim_reliance(df: pd.DataFrame) -> dict[str, Any]:
    """Claim 1: models come to rely mainly on one modality.

    Per scenario, pooled over strategies and seeds, late in the budget: by *share* when the mean
    dominant contribution share is >= the dominance threshold (0.6 for two modalities); by
    *representation* when the modalities' representation gaps differ by >= GAP_THRESHOLD (one
    modality's head lags far behind what it could reach while another's does not). True when either
    holds in a majority of scenarios.
    """
    summ = reliance_summary(df)
    per = []
    for ds, g in summ[summ["phase"].isin(["early", "late"])].groupby("dataset", sort=False):
        rec: dict[str, Any] = {"dataset": ds}
        for phase in ("early", "late"):
            gp = g[g["phase"] == phase]
            mods = [c[6:] for c in gp.columns if c.startswith("share_") and gp[c].notna().any()]
            shares = {m: float(gp[f"share_{m}"].mean()) for m in mods}
            gaps = {m: float(gp[f"gap_{m}"].mean()) for m in mods}
            rec[f"{phase}_dominant"] = max(shares, key=shares.get)
            rec[f"{phase}_dominant_share"] = float(gp["dominant_share"].mean())
            rec[f"{phase}_shares"] = shares
            rec[f"{phase}_gaps"] = gaps
            rec[f"{phase}_neglected"] = max(gaps, key=gaps.get)
            rec[f"{phase}_gap_spread"] = float(max(gaps.values()) - min(gaps.values()))
            rec[f"{phase}_reliance_gap"] = float(gp["reliance_gap"].mean())
            rec["n_modalities"] = len(mods)
        late = {"dominant_share": rec["late_dominant_share"], "gap_spread": rec["late_gap_spread"],
                "n_modalities": rec["n_modalities"]}
        rec["by_share"], rec["by_representation"] = _flags(late)
        rec["threshold"] = dominance_threshold(rec["n_modalities"])
        ref = summ[(summ["dataset"] == ds) & (summ["phase"] == "reference")]
        rec["reference_dominant_share"] = float(ref["dominant_share"].iloc[0]) if len(ref) else float("nan")
        per.append(rec)
    n = len(per)
    n_share = sum(r["by_share"] for r in per)
    n_rep = sum(r["by_representation"] for r in per)
    verdict = None if n == 0 else bool(n_share > n / 2 or n_rep > n / 2)
    return {"claim": "Models come to rely mainly on one modality and neglect the others.",
            "verdict": verdict, "n_scenarios": n, "n_by_share": int(n_share), "n_by_representation": int(n_rep),
            "share_verdict": None if n == 0 else bool(n_share > n / 2),
            "representation_verdict": None if n == 0 else bool(n_rep > n / 2), "per_scenario": per,
            "rule": (f"late in the budget, per scenario: mean dominant contribution share >= 1/M + {SHARE_MARGIN}(1 - 1/M) "
                     f"(0.6 for M = 2), or representation gaps of the modalities differing by >= {GAP_THRESHOLD}; "
                     "true when either holds in more than half of the scenarios")}


def claim_strategies(df: pd.DataFrame) -> dict[str, Any]:
    """Claim 2: query strategies do not fix the reliance on one modality.

    Scenarios where the random baseline shows the problem late in the budget (either measure of
    claim 1) are checked; a strategy *fixes* a scenario when every measure flagged under random is
    below its threshold under that strategy. True when no strategy fixes at least half of them.
    """
    summ = reliance_summary(df)
    late = summ[summ["phase"] == "late"]
    if BASELINE not in set(late["strategy"]):
        return {"claim": "Query strategies do not fix this.", "verdict": None, "reason": "no random baseline in the run",
                "per_strategy": [], "flagged": []}
    flagged = []
    for ds, g in late.groupby("dataset", sort=False):
        base = g[g["strategy"] == BASELINE]
        if base.empty:
            continue
        by_share, by_rep = _flags(base.iloc[0])
        if by_share or by_rep:
            flagged.append({"dataset": ds, "by_share": by_share, "by_representation": by_rep,
                            "random_dominant_share": float(base["dominant_share"].iloc[0]),
                            "random_gap_spread": float(base["gap_spread"].iloc[0]),
                            "random_reliance_gap": float(base["reliance_gap"].iloc[0])})
    per_strategy = []
    for st in [s for s in dict.fromkeys(late["strategy"]) if s not in (BASELINE, REFERENCE)]:
        fixed, d_share, d_gap, d_rel = [], [], [], []
        for f in flagged:
            row = late[(late["dataset"] == f["dataset"]) & (late["strategy"] == st)]
            if row.empty:
                continue
            r = row.iloc[0]
            s_flag, r_flag = _flags(r)
            ok = (not f["by_share"] or not s_flag) and (not f["by_representation"] or not r_flag)
            if ok:
                fixed.append(f["dataset"])
            d_share.append(float(r["dominant_share"]) - f["random_dominant_share"])
            d_gap.append(float(r["gap_spread"]) - f["random_gap_spread"])
            d_rel.append(float(r["reliance_gap"]) - f["random_reliance_gap"])
        per_strategy.append({"strategy": st, "fixed": fixed, "n_fixed": len(fixed), "n_checked": len(d_share),
                             "mean_delta_dominant_share": float(np.mean(d_share)) if d_share else float("nan"),
                             "mean_delta_gap_spread": float(np.mean(d_gap)) if d_gap else float("nan"),
                             "mean_delta_reliance_gap": float(np.mean(d_rel)) if d_rel else float("nan")})
    if not flagged:
        verdict, reason = None, "under random sampling no scenario shows reliance on one modality: nothing to fix"
    elif not per_strategy:
        verdict, reason = None, "no strategy besides random in the run"
    else:
        verdict = not any(p["n_fixed"] >= len(flagged) / 2 for p in per_strategy)
        reason = ""
    return {"claim": "Query strategies do not fix this.", "verdict": verdict, "reason": reason, "flagged": flagged,
            "per_strategy": per_strategy,
            "rule": "scenarios where random shows either measure of claim 1 late in the budget; a strategy fixes one when "
                    "every flagged measure is below its threshold; true when no strategy fixes at least half of them"}


def claim_multimodal(df: pd.DataFrame, families: Mapping[str, str]) -> dict[str, Any]:
    """Claim 3: multimodal strategies are not consistently better than unimodal ones.

    A multimodal strategy (family 'multimodal' or 'ours', :func:`benchmark.runner.strategy_families`) is
    *consistently better* when its mean AUBC exceeds the best unimodal strategy's mean AUBC in at least
    CONSISTENT (80 %) of the scenarios. True when none is.
    """
    aubc = summarize(aubc_table(df), "aubc")
    multi = [s for s, f in families.items() if f in ("multimodal", "ours") and s in set(aubc["strategy"])]
    uni = [s for s, f in families.items() if f == "unimodal" and s in set(aubc["strategy"])]
    base = {"claim": "Multimodal strategies are not consistently better than unimodal ones.",
            "multimodal": multi, "unimodal": uni,
            "rule": f"a multimodal strategy is consistently better when its mean AUBC beats the best unimodal strategy's "
                    f"in >= {int(CONSISTENT * 100)} % of the scenarios; true when none is"}
    if not multi or not uni:
        return {**base, "verdict": None, "reason": "the run needs at least one multimodal and one unimodal strategy",
                "per_strategy": [], "per_scenario": []}
    per_scenario, wins = [], {s: 0 for s in multi}
    datasets = list(dict.fromkeys(aubc["dataset"]))
    for ds in datasets:
        a = aubc[aubc["dataset"] == ds].set_index("strategy")["mean"]
        best_uni = max(uni, key=lambda s: a.get(s, -np.inf))
        best_multi = max(multi, key=lambda s: a.get(s, -np.inf))
        for s in multi:
            if a.get(s, -np.inf) > a.get(best_uni, -np.inf):
                wins[s] += 1
        per_scenario.append({"dataset": ds, "best_unimodal": best_uni, "best_unimodal_aubc": float(a[best_uni]),
                             "best_multimodal": best_multi, "best_multimodal_aubc": float(a[best_multi]),
                             "multimodal_family_mean": float(a[[s for s in multi if s in a]].mean()),
                             "unimodal_family_mean": float(a[[s for s in uni if s in a]].mean())})
    per_strategy = [{"strategy": s, "scenarios_beating_best_unimodal": wins[s], "n_scenarios": len(datasets),
                     "share": wins[s] / len(datasets)} for s in multi]
    verdict = not any(p["share"] >= CONSISTENT for p in per_strategy)
    return {**base, "verdict": verdict, "reason": "", "per_strategy": per_strategy, "per_scenario": per_scenario}


# ----------------------------------------------------------------------------------------------
# Paired comparison of candidate strategies against the best baseline (the modality-aware study)
# ----------------------------------------------------------------------------------------------
DEFAULT_BASELINES = ("random", "entropy", "margin", "bald", "badge", "coreset", "bmmal")


def paired_vs_best_baseline(df: pd.DataFrame, candidates: Any = None, baselines: Any = DEFAULT_BASELINES,
                            value: str = "aubc", conf: float = 0.95) -> pd.DataFrame:
    """Per (dataset, candidate): paired difference in ``value`` against the *best* baseline, over seeds.

    Why paired and why the best: every strategy of a seed shares the initial set and round-0 model,
    so per-seed differences remove most seed noise; and a new strategy is only worth having if it
    beats the strongest baseline of that scenario, chosen *after the fact* by mean ``value`` (which
    favours the baselines: their best is selected on the same seeds).

    Columns: dataset, strategy, best_baseline, mean_diff, low, high (95 % t interval of the paired
    difference), win_rate (share of seeds with a positive difference), n (common seeds), strategy_mean,
    baseline_mean. ``value`` is a column of :func:`aubc_table` (``aubc`` or ``final_accuracy``);
    differences are in the same unit (multiply by 100 for AUBC points). ``candidates`` default: every
    strategy that is not a baseline.
    """
    table = aubc_table(df)
    cols = ["dataset", "strategy", "best_baseline", "mean_diff", "low", "high", "win_rate", "n",
            "strategy_mean", "baseline_mean"]
    if value not in table.columns:
        raise DataError(f"value must be one of aubc, final_accuracy, got {value!r}")
    present = list(dict.fromkeys(table["strategy"]))
    base = [b for b in baselines if b in present]
    cands = [s for s in present if s not in base] if candidates is None else [s for s in candidates if s in present]
    rows = []
    if not base:
        return pd.DataFrame(rows, columns=cols)
    for ds, d in table.groupby("dataset", sort=False):
        wide = d.pivot_table(index="seed", columns="strategy", values=value, aggfunc="first")
        means = {b: float(wide[b].mean()) for b in base if b in wide}
        if not means:
            continue
        best = max(means, key=means.get)
        for s in cands:
            if s not in wide:
                continue
            pair = wide[[s, best]].dropna()
            diff = (pair[s] - pair[best]).to_numpy(float)
            m, lo, hi = t_interval(diff, conf)
            rows.append({"dataset": ds, "strategy": s, "best_baseline": best, "mean_diff": m, "low": lo, "high": hi,
                         "win_rate": float((diff > 0).mean()) if diff.size else float("nan"), "n": int(diff.size),
                         "strategy_mean": float(pair[s].mean()), "baseline_mean": float(pair[best].mean())})
    return pd.DataFrame(rows, columns=cols)
