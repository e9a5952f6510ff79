"""The ``mmal`` command: strategies, benchmark, server and workers.

Each sub-command is a thin layer over the engine in ``backend``; heavy imports happen inside the
command so ``mmal --help`` stays instant.
"""

from __future__ import annotations

import inspect
from enum import StrEnum
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from benchmark.cli import app as benchmark_app
from mmal.usage import OneLineErrors

app = typer.Typer(help="mmal: modality-aware active learning for multimodal data.", no_args_is_help=True,
                  pretty_exceptions_show_locals=False, cls=OneLineErrors)
app.add_typer(benchmark_app, name="benchmark", help="Simulated-oracle benchmark: run suites and write reports.")


def constructor_params(cls: type) -> dict[str, Any]:
    """name -> default (``inspect.Parameter.empty`` when required) of ``cls``'s constructor: what a
    strategy spec ``name(key=value)`` or a featurizer's parameters can set, read from the code itself."""
    out: dict[str, Any] = {}
    for p in inspect.signature(cls.__init__).parameters.values():
        if p.name == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        out[p.name] = p.default
    return out


def _params_text(cls: type) -> str:
    parts = [k if v is inspect.Parameter.empty else f"{k}={v!r}" for k, v in constructor_params(cls).items()]
    return ", ".join(parts) or "-"


@app.command()
def strategies() -> None:
    """List every registered query strategy: description and parameters (set them as 'name(key=value)')."""
    from backend.strategies import list_strategies, strategy_class

    table = Table("strategy", "description", "parameters (defaults)", title="query strategies "
                  "(variants: --strategies 'name(key=value)')")
    for name, description in list_strategies().items():
        table.add_row(name, description, _params_text(strategy_class(name)))
    Console().print(table)


def featurizer_rows() -> list[dict[str, str]]:
    """One row per registered featurizer: name, modality kind, pretrained or not, parameters, description."""
    from backend.encoders.base import Featurizer
    from backend.encoders.registry import featurizer_class, list_featurizers

    rows = []
    for name in list_featurizers():
        cls = featurizer_class(name)
        pretrained = cls.weights_hash is not Featurizer.weights_hash  # overridden: it has weights to digest
        rows.append({"name": name, "kind": cls.kind, "pretrained": "yes" if pretrained else "no",
                     "params": _params_text(cls), "description": cls.description})
    return rows


@app.command()
def featurizers() -> None:
    """List every featurizer: modality kind, whether it uses pretrained weights, its parameters.

    Presets for `mmal benchmark run --featurizers`: pretrained (efficientnet_lite0, minilm) and simple
    (image_pixels, text_tokens); vectors always use vector.
    """
    table = Table("featurizer", "kind", "pretrained", "parameters (defaults)", "description",
                  title="featurizers (--featurizers pretrained: efficientnet_lite0 + minilm; simple: image_pixels + "
                        "text_tokens)")
    for r in featurizer_rows():
        table.add_row(r["name"], r["kind"], r["pretrained"], r["params"], r["description"])
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
