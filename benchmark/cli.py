"""``mmal benchmark run|report|scenarios`` and the benchmark worker behind ``mmal worker``.

Thin layer over :mod:`benchmark.runner` and :mod:`benchmark.report`: a suite gives the defaults,
flags change single fields, and the resulting config is what run.json records and resume checks.
``--dataset emoji,mfeat`` adds real datasets as scenarios (``--missing-rate 0,0.3 --missing mnar`` also
adds their variants with injected missing modalities), in the same results table and report; so does
``--dataset mine.jsonl`` for a researcher's own manifest or Label Studio export (columns strict:
``--modalities`` / ``--ignore-columns``; see :mod:`connectors.own_data`). Bad flag values end with one
line and exit status 2 (:mod:`mmal.usage`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, List, Optional, Sequence

import typer

from mmal.usage import OneLineErrors, bad_value

app = typer.Typer(help="Simulated-oracle benchmark of multimodal active learning.", no_args_is_help=True,
                  pretty_exceptions_show_locals=False, cls=OneLineErrors)

# what `--suite` accepts, for its help text (benchmark.suites imports torch; a test keeps the two in step)
SUITE_HELP = ("smoke (CI, < 1 min), quick (about 9 min on 2 cores), modality (the modality-aware study, 8 seeds), modality_tuned "
              "(the same, recipe chosen on validation data), ablation (reducible_margin one component at a time), "
              "paper (everything, 5 seeds).")
RESERVED_HELP = "id, label, split"


def _split(value: Optional[str], flag: str = "value") -> Optional[list[str]]:
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        bad_value(flag, value, "needs at least one comma-separated name")
    return items


def parse_modalities(value: Optional[str]) -> Optional[dict[str, str]]:
    """``--modalities photo=image,caption=text,emb=vector`` -> {column: kind}."""
    from connectors.importers import MODALITY_KINDS

    if value is None:
        return None
    out: dict[str, str] = {}
    for item in _split(value, "--modalities") or []:
        name, sep, kind = (x.strip() for x in item.partition("="))
        if not sep or not name or kind not in MODALITY_KINDS:
            bad_value("--modalities", item, f"expected COLUMN=KIND with KIND one of {', '.join(MODALITY_KINDS)}")
        if name in out:
            bad_value("--modalities", item, f"column {name!r} is declared twice")
        out[name] = kind
    return out


def _seeds(value: Optional[str]) -> Optional[tuple[int, ...]]:
    """'0,1,2' or '0-4' (inclusive range)."""
    if value is None:
        return None
    try:
        if "-" in value and "," not in value:
            a, b = value.split("-", 1)
            return tuple(range(int(a), int(b) + 1))
        return tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        bad_value("--seeds", value, "must look like '0,1,2' or '0-4' (non-negative integers)")


def _rates(value: Optional[str]) -> list[int]:
    """'0,0.3' -> [0, 30]: missing rates as whole percents (0 = no injected missingness)."""
    if value is None:
        return [0]
    out: list[int] = []
    for v in value.split(","):
        if not v.strip():
            continue
        try:
            r = float(v)
        except ValueError:
            bad_value("--missing-rate", v, "rates must be numbers in [0, 1), e.g. '0.3' or '0,0.3'")
        pct = round(r * 100)
        if not 0.0 <= r < 1.0 or abs(pct - r * 100) > 1e-6:
            bad_value("--missing-rate", v, "a rate must be in [0, 1) in whole percents (e.g. 0.3)")
        if pct not in out:
            out.append(pct)
    if not out:
        bad_value("--missing-rate", value, "needs at least one rate")
    return out


def real_scenarios(datasets: Sequence[str], rates: Sequence[int], kind: str) -> list[str]:
    """Scenario names for ``--dataset`` values: each dataset at each missing rate (0 = as it is).

    A value may already carry a modifier (``emoji+missing_mnar_30``); it is then used as written.
    """
    return resolve_datasets(datasets, rates, kind)[0]


def _file_and_modifiers(value: str) -> tuple[Path, str] | None:
    """``mine.jsonl`` or ``mine.jsonl+missing_mcar_30`` -> (the existing file, the modifiers after it)."""
    parts = value.split("+")
    for k in range(len(parts), 0, -1):
        p = Path("+".join(parts[:k])).expanduser()
        if p.is_file():
            return p, "+".join(parts[k:])
    return None


def resolve_datasets(datasets: Sequence[str], rates: Sequence[int], kind: str,
                     modalities: Optional[dict[str, str]] = None,
                     ignore_columns: Sequence[str] = ()) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """Scenario names for ``--dataset`` values, and the spec of every own data file among them.

    A value is a registered dataset (``emoji``, ``mfeat``) or the path of a manifest / Label Studio
    export; its scenario is named after the file (``mine.jsonl``) and the spec (absolute path, sha256,
    columns) travels in the config's ``own_data`` parameter, so every worker loads the same data.
    Every bad value is a one-line usage error naming the flag.
    """
    from backend.data import DataError
    from benchmark.scenarios import REAL_DATASETS, parse_name
    from connectors.importers import ColumnError
    from connectors.own_data import OWN_DATA_SUFFIXES, describe_own_data

    if kind not in ("mcar", "mnar"):
        bad_value("--missing", kind, "must be 'mcar' (at random) or 'mnar' (depending on the class)")
    names: list[str] = []
    own: dict[str, dict[str, Any]] = {}
    for d in datasets:
        if d.split("+")[0].strip() in REAL_DATASETS:
            name = d
        else:
            found = _file_and_modifiers(d)
            if found is None:
                looks = d.split("+")[0].lower().endswith(OWN_DATA_SUFFIXES)
                bad_value("--dataset", d, ("no such file" if looks else "not a real dataset or a data file")
                          + f"; known: {', '.join(REAL_DATASETS)}, or the path of a "
                          f"{'/'.join(OWN_DATA_SUFFIXES)} manifest or Label Studio export")
            path, mods = found
            try:
                spec = describe_own_data(path, modalities, ignore_columns)
            except ColumnError as e:
                hint = ""
                if e.undeclared:
                    col = e.columns[0]
                    hint = (f"; declare it with --modalities {col}=image|text|vector (with the other modalities) "
                            f"or drop it with --ignore-columns {col}")
                bad_value("--dataset", d, f"{e.reason}{hint} (reserved columns: {RESERVED_HELP})")
            except DataError as e:
                bad_value("--dataset", d, str(e))
            prev = own.get(spec["name"])
            if prev is not None and prev["path"] != spec["path"]:
                bad_value("--dataset", d, f"another --dataset file is also named {spec['name']!r} "
                                          f"({prev['path']}); scenarios are named after files: rename one")
            own[spec["name"]] = spec
            name = spec["name"] + (f"+{mods}" if mods else "")
        try:
            _, over = parse_name(name)
        except DataError as e:
            bad_value("--dataset", d, str(e))
        variants = [name] if over else [name if pct == 0 else f"{name}+missing_{kind}_{pct}" for pct in rates]
        names += [v for v in variants if v not in names]
    if (modalities is not None or ignore_columns) and not own:
        bad_value("--modalities" if modalities is not None else "--ignore-columns",
                  ",".join(modalities or ignore_columns), "applies to --dataset data files only")
    return names, own


def _build_one(name: str, seed: int, params: dict[str, Any]) -> str:
    """Build one scenario in a worker process: fills the on-disk feature and informativeness caches."""
    from benchmark.scenarios import make_scenario

    make_scenario(name, seed, **params)
    return f"{name} s{seed}"


def prepare_real(names: Sequence[str], seeds: Sequence[int], params: dict[str, Any], workers: int) -> dict[str, int]:
    """Warm the real-data caches before a run: features once per dataset, then the per-seed
    informativeness estimates (a full-pool model per modality) in ``workers`` processes.
    Returns each dataset's pool size (so a flag the data cannot satisfy is named before any cell runs).

    Why: the driver builds every (scenario, seed) before dispatching cells, serially; with cold caches
    that is minutes of training that parallel workers do in a fraction of the time. Results are the
    same either way (estimates are computed with one torch thread and cached by content).
    """
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from benchmark.scenarios import make_scenario, parse_name

    pairs = [(n, s) for n in names for s in seeds]
    first: dict[str, tuple[str, int]] = {}
    for n, s in pairs:
        first.setdefault(parse_name(n)[0], (n, s))
    pools = {}
    for base, (n, s) in first.items():  # encodes each dataset once (in this process), before any parallel work
        pools[base] = len(make_scenario(n, s, **params).pool)
    rest = [pr for pr in pairs if pr not in first.values()]
    if workers > 1 and rest:
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as ex:
            list(ex.map(_build_one, [n for n, _ in rest], [s for _, s in rest], [params] * len(rest)))
    return pools


def parse_train_settings(items: Sequence[str]) -> dict[str, Any]:
    """``--train KEY=VALUE`` flags as TrainConfig overrides; values read as JSON (numbers, true/false)
    or else as strings. Unknown keys and invalid values are named (a typo must not run an hour)."""
    import json
    from dataclasses import fields, replace

    from backend.data import DataError
    from backend.models.trainer import TrainConfig

    known = {f.name for f in fields(TrainConfig)}
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise typer.BadParameter(f"--train {item!r}: expected KEY=VALUE")
        if key not in known:
            raise typer.BadParameter(f"--train {key}: not a training setting; known: {', '.join(sorted(known))}")
        try:
            out[key] = json.loads(raw)
        except ValueError:
            out[key] = raw
    try:
        replace(TrainConfig(), **out)
    except (DataError, TypeError, ValueError) as e:
        raise typer.BadParameter(f"--train: {e}") from None
    return out


@app.command()
def run(
    suite: str = typer.Option("quick", "--suite", help=SUITE_HELP),
    out: Path = typer.Option(..., "--out", help="Run folder: results.csv, run.json, cells/, report. Reusing it resumes."),
    scenarios: Optional[str] = typer.Option(None, help="Comma-separated scenarios (see `mmal benchmark scenarios`)."),
    dataset: Optional[List[str]] = typer.Option(None, "--dataset", help="Real data replayed with the simulated "
                                                "oracle: emoji, emoji_tags (multi-label), mfeat, or the path of your "
                                                "own JSONL/CSV/TSV/JSON manifest or Label Studio JSON export "
                                                "(repeatable or comma-separated; "
                                                "several mix in one run). Alone they replace the suite's "
                                                "scenarios; with --scenarios they are added."),
    modalities: Optional[str] = typer.Option(None, "--modalities", help="Data files: the modality columns and "
                                             "kinds, e.g. 'photo=image,caption=text,emb=vector' (kinds: image, "
                                             "text, vector). Default: inferred from every column that is not "
                                             f"reserved ({RESERVED_HELP}) or ignored; any other column stops the run."),
    ignore_columns: Optional[str] = typer.Option(None, "--ignore-columns", help="Data files: columns to leave "
                                                 "out, e.g. 'source,annotator'."),
    missing_rate: Optional[str] = typer.Option(None, "--missing-rate", help="With --dataset: inject missing "
                                               "modalities at these rates, e.g. '0.3' or '0,0.3' (0 = as is)."),
    missing: str = typer.Option("mcar", "--missing", help="With --missing-rate: 'mcar' (at random) or 'mnar' "
                                "(the rate depends on the class)."),
    featurizers: Optional[str] = typer.Option(None, "--featurizers", help="Image/text data (emoji, your files): "
                                              "'pretrained' (EfficientNet-Lite0, MiniLM; default) or 'simple' "
                                              "(pixels, tokens: fast, weaker). See `mmal featurizers`."),
    views: Optional[str] = typer.Option(None, "--views", help="mfeat views, e.g. 'fou,kar' (default) or 'fac,pix'."),
    strategies: Optional[str] = typer.Option(None, help="Comma-separated strategies or specs such as "
                                             "'reducible_margin(quota=0)', or 'all' (see `mmal strategies`)."),
    seeds: Optional[str] = typer.Option(None, help="Seeds: '0,1,2' or '0-4'."),
    rounds: Optional[int] = typer.Option(None, min=0, help="Most query rounds per cell."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Items queried per round."),
    budget: Optional[float] = typer.Option(None, min=0.0,
                                           help="Query budget in oracle cost units (initial set not charged)."),
    n_initial: Optional[int] = typer.Option(None, "--initial", min=1, help="Size of the random initial labelled set."),
    items: Optional[int] = typer.Option(None, min=1,
                                        help="Pool size of every scenario (real datasets: a stratified cap)."),
    label_noise: Optional[float] = typer.Option(None, "--label-noise", min=0.0, max=1.0,
                                                help="Oracle label-noise rate in [0, 1]."),
    cost_per_modality: Optional[float] = typer.Option(None, "--cost-per-modality", min=0.0,
                                                      help="Extra oracle cost per present modality."),
    train: Optional[List[str]] = typer.Option(None, "--train", help="KEY=VALUE training setting for every strategy "
                                              "(repeatable), e.g. modality_balance=mmpareto, epochs=150; a suite's "
                                              "recipe candidates still apply on top."),
    queue: Optional[str] = typer.Option(None, "--queue", help="redis://HOST:PORT/DB: run every cell as an RQ job "
                                                              "executed by `mmal worker` processes."),
    workers: int = typer.Option(1, min=1, help="In-process mode only: local worker processes (1 = this process)."),
    report: bool = typer.Option(True, help="Write the report when the run completes."),
    progress: bool = typer.Option(True, help="Show a progress bar with cells done and ETA."),
) -> None:
    """Run (or resume) a benchmark suite into OUT."""
    from dataclasses import replace

    from backend.data import DataError
    from benchmark.report import build_report
    from benchmark.runner import run_benchmark
    from benchmark.scenarios import FEATURIZER_PRESETS
    from benchmark.suites import SUITES, check_multi_label_strategies, get_suite, resolve_strategies

    if suite not in SUITES:
        bad_value("--suite", suite, f"known suites: {', '.join(SUITES)}")
    cfg = get_suite(suite)
    changes: dict = {}
    if scenarios is not None:
        from benchmark.scenarios import parse_name

        changes["scenarios"] = tuple(_split(scenarios, "--scenarios") or ())
        for sc in changes["scenarios"]:
            try:
                parse_name(sc)
            except DataError as e:
                bad_value("--scenarios", sc, str(e))
    if missing_rate is not None and not dataset:
        bad_value("--missing-rate", missing_rate, "applies to --dataset scenarios (synthetic ones take e.g. "
                                                  "'balanced+missing_mcar_30')")
    own: dict[str, dict[str, Any]] = {}
    if dataset:
        ignore = _split(ignore_columns, "--ignore-columns") or []
        real, own = resolve_datasets([d for v in dataset for d in (_split(v, "--dataset") or [])], _rates(missing_rate),
                                     missing, parse_modalities(modalities), ignore)
        base = list(changes.get("scenarios", ())) if scenarios is not None else []
        changes["scenarios"] = tuple(base + [r for r in real if r not in base])
    elif modalities is not None or ignore_columns is not None:
        bad_value("--modalities" if modalities is not None else "--ignore-columns", modalities or ignore_columns,
                  "applies to --dataset data files only")
    if strategies is not None:
        changes["strategies"] = tuple(_split(strategies, "--strategies") or ())
    if seeds is not None:
        changes["seeds"] = _seeds(seeds)
    if rounds is not None:
        changes["rounds"] = rounds
    if batch_size is not None:
        changes["batch_size"] = batch_size
    if budget is not None:
        changes["budget"] = budget
    if n_initial is not None:
        changes["n_initial"] = n_initial
    params = dict(cfg.scenario_params)
    if items is not None:
        params["n_items"] = items
    if featurizers is not None and featurizers not in FEATURIZER_PRESETS:
        bad_value("--featurizers", featurizers, f"must be one of {', '.join(FEATURIZER_PRESETS)}")
    if dataset:  # recorded in the config either way: which features a real-data run used is part of its result
        params["featurizers"] = featurizers or "pretrained"
    elif featurizers is not None:
        params["featurizers"] = featurizers
    if own:
        params["own_data"] = own
    if views is not None:
        from connectors.datasets.mfeat import VIEWS

        params["views"] = list(_split(views, "--views") or [])
        unknown = [v for v in params["views"] if v not in VIEWS]
        if unknown or len(params["views"]) < 2 or len(set(params["views"])) != len(params["views"]):
            bad_value("--views", views, f"2 to {len(VIEWS)} distinct mfeat views of {', '.join(VIEWS)}")
    if params != cfg.scenario_params:
        changes["scenario_params"] = params
    if train:
        changes["train_overrides"] = {**cfg.train_overrides, **parse_train_settings(train)}
    if label_noise is not None or cost_per_modality is not None:
        o = cfg.oracle
        changes["oracle"] = replace(o, **({"noise_rate": label_noise} if label_noise is not None else {}),
                                    **({"cost_per_modality": cost_per_modality} if cost_per_modality is not None else {}))
    if changes:
        try:
            cfg = cfg.with_(**changes)
        except DataError as e:
            raise typer.BadParameter(f"the flags give an invalid run: {e}") from None
    if strategies is not None:
        for st in changes["strategies"]:
            try:
                resolve_strategies(cfg.with_(strategies=(st,)))
            except DataError as e:
                bad_value("--strategies", st, f"{e} (parameters: `mmal strategies`)")
    try:  # before any real data is featurized or a model trained
        check_multi_label_strategies(resolve_strategies(cfg))
    except DataError as e:
        bad_value("--strategies", strategies or ",".join(cfg.strategies), str(e))
    t0 = time.perf_counter()
    from benchmark.scenarios import is_real

    real_names = [n for n in cfg.scenarios if is_real(n)]
    if real_names and queue is None:
        if progress:
            typer.echo(f"preparing {len(real_names)} real-data scenario(s) x {len(cfg.seeds)} seed(s): features "
                       "(cached after the first run) and informativeness estimates")
        pools = prepare_real(real_names, cfg.seeds, dict(cfg.scenario_params), workers)
        small = {name: n for name, n in pools.items() if cfg.n_initial >= n}
        if small:
            bad_value("--initial", cfg.n_initial, "must be smaller than the pool: "
                      + ", ".join(f"{name} has {n} pool items" for name, n in small.items()))
    df = run_benchmark(cfg, out, queue=queue, progress=progress, workers=workers)
    typer.echo(f"{len(df)} result rows in {out / 'results.csv'} ({time.perf_counter() - t0:.1f} s)")
    if report:
        path = build_report(out)
        typer.echo(f"report: {path}")


@app.command("report")
def report_cmd(run_dir: Path = typer.Argument(..., help="A run folder written by `mmal benchmark run`.")) -> None:
    """Write RUN_DIR/report.html (self-contained) and RUN_DIR/figures/*.png."""
    from benchmark.report import build_report

    typer.echo(f"report: {build_report(run_dir)}")


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


@app.command("table")
def table_cmd(run_dir: Path = typer.Argument(..., help="A run folder written by `mmal benchmark run`."),
              fmt: str = typer.Option("markdown", "--format",
                                      help="markdown (one table per scenario), matrix (scenarios x strategies, "
                                           "mean AUBC, ours vs the best baseline) or csv")) -> None:
    """Print per scenario and strategy: final accuracy and AUBC (mean [95 % t interval over seeds, cut at [0, 1]]),
    the AUBC difference to random paired by seed, and the final modality contribution shares
    (``--format matrix``: one scenarios x strategies table of mean AUBC, as in the README)."""
    if fmt == "matrix":
        typer.echo(matrix_markdown(run_dir), nl=False)
        return
    rows = results_table(run_dir)
    if fmt == "markdown":
        typer.echo(table_markdown(rows))
    elif fmt == "csv":
        import pandas as pd

        typer.echo(pd.DataFrame(rows).to_csv(index=False), nl=False)
    else:
        bad_value("--format", fmt, "must be markdown, matrix or csv")


@app.command("scenarios")
def scenarios_cmd() -> None:
    """List the named scenarios (combine with '+', e.g. difficulty+missing_mnar_30)."""
    from rich.console import Console
    from rich.table import Table

    from benchmark.scenarios import list_scenarios

    table = Table("scenario", "what it isolates", title="benchmark scenarios (real ones: --dataset)")
    for name, desc in list_scenarios(real=True).items():
        table.add_row(name, desc)
    table.add_row("PATH.jsonl|.csv|.tsv|.json", "your own manifest or Label Studio export (--dataset PATH; "
                  "--modalities, --ignore-columns), optionally +missing_mcar_<pct> / +missing_mnar_<pct>")
    Console().print(table)
