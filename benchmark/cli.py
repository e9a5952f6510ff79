"""``mmal benchmark run|report|scenarios`` and the benchmark worker behind ``mmal worker``.

Thin layer over :mod:`benchmark.runner` and :mod:`benchmark.report`: a suite gives the defaults,
flags change single fields, and the resulting config is what run.json records and resume checks.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional, Sequence

import typer

app = typer.Typer(help="Simulated-oracle benchmark of multimodal active learning.", no_args_is_help=True,
                  pretty_exceptions_show_locals=False)


def _split(value: Optional[str]) -> Optional[list[str]]:
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise typer.BadParameter("needs at least one comma-separated name")
    return items


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
        raise typer.BadParameter(f"seeds must look like '0,1,2' or '0-4', got {value!r}") from None


@app.command()
def run(
    suite: str = typer.Option("quick", "--suite", help="smoke (CI, < 1 min), quick (< 5 min), paper (everything, 5 seeds)."),
    out: Path = typer.Option(..., "--out", help="Run folder: results.csv, run.json, cells/, report. Reusing it resumes."),
    scenarios: Optional[str] = typer.Option(None, help="Comma-separated scenarios (see `mmal benchmark scenarios`)."),
    strategies: Optional[str] = typer.Option(None, help="Comma-separated strategies, or 'all'."),
    seeds: Optional[str] = typer.Option(None, help="Seeds: '0,1,2' or '0-4'."),
    rounds: Optional[int] = typer.Option(None, help="Most query rounds per cell."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Items queried per round."),
    budget: Optional[float] = typer.Option(None, help="Query budget in oracle cost units (initial set not charged)."),
    n_initial: Optional[int] = typer.Option(None, "--initial", help="Size of the random initial labelled set."),
    items: Optional[int] = typer.Option(None, help="Pool size of every scenario."),
    label_noise: Optional[float] = typer.Option(None, "--label-noise", help="Oracle label-noise rate."),
    cost_per_modality: Optional[float] = typer.Option(None, "--cost-per-modality",
                                                      help="Extra oracle cost per present modality."),
    queue: Optional[str] = typer.Option(None, "--queue", help="redis://HOST:PORT/DB: run every cell as an RQ job "
                                                              "executed by `mmal worker` processes."),
    workers: int = typer.Option(1, help="In-process mode only: local worker processes (1 = this process)."),
    report: bool = typer.Option(True, help="Write the report when the run completes."),
    progress: bool = typer.Option(True, help="Show a progress bar with cells done and ETA."),
) -> None:
    """Run (or resume) a benchmark suite into OUT."""
    from dataclasses import replace

    from benchmark.report import build_report
    from benchmark.runner import run_benchmark
    from benchmark.suites import get_suite

    cfg = get_suite(suite)
    changes: dict = {}
    if scenarios is not None:
        changes["scenarios"] = tuple(_split(scenarios) or ())
    if strategies is not None:
        changes["strategies"] = tuple(_split(strategies) or ())
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
    if items is not None:
        changes["scenario_params"] = {**cfg.scenario_params, "n_items": items}
    if label_noise is not None or cost_per_modality is not None:
        o = cfg.oracle
        changes["oracle"] = replace(o, **({"noise_rate": label_noise} if label_noise is not None else {}),
                                    **({"cost_per_modality": cost_per_modality} if cost_per_modality is not None else {}))
    if changes:
        cfg = cfg.with_(**changes)
    t0 = time.perf_counter()
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


@app.command("scenarios")
def scenarios_cmd() -> None:
    """List the named scenarios (combine with '+', e.g. difficulty+missing_mnar_30)."""
    from rich.console import Console
    from rich.table import Table

    from benchmark.scenarios import list_scenarios

    table = Table("scenario", "what it isolates", title="benchmark scenarios")
    for name, desc in list_scenarios().items():
        table.add_row(name, desc)
    Console().print(table)


def run_worker(queue: str, *, burst: bool = False, extra_queues: Sequence[str] = (), name: str | None = None) -> bool:
    """Serve benchmark cells (queue ``mmal-benchmark``, plus ``extra_queues``) from the Redis at ``queue``."""
    from redis import Redis
    from rq import Queue

    from benchmark.runner import QUEUE_NAME, BenchmarkWorker

    conn = Redis.from_url(queue)
    names = [QUEUE_NAME, *[q for q in extra_queues if q != QUEUE_NAME]]
    w = BenchmarkWorker([Queue(n, connection=conn) for n in names], connection=conn, name=name)
    return bool(w.work(burst=burst))


def worker(queue: str = typer.Option("redis://127.0.0.1:6379/0", "--queue", envvar="REDIS_URL",
                                     help="Redis URL of the benchmark queue."),
           burst: bool = typer.Option(False, help="Exit when the queue is empty.")) -> None:
    """Run an RQ worker for benchmark cells (mount as ``mmal worker``)."""
    run_worker(queue, burst=burst)
