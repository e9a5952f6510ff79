"""Run a benchmark: enumerate cells, execute them in-process or on RQ workers, resume, assemble.

Why per-cell files: a cell's result is written atomically to ``cells/<id>.json`` the moment it
finishes, and ``results.csv`` is always rebuilt from those files. An interrupted run therefore
resumes by skipping the cells whose files exist, never recomputes them, and can never duplicate a
row. Why RQ jobs return their rows instead of writing files: workers may run on machines that do
not see the run folder; the driver writes what comes back. A cell computes the same numbers in any
process because every seed comes from (scenario, seed, round) and torch runs with fixed threads.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import platform
import socket
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping
from urllib.parse import urlsplit, urlunsplit

import pandas as pd
import torch

from backend.data import DataError
from backend.files import replacing, write_json_atomic
from benchmark.protocol import (build_scenario, default_cache_dir, has_scenario, remember_scenario,
                                resolve_recipe, result_columns, run_cell, scenario_key, select_recipe)
from benchmark.suites import REFERENCE_STRATEGY, BenchmarkConfig, check_multi_label_strategies, resolve_strategies

QUEUE_NAME = "mmal-benchmark"
RUN_FORMAT = 1
JOB_TIMEOUT_S = 6 * 3600
RESULT_TTL_S = 7 * 24 * 3600
SCENARIO_KEY_PREFIX = "mmal-benchmark:scenario:"
SCENARIO_MAX_BYTES = 64 * 2**20  # larger built scenarios are rebuilt by each job instead of shared


@dataclass(frozen=True)
class Cell:
    """One unit of work: a strategy (or the full-pool reference) on one scenario with one seed."""

    scenario: str
    strategy: str
    seed: int

    @property
    def id(self) -> str:
        """File- and RQ-safe identifier ('+' in combined scenario names becomes '--')."""
        scen = self.scenario.replace("+", "--")
        safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in scen)
        return f"{safe}__{self.strategy}__s{self.seed}"


def plan_cells(config: BenchmarkConfig) -> list[Cell]:
    """Every cell of a run, in a fixed order: per scenario and seed, the reference then each strategy."""
    cells: list[Cell] = []
    for sc in config.scenarios:
        for seed in config.seeds:
            if config.reference:
                cells.append(Cell(sc, REFERENCE_STRATEGY, seed))
            cells.extend(Cell(sc, st, seed) for st in config.strategies)
    return cells


def dispatch_order(cells: list[Cell]) -> list[Cell]:
    """Cells in the order parallel workers should take them: the first strategy cell of every
    (scenario, seed) first, then the rest in plan order.

    Why: that cell trains the pair's round-0 model, which every later strategy cell of the pair loads
    from the cache; in plan order two workers start two cells of one pair together and both train it.
    Results do not depend on the order (they are assembled in plan order).
    """
    first: list[Cell] = []
    rest: list[Cell] = []
    seen: set[tuple[str, int]] = set()
    for c in cells:
        if c.strategy != REFERENCE_STRATEGY and (c.scenario, c.seed) not in seen:
            seen.add((c.scenario, c.seed))
            first.append(c)
        else:
            rest.append(c)
    return first + rest


# ----------------------------------------------------------------------------------------------
# Run folder bookkeeping
# ----------------------------------------------------------------------------------------------
def package_versions() -> dict[str, str]:
    """Versions of the packages whose behaviour the numbers depend on."""
    out = {"python": sys.version.split()[0]}
    for pkg in ("mmal", "torch", "numpy", "pandas", "scikit-learn", "scipy", "matplotlib", "rq", "redis", "pyarrow"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def machine_info() -> dict[str, Any]:
    """Where the driver ran (workers may differ; results do not)."""
    return {"hostname": socket.gethostname(), "platform": platform.platform(), "machine": platform.machine(),
            "processor": platform.processor(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.is_available()}


def redact_url(url: str) -> str:
    """A queue URL without its password (run.json is shared)."""
    parts = urlsplit(url)
    if parts.password:
        host = parts.hostname or ""
        netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return url


def write_record(path: Path, obj: Any) -> None:
    """A run's JSON record (a cell's rows, run.json): atomic, indented, readable by all (results are shared)."""
    write_json_atomic(path, obj, mode=0o644, indent=1)


def strategy_families(strategies: Iterable[str]) -> dict[str, str]:
    """name (or spec) -> the report's label: 'baseline' (random), 'unimodal' (family classic), 'multimodal'
    (family multimodal, from the literature) or 'ours' (our modality-aware strategies).

    Read from the strategy's class (``family`` and ``origin``), so a new strategy is classified without
    editing the benchmark. The seed paper's claim 3 counts 'multimodal' and 'ours' as multimodal.
    """
    from backend.strategies import StrategySpec

    out = {}
    for name in strategies:
        cls = StrategySpec.parse(name).strategy_class
        if cls.origin in ("baseline", "ours"):
            out[name] = cls.origin
        else:
            out[name] = "unimodal" if cls.family == "classic" else "multimodal"
    return out


def _load_run_json(out: Path) -> dict[str, Any] | None:
    p = out / "run.json"
    if not p.exists():
        return None
    with open(p) as f:
        return json.load(f)


def _read_cell(path: Path) -> dict[str, Any] | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError):
        return None  # a damaged file counts as not done (atomic writes make this rare)


def completed_cells(out: Path) -> set[str]:
    """Ids of the cells whose result files exist and parse."""
    d = out / "cells"
    if not d.exists():
        return set()
    return {p.stem for p in d.glob("*.json") if _read_cell(p) is not None}


def assemble(out: Path, config: BenchmarkConfig) -> pd.DataFrame:
    """Rebuild ``results.csv`` (and ``results.parquet``) from the cell files, in plan order."""
    rows: list[dict[str, Any]] = []
    columns: list[str] = []
    for cell in plan_cells(config):
        data = _read_cell(out / "cells" / f"{cell.id}.json")
        if data is None:
            continue
        for r in data["rows"]:
            rows.append(r)
            for k in r:
                if k not in columns:
                    columns.append(k)
    # base columns (with the multi-label and anchor ones) first, then per-modality columns in first-seen order,
    # reliance_gap last: a run mixing single- and multi-label scenarios keeps one order
    ordered = [c for c in result_columns([], anchor=True, multi_label=True) if c in columns and c != "reliance_gap"]
    ordered += [c for c in columns if c not in ordered and c != "reliance_gap"]
    if "reliance_gap" in columns:
        ordered.append("reliance_gap")
    df = pd.DataFrame(rows, columns=ordered)
    with replacing(out / "results.csv") as tmp:
        df.to_csv(tmp, index=False)
    try:
        with replacing(out / "results.parquet") as tmp:
            df.to_parquet(tmp, index=False)
    except (ImportError, ValueError):  # parquet is a convenience, CSV is the record
        pass
    return df


def load_results(out: str | Path) -> pd.DataFrame:
    """The tidy results of a run folder: ``results.csv``, or ``results.parquet`` alone (how a finished run
    is kept in the repository: results/paper)."""
    p = Path(out) / "results.csv"
    if p.exists():
        return pd.read_csv(p)
    q = Path(out) / "results.parquet"
    if q.exists():
        return pd.read_parquet(q)
    raise DataError(f"{p} does not exist: run `mmal benchmark run --out {out}` first")


# ----------------------------------------------------------------------------------------------
# Progress
# ----------------------------------------------------------------------------------------------
class _Progress:
    """Cells done / total with elapsed time and ETA (rich), or silence."""

    def __init__(self, total: int, done: int, enabled: bool, label: str) -> None:
        self.enabled = enabled
        self._p = None
        if enabled:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)

            self._p = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                               TextColumn("cells"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                               TextColumn("{task.fields[last]}"), transient=False)
            self._p.start()
            self._task = self._p.add_task(label, total=total, completed=done, last="")

    def advance(self, cell: Cell) -> None:
        """One more cell done."""
        if self._p is not None:
            self._p.update(self._task, advance=1, last=cell.id)

    def close(self) -> None:
        """Stop redrawing (the last state stays on screen)."""
        if self._p is not None:
            self._p.stop()


# ----------------------------------------------------------------------------------------------
# Executing cells
# ----------------------------------------------------------------------------------------------
def run_cell_job(config: Mapping[str, Any], scenario: str, strategy: str, seed: int,
                 recipe: Mapping[str, Any] | None = None, cache_dir: str | None = None) -> dict[str, Any]:
    """Execute one cell and return its record; the function RQ workers import and call.

    ``cache_dir`` (the driver's run folder cache) is used when this machine can see it; otherwise the
    worker keeps round-0 models in :func:`benchmark.protocol.default_cache_dir`. Same numbers either way.
    """
    cfg = BenchmarkConfig.from_dict(config)
    cache = Path(cache_dir) if cache_dir and Path(cache_dir).is_dir() else default_cache_dir()
    t0 = time.perf_counter()
    _load_shared_scenario(cfg, scenario, seed)
    rows = run_cell(cfg, scenario, strategy, seed, recipe=recipe, cache_dir=cache)
    return {"cell": {"scenario": scenario, "strategy": strategy, "seed": seed}, "rows": rows,
            "seconds": time.perf_counter() - t0, "host": socket.gethostname(), "pid": os.getpid()}


def _shared_scenario_key(config: BenchmarkConfig, scenario: str, seed: int) -> str:
    digest = hashlib.sha256(scenario_key(config, scenario, seed).encode()).hexdigest()[:32]
    return SCENARIO_KEY_PREFIX + digest


def share_scenarios(conn: Any, config: BenchmarkConfig, cells: Iterable[Cell]) -> list[str]:
    """Put the driver's built scenario of every (scenario, seed) in ``cells`` into Redis for the workers.

    Why: an RQ worker forks a fresh work horse per job, so without this every job rebuilds its scenario
    (sampling, Bayes-optimal ground truth, noise calibration): 0.2 to 2 s of a 2 s cell on the quick
    suite, the same work for every strategy of a pair. Pickled, like RQ's own job payloads in the same
    Redis (no new trust boundary). Returns the keys (the driver deletes them when the run ends; a job
    that finds none rebuilds the scenario, with identical numbers).
    """
    keys: list[str] = []
    for name, seed in dict.fromkeys((c.scenario, c.seed) for c in cells):
        try:
            blob = pickle.dumps(build_scenario(config, name, seed), protocol=pickle.HIGHEST_PROTOCOL)
        except (pickle.PicklingError, TypeError, AttributeError):
            continue  # a scenario holding something unpicklable is rebuilt by each job
        if len(blob) > SCENARIO_MAX_BYTES:
            continue
        key = _shared_scenario_key(config, name, seed)
        conn.set(key, blob, ex=RESULT_TTL_S)
        keys.append(key)
    return keys


def _load_shared_scenario(config: BenchmarkConfig, scenario: str, seed: int) -> None:
    """In an RQ job: take the driver's built scenario from Redis when it is there (see share_scenarios)."""
    from rq import get_current_job

    if has_scenario(config, scenario, seed):
        return
    job = get_current_job()
    if job is None:  # a local run: this process builds (or already holds) the scenario
        return
    blob = job.connection.get(_shared_scenario_key(config, scenario, seed))
    if blob:
        remember_scenario(config, scenario, seed, pickle.loads(blob))


def _overrides(recipes: Mapping[str, Any], cell: Cell) -> dict[str, Any] | None:
    """The chosen recipe candidate's overrides for the cell's scenario (None: the default recipe)."""
    return (recipes.get(cell.scenario) or {}).get("overrides") or None


def _write_cell(out: Path, cell: Cell, record: Mapping[str, Any]) -> None:
    write_record(out / "cells" / f"{cell.id}.json", dict(record))


def _run_local(config: BenchmarkConfig, cells: list[Cell], out: Path, recipes: Mapping[str, Any],
               progress: _Progress, workers: int, on_cell: Callable[[Cell], None] | None) -> None:
    cache = str(out / "cache")
    cfg = config.to_dict()
    if workers <= 1:
        for cell in cells:
            rec = run_cell_job(cfg, cell.scenario, cell.strategy, cell.seed, _overrides(recipes, cell), cache)
            _write_cell(out, cell, rec)
            progress.advance(cell)
            if on_cell:
                on_cell(cell)
        return
    # local processes (spawned: a fresh interpreter per worker, no inherited torch state)
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as ex:
        pending: dict[Future, Cell] = {}
        queue = dispatch_order(cells)
        while queue or pending:
            while queue and len(pending) < 2 * workers:
                cell = queue.pop(0)
                pending[ex.submit(run_cell_job, cfg, cell.scenario, cell.strategy, cell.seed,
                                  _overrides(recipes, cell), cache)] = cell
            done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
            for fut in done:
                cell = pending.pop(fut)
                _write_cell(out, cell, fut.result())
                progress.advance(cell)
                if on_cell:
                    on_cell(cell)


def _run_rq(config: BenchmarkConfig, cells: list[Cell], out: Path, recipes: Mapping[str, Any], progress: _Progress,
            url: str, poll_s: float, on_cell: Callable[[Cell], None] | None) -> None:
    from redis import Redis

    conn = Redis.from_url(url)
    try:
        conn.ping()
    except Exception as e:  # noqa: BLE001 - any connection failure is reported the same way
        raise DataError(f"cannot reach the queue at {redact_url(url)}: {e}") from None
    shared = share_scenarios(conn, config, cells)
    try:
        jobs = _submit(conn, config, dispatch_order(cells), out, recipes)
        _collect(jobs, out, progress, poll_s, on_cell)
    finally:
        if shared:
            try:
                conn.delete(*shared)
            except Exception:  # noqa: BLE001 - cleanup must not hide the error that ended the run; keys expire anyway
                pass


def _submit(conn: Any, config: BenchmarkConfig, cells: list[Cell], out: Path,
            recipes: Mapping[str, Any]) -> dict[str, tuple[Any, Cell]]:
    """Enqueue each cell's job in order (a finished job of an earlier invocation is reused, a failed one redone)."""
    from rq import Queue
    from rq.exceptions import NoSuchJobError
    from rq.job import Job, JobStatus

    q = Queue(QUEUE_NAME, connection=conn)
    cfg = config.to_dict()
    fp = config.fingerprint()
    cache = str((out / "cache").resolve())
    jobs: dict[str, tuple[Any, Cell]] = {}
    for cell in cells:
        job_id = f"mmal-{fp}-{cell.id}"
        job = None
        try:
            job = Job.fetch(job_id, connection=conn)
            status = job.get_status()
            if status in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED):
                job.delete()
                job = None
        except NoSuchJobError:
            job = None
        if job is None:  # not yet submitted (or failed before): submit; a finished one is reused
            job = q.enqueue(run_cell_job, cfg, cell.scenario, cell.strategy, cell.seed, _overrides(recipes, cell),
                            cache, job_id=job_id, job_timeout=JOB_TIMEOUT_S, result_ttl=RESULT_TTL_S,
                            failure_ttl=RESULT_TTL_S, description=f"mmal benchmark {cell.id}")
        jobs[job_id] = (job, cell)
    return jobs


