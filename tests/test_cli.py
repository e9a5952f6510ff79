"""The `mmal` command: strategies are listed with their descriptions."""

from __future__ import annotations

from typer.testing import CliRunner

from backend.strategies import list_strategies
from mmal.cli import app


def test_strategies_lists_every_registered_strategy():
    result = CliRunner().invoke(app, ["strategies"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for name in list_strategies():
        assert name in result.output
    for name in ["random", "least_confidence", "margin", "entropy", "bald", "badge", "coreset", "typiclust", "bmmal"]:
        assert name in list_strategies()
