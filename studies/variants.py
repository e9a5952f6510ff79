"""Exploratory strategy variants of the modality-aware study (issue 7), by study name. Not product code:
nothing here is registered; the harness hands :func:`make_strategy` to ``benchmark.protocol.run_cell``.

Most variants are specs of registered strategies (the benchmark runs the same ones by spec, e.g. the
``ablation`` suite); ``rb*`` are settings of ``ReducibleBadge``, which is deliberately not in the registry
(docs/modality_aware.md: it beat neither ``reducible_margin`` nor the best baseline reliably).
"""

from __future__ import annotations

from typing import Any

from backend.strategies import QueryStrategy, StrategySpec
from backend.strategies.modality_aware import ReducibleBadge

SPECS: dict[str, str] = {
    "rm_strat_only": "reducible_margin(outlier_z=null)",
    "rm_outlier_only": "reducible_margin(stratify=false)",
    "rm_absent": "reducible_margin(outliers=absent)",
    "rm_quota25": "reducible_margin(quota=0.25)",
    "rm_quota50": "reducible_margin(quota=0.5)",
    "rm_z2": "reducible_margin(outlier_z=2.0)",
    "rm_nostrat_q25": "reducible_margin(stratify=false, quota=0.25)",
    "rm_noquota": "reducible_margin(quota=0.0)",
    "ma_noquota": "missing_aware(q_min=0.0, q_max=0.0)",  # missing-discounted fused margin only
}
"""Study name -> the spec of a registered strategy."""

UNREGISTERED: dict[str, tuple[type[QueryStrategy], dict[str, Any]]] = {
    "rb": (ReducibleBadge, {"quota": 0.0}),  # BADGE with outlying copies last
    "rb_auto": (ReducibleBadge, {"quota": "auto"}),  # + reducible_margin's auto weak-modality quota
    "rb_q25": (ReducibleBadge, {"quota": 0.25}),  # + a fixed 25 % weak-modality quota
}
"""Study name -> a strategy class that is not a product strategy, and its settings."""


def make_strategy(name: str) -> QueryStrategy:
    """The strategy of a study name, or of any registered name or spec (``run_cell``'s ``make_strategy``)."""
    if name in UNREGISTERED:
        cls, params = UNREGISTERED[name]
        return cls(**params)
    return StrategySpec.parse(SPECS.get(name, name)).build()