def _collect(jobs: dict[str, tuple[Any, Cell]], out: Path, progress: _Progress, poll_s: float,
             on_cell: Callable[[Cell], None] | None) -> None:
    """Poll the jobs until every one has finished, writing each cell's file as its result arrives."""
    from rq.job import JobStatus

    while jobs:
        for job_id in list(jobs):
            job, cell = jobs[job_id]
            status = job.get_status(refresh=True)
            if status == JobStatus.FINISHED:
                rec = job.return_value(refresh=True)
                if rec is None:
                    raise RuntimeError(f"RQ job {job_id} finished without a result (expired?); rerun to resubmit it")
                _write_cell(out, cell, rec)
                del jobs[job_id]
                progress.advance(cell)
                if on_cell:
                    on_cell(cell)
            elif status in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED):
                res = job.latest_result()
                detail = res.exc_string if res is not None and res.exc_string else str(status)
                raise RuntimeError(f"benchmark cell {cell.id} failed on an RQ worker:\n{detail}")
        if jobs:
            time.sleep(poll_s)


def ensure_recipes(config: BenchmarkConfig, out: Path, previous: Mapping[str, Any] | None) -> dict[str, Any]:
    """Each scenario's recipe: reused from an earlier (interrupted) invocation, else selected now."""
    recipes: dict[str, Any] = dict(previous or {})
    for name in config.scenarios:
        if name in recipes:
            continue
        choice = select_recipe(config, name)
        sc = build_scenario(config, name, config.seeds[0])
        fusion, train = resolve_recipe(config, sc, choice["overrides"])
        recipes[name] = {**choice, "fusion": fusion.to_dict(), "train": train.to_dict()}
    return recipes


