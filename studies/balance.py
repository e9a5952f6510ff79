"""Training-side modality balancing during active learning (issue 7, last direction), development seeds.

Modes: plain recipe, OGM-GE variants, unimodal warm-up (+ its burn-in control), stronger auxiliary loss,
MMPareto gradient-conflict resolution.

Every query strategy is run under each training mode; within a mode the recipe is identical for every
strategy (baselines get the same training), so the comparison "ours vs best baseline" is made per
mode. Protocol = the ``modality`` suite (pool 1,500, 60 initial labels + 6 rounds of 60, 60 epochs,
patience 10), through the same ``benchmark.protocol.run_cell`` (studies.harness), one run folder per
mode: runs/balance_<mode>.

    nice -n 10 .venv/bin/python -m studies.balance --workers 1            # run (resumable) + tables
    .venv/bin/python -m studies.balance --show-only                       # tables only

Prints markdown: per scenario, mean AUBC per (strategy, mode), the mid-budget relative representation
gap of the worse modality, and the paired difference of ``reducible_margin`` vs the best baseline
under the same mode, plus each mode's paired effect on each strategy against mode ``none``.
"""

from __future__ import annotations

import argparse
from typing import Any

import pandas as pd

from benchmark.metrics import aubc_table, t_interval
from studies.harness import _seeds, load, make_config, run

BASE_TRAIN: dict[str, Any] = {"epochs": 60, "patience": 10}
MODES: dict[str, dict[str, Any]] = {
    "none": {},
    "ogm_ge": {"modality_balance": "ogm_ge", "ogm_alpha": 0.5},  # paper form: scaled gradients + GE noise
    "ogm_ge_lr": {"modality_balance": "ogm_ge", "ogm_alpha": 0.5, "ogm_apply": "lr"},  # scaled AdamW steps
    "warmup": {"modality_balance": "warmup", "warmup_epochs": 30},
    # control for warmup: the same 30 extra epochs before early stopping, on the usual (joint) loss
    "burnin": {"modality_balance": "warmup", "warmup_epochs": 30, "warmup_loss": "joint"},
    "aux3": {"aux_weight": 3.0},  # the simplest alternative: stronger auxiliary-head loss
    # modulation alone, strong: no GE noise, alpha 2, on AdamW step sizes (isolates the k_m effect)
    "ogm_strong": {"modality_balance": "ogm_ge", "ogm_alpha": 2.0, "ogm_noise": False, "ogm_apply": "lr"},
    # MMPareto (Wei & Hu, ICML 2024): min-norm combination of fused and unimodal gradients on conflict
    "mmpareto": {"modality_balance": "mmpareto"},
}
SCENARIOS = ("difficulty", "missing_mnar_30", "noisy_modality", "balanced")
STRATEGIES = ("random", "entropy", "badge", "bmmal", "reducible_margin")
CANDIDATE = "reducible_margin"


def config(mode: str, scenarios: list[str], strategies: list[str], seeds: list[int]):
    """The modality suite's protocol with this mode's training overrides."""
    return make_config(scenarios, strategies, seeds, rounds=6, train_overrides={**BASE_TRAIN, **MODES[mode]})


