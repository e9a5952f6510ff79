"""The ``mmal`` command: strategies, benchmark, server and workers.

Each sub-command is a thin layer over the engine in ``backend``; heavy imports happen inside the
command so ``mmal --help`` stays instant.
"""

from __future__ import annotations

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


@app.command()
def serve(
    host: str = typer.Option("0.0.0.0", "--host", help="Interface to listen on."),
    port: int = typer.Option(9090, "--port", help="Port Label Studio connects to."),
    workers: int = typer.Option(1, "--workers", help="Uvicorn worker processes."),
) -> None:
    """Run the Label Studio ML backend (FastAPI)."""
    from ml_server.app import serve as run_server

    run_server(host, port, workers=workers)


@app.command()
def worker(
    queue: str = typer.Option("redis://127.0.0.1:6379/0", "--queue", envvar="REDIS_URL", help="Redis URL of the job queues."),
    burst: bool = typer.Option(False, help="Exit when the queues are empty."),
) -> None:
    """Run an RQ worker for Label Studio training jobs and benchmark cells."""
    from benchmark.runner import QUEUE_NAME, preload
    from ml_server.worker import run_worker

    preload()  # import torch and the strategies once, before RQ forks a work horse per job
    run_worker(queue, burst=burst, extra_queues=[QUEUE_NAME])


if __name__ == "__main__":
    app()
