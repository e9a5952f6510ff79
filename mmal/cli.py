"""The ``mmal`` command: strategies, benchmark, server and workers.

Each sub-command is a thin layer over the engine in ``backend``; heavy imports happen inside the
command so ``mmal --help`` stays instant.
"""

from __future__ import annotations

from enum import StrEnum

import typer
from rich.console import Console
from rich.table import Table

from benchmark.cli import app as benchmark_app

app = typer.Typer(help="mmal: modality-aware active learning for multimodal data.", no_args_is_help=True,
                  pretty_exceptions_show_locals=False)
app.add_typer(benchmark_app, name="benchmark", help="Simulated-oracle benchmark: run suites and write reports.")


@app.command()
def strategies() -> None:
    """List every registered query strategy with a one-line description."""
    from backend.strategies.base import list_strategies

    table = Table("strategy", "description", title="query strategies")
    for name, description in list_strategies().items():
        table.add_row(name, description)
    Console().print(table)


class LogLevel(StrEnum):
    """``--log-level`` values: ml_server.settings.LOG_LEVELS, here without importing pydantic for --help."""

    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"
    CRITICAL = "CRITICAL"


def _log_level_option() -> typer.models.OptionInfo:
    return typer.Option(None, "--log-level", case_sensitive=False, show_default=False,
                        help="Log level (any case); overrides LOG_LEVEL (default INFO).")


def _check_settings() -> None:
    """Stop with one line naming the variable when the environment's settings are invalid (exit 2)."""
    from pydantic import ValidationError

    from ml_server.settings import get_settings

    try:
        get_settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        name = ".".join(str(part) for part in first["loc"])
        typer.echo(f"Error: environment variable {name}={first.get('input')!r}: {first['msg']}", err=True)
        raise typer.Exit(2) from None


@app.command()
def serve(
    host: str = typer.Option("0.0.0.0", "--host", help="Interface to listen on."),
    port: int = typer.Option(9090, "--port", help="Port Label Studio connects to."),
    workers: int = typer.Option(1, "--workers", help="Uvicorn worker processes."),
    log_level: LogLevel | None = _log_level_option(),
) -> None:
    """Run the Label Studio ML backend (FastAPI)."""
    _check_settings()
    from ml_server.app import serve as run_server

    run_server(host, port, workers=workers, log_level=log_level.value if log_level else None)


@app.command()
def worker(
    queue: str = typer.Option("redis://127.0.0.1:6379/0", "--queue", envvar="REDIS_URL", help="Redis URL of the job queues."),
    burst: bool = typer.Option(False, help="Exit when the queues are empty."),
    log_level: LogLevel | None = _log_level_option(),
) -> None:
    """Run an RQ worker for Label Studio training jobs and benchmark cells."""
    _check_settings()
    from benchmark.runner import QUEUE_NAME, preload
    from ml_server.worker import run_worker

    preload()  # import torch and the strategies once, before RQ forks a work horse per job
    run_worker(queue, burst=burst, extra_queues=[QUEUE_NAME], log_level=log_level.value if log_level else None)


if __name__ == "__main__":
    app()