def rows(modes: list[str], scenarios: list[str], strategies: list[str], seeds: list[int]) -> pd.DataFrame:
    """All finished rows of the given modes, with a ``mode`` column."""
    parts = []
    for mode in modes:
        df = load(f"balance_{mode}")
        if len(df):
            df = df[df["dataset"].isin(scenarios) & df["strategy"].isin(strategies) & df["seed"].isin(seeds)]
            parts.append(df.assign(mode=mode))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def mid_gap(df: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, mode, strategy): at the middle round, max over modalities of mean gap / mean achievable.

    achievable_m = representation_gap:m + unimodal_acc:m (the Bayes accuracy of m alone on items having
    it, per seed), the same quantity studies.analyze reads from run.json.
    """
    out = []
    for (ds, mode, st), d in df.groupby(["dataset", "mode", "strategy"]):
        mods = [c.split(":", 1)[1] for c in d.columns if c.startswith("representation_gap:") and d[c].notna().any()]
        dm = d[d["round"] == int(d["round"].max()) // 2]
        rel = {m: float(dm[f"representation_gap:{m}"].mean() /
                        (dm[f"representation_gap:{m}"] + dm[f"unimodal_acc:{m}"]).mean()) for m in mods}
        worst = max(rel, key=rel.get)
        out.append({"dataset": ds, "mode": mode, "strategy": st, "gap": rel[worst], "modality": worst})
    return pd.DataFrame(out)


def tables(df: pd.DataFrame, modes: list[str], strategies: list[str]) -> str:
    """Markdown tables of the study."""
    parts = []
    a = pd.concat([aubc_table(d).assign(mode=mode) for mode, d in df.groupby("mode")], ignore_index=True)
    gaps = mid_gap(df)
    baselines = [s for s in strategies if s != CANDIDATE]
    modes = [m for m in modes if m in set(a["mode"])]
    for ds in dict.fromkeys(df["dataset"]):
        aa = a[a["dataset"] == ds]
        n_seeds = aa["seed"].nunique()
        lines = [f"**{ds}** ({n_seeds} seeds): mean AUBC (points) / mid-budget gap share of the worse modality",
                 "", "| strategy | " + " | ".join(modes) + " |", "|---|" + "---|" * len(modes)]
        for st in strategies:
            cells = []
            for mode in modes:
                v = aa[(aa["strategy"] == st) & (aa["mode"] == mode)]["aubc"]
                g = gaps[(gaps["dataset"] == ds) & (gaps["strategy"] == st) & (gaps["mode"] == mode)]
                cells.append("" if v.empty else f"{100 * v.mean():.2f} / {g['gap'].iloc[0]:.3f} ({g['modality'].iloc[0]})")
            lines.append(f"| {st} | " + " | ".join(cells) + " |")
        # ours vs the best baseline under the same training
        cells = []
        for mode in modes:
            w = aa[aa["mode"] == mode].pivot_table(index="seed", columns="strategy", values="aubc")
            if CANDIDATE not in w or not any(b in w for b in baselines):
                cells.append("")
                continue
            best = max((b for b in baselines if b in w), key=lambda b: w[b].mean())
            d = (w[CANDIDATE] - w[best]).to_numpy() * 100
            m, lo, hi = t_interval(d)
            cells.append(f"vs {best}: {m:+.2f} [{lo:+.2f}, {hi:+.2f}], {int((d > 0).sum())}/{len(d)}")
        lines.append(f"| **{CANDIDATE} − best baseline** | " + " | ".join(cells) + " |")
        # each mode against "none": per seed, the mean over strategies of the AUBC change; t interval over seeds
        if "none" in modes:
            cells = []
            wn = aa[aa["mode"] == "none"].pivot_table(index="seed", columns="strategy", values="aubc")
            for mode in modes:
                wm = aa[aa["mode"] == mode].pivot_table(index="seed", columns="strategy", values="aubc")
                common = [s for s in strategies if s in wm and s in wn]
                if mode == "none" or not common:
                    cells.append("")
                    continue
                d = (wm[common] - wn[common]).mean(axis=1).dropna().to_numpy() * 100  # per seed, strategies averaged
                m, lo, hi = t_interval(d)
                cells.append(f"{m:+.2f} [{lo:+.2f}, {hi:+.2f}]")
            lines.append("| training effect vs none (mean over strategies, paired by seed) | " + " | ".join(cells) + " |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--strategies", default=",".join(STRATEGIES))
    ap.add_argument("--seeds", default="100-103")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--show-only", action="store_true")
    args = ap.parse_args()
    modes, scs, sts, seeds = (args.modes.split(","), args.scenarios.split(","), args.strategies.split(","),
                              _seeds(args.seeds))
    unknown = set(modes) - set(MODES)
    if unknown:
        raise SystemExit(f"unknown modes {sorted(unknown)}; known: {', '.join(MODES)}")
    if not args.show_only:
        for mode in modes:
            print(f"== mode {mode}", flush=True)
            run(f"balance_{mode}", config(mode, scs, sts, seeds), args.workers)
    pd.set_option("display.width", 250)
    print(tables(rows(modes, scs, sts, seeds), modes, sts))


if __name__ == "__main__":
    main()
