"""The README's `paper` results table is the output of
`mmal benchmark table results/paper_auto --format matrix` on the run kept in the repository (the default
recipe's; results/paper keeps the old `sgd` one): a table that drifts from its data fails here."""

from __future__ import annotations

import json
import re
from pathlib import Path

from benchmark.cli import matrix_markdown
from benchmark.suites import get_suite

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "results" / "paper_auto"


def test_readme_paper_table_is_the_kept_run():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- paper-table:start -->\n(.*?)<!-- paper-table:end -->", readme, re.S)
    assert block, "README.md lacks the paper-table markers"
    assert block.group(1) == matrix_markdown(RUN)


def test_kept_run_is_a_complete_paper_run():
    """Every scenario x strategy x seed of the `paper` suite as it was run (its config is in run.json)."""
    import pandas as pd

    cfg = json.loads((RUN / "run.json").read_text())["config"]
    assert cfg["suite"] == "paper"
    suite = get_suite("paper").to_dict()
    for key in ("scenarios", "seeds", "scenario_params", "n_initial", "batch_size", "rounds", "recipe_candidates"):
        assert cfg[key] == suite[key], key
    df = pd.read_parquet(RUN / "results.parquet")
    cells = df.groupby(["dataset", "strategy", "seed"])["round"].max()
    want = len(cfg["scenarios"]) * (len(cfg["strategies"]) + 1) * len(cfg["seeds"])  # + the full-pool line
    assert len(cells) == want