def run_benchmark(config: BenchmarkConfig, out: str | Path, *, queue: str | None = None, progress: bool = True,
                  workers: int = 1, poll_s: float = 0.5, max_cells: int | None = None,
                  on_cell: Callable[[Cell], None] | None = None) -> pd.DataFrame:
    """Run (or resume) every cell of ``config`` into the folder ``out``; returns the tidy results.

    queue: ``redis://HOST:PORT/DB`` to run each cell as an RQ job on ``mmal worker`` processes
    (queue name ``mmal-benchmark``); None runs in this process (``workers`` > 1: local processes).
    max_cells: stop after this many new cells (for tests of interruption); on_cell: callback per cell.
    """
    config = resolve_strategies(config)
    check_multi_label_strategies(config)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    prev = _load_run_json(out)
    fp = config.fingerprint()
    if prev is not None and prev.get("fingerprint") != fp:
        raise DataError(f"{out} holds a run with a different configuration (fingerprint {prev.get('fingerprint')} "
                        f"!= {fp}); use another --out folder or the same settings to resume it")
    cells = plan_cells(config)
    done = completed_cells(out)
    todo = [c for c in cells if c.id not in done]
    if max_cells is not None:
        todo = todo[:max_cells]
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    recipes = ensure_recipes(config, out, (prev or {}).get("recipes"))
    scen_info = (prev or {}).get("scenarios") or {}
    for name in config.scenarios:
        for seed in config.seeds:
            if str(seed) not in scen_info.get(name, {}):
                summ = build_scenario(config, name, seed).summary()
                summ["fusion"], summ["train"] = recipes[name]["fusion"], recipes[name]["train"]
                scen_info.setdefault(name, {})[str(seed)] = summ
    invocations = list((prev or {}).get("invocations", []))
    invocations.append({"started": started, "cells_done_before": sum(c.id in done for c in cells), "cells_to_run": len(todo),
                        "queue": redact_url(queue) if queue else None, "workers": workers,
                        "machine": machine_info()})
    run = {
        "format": RUN_FORMAT, "fingerprint": fp, "status": "running", "config": config.to_dict(),
        "seeds": list(config.seeds), "cells_total": len(cells),
        "strategy_families": strategy_families(config.strategies), "recipes": recipes, "scenarios": scen_info,
        "packages": package_versions(), "machine": machine_info(), "invocations": invocations,
        "created": (prev or {}).get("created", started),
    }
    write_record(out / "run.json", run)
    (out / "cache").mkdir(exist_ok=True)
    n_done = sum(c.id in done for c in cells)
    bar = _Progress(len(cells), n_done, progress, f"benchmark {config.suite}")
    try:
        if queue:
            _run_rq(config, todo, out, recipes, bar, queue, poll_s, on_cell)
        else:
            _run_local(config, todo, out, recipes, bar, workers, on_cell)
    finally:
        bar.close()
        df = assemble(out, config)
        remaining = len(cells) - len(completed_cells(out))
        run["status"] = "complete" if remaining == 0 else "incomplete"
        run["cells_remaining"] = remaining
        run["invocations"][-1]["wall_seconds"] = time.perf_counter() - t0
        run["invocations"][-1]["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        run["wall_seconds_total"] = float(sum(i.get("wall_seconds", 0.0) for i in run["invocations"]))
        write_record(out / "run.json", run)
    return df


def preload() -> None:
    """Import what every cell needs (torch, strategies, diagnostics) once, before a worker forks.

    RQ runs each job in a forked work horse; without this every job would pay the imports again.
    """
    import backend.diagnostics  # noqa: F401
    import backend.strategies  # noqa: F401
    import benchmark.scenarios  # noqa: F401

    torch.optim.AdamW([torch.zeros(1, requires_grad=True)])  # first use lazily imports torch._dynamo (seconds)


def _make_worker_class() -> type:
    from rq import Worker

    class BenchmarkWorker(Worker):
        """An RQ worker that preloads the benchmark (``rq worker -w benchmark.runner.BenchmarkWorker``)."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            preload()
            super().__init__(*args, **kwargs)

    return BenchmarkWorker


BenchmarkWorker = _make_worker_class()


def results_identical(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    """True when two results tables agree exactly on every non-timing column (the reproducibility check)."""
    cols = [c for c in a.columns if c not in ("query_seconds", "train_seconds")]
    if list(a.columns) != list(b.columns) or len(a) != len(b):
        return False
    x, y = a[cols].reset_index(drop=True), b[cols].reset_index(drop=True)
    return bool(x.equals(y))

