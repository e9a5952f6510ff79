"""``mmal benchmark run|report|table|scenarios``: the commands and their flags.

Thin layer over :mod:`benchmark.runner` and :mod:`benchmark.report`: a suite gives the defaults,
flags change single fields, and the resulting config is what run.json records and resume checks.
``--dataset emoji,mfeat`` adds real datasets as scenarios (``--missing-rate 0,0.3 --missing mnar`` also
adds their variants with injected missing modalities), in the same results table and report; so does
``--dataset mine.jsonl`` for a researcher's own manifest or Label Studio export (columns strict:
``--modalities`` / ``--ignore-columns``; see :mod:`connectors.own_data`). Bad flag values end with one
line and exit status 2 (:mod:`mmal.usage`). The data preparation behind ``--dataset`` is in
:mod:`benchmark.real_data`, the tables behind ``mmal benchmark table`` in :mod:`benchmark.tables`; both
are re-exported here.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, List, Optional, Sequence

import typer

from benchmark.real_data import RESERVED_HELP, prepare_real, real_scenarios, resolve_datasets  # noqa: F401
from benchmark.tables import matrix_markdown, ours_strategies, results_table, table_markdown  # noqa: F401
from mmal.usage import OneLineErrors, bad_value

app = typer.Typer(help="Simulated-oracle benchmark of multimodal active learning.", no_args_is_help=True,
                  pretty_exceptions_show_locals=False, cls=OneLineErrors)

# what `--suite` accepts, for its help text (benchmark.suites imports torch; a test keeps the two in step)
SUITE_HELP = ("smoke (CI, < 1 min), quick (about 9 min on 2 cores), modality (the modality-aware study, 8 seeds), modality_tuned "
              "(the same, recipe chosen on validation data), ablation (reducible_margin one component at a time), "
              "paper (everything, 5 seeds).")


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
