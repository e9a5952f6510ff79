"""The query-strategy interface.

One typed method, in the spirit of small-text: given the trained model, the dataset and the pool,
return ``n`` indices into the *full* dataset, best first. The registry by name is
:mod:`backend.strategies.registry`, a strategy with settings :mod:`backend.strategies.spec`, the order of
a whole pool :mod:`backend.strategies.ranking`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from backend.data import MultimodalDataset, Pool, QueryError
from backend.models.api import ActiveModel
from backend.strategies.registry import multi_label_strategies

__all__ = ["QueryError", "QueryResult", "QueryStrategy", "ScoringStrategy", "is_multi_label", "check_multi_label",
           "require_multi_label"]


@dataclass
class QueryResult:
    """``indices``: (n,) dataset indices, best first. ``scores``: (len(scored),) per-item priority of
    ``scored`` (dataset indices; higher = query sooner) or None when the strategy has no per-item score.

    ``scores`` say why the batch was chosen (tests and studies read them); the order of a whole pool,
    which the Label Studio server publishes, is :func:`backend.strategies.ranking.rank`'s.
    """

    indices: np.ndarray
    scores: np.ndarray | None = None
    scored: np.ndarray | None = None


class QueryStrategy(ABC):
    """Selects items to label next. Subclasses set ``name``, ``description``, ``family`` and ``origin`` and
    implement ``select``.

    ``family``: ``classic`` (reads the fused prediction or embedding only) or ``multimodal`` (reads what a
    multimodal model exposes beyond it: each modality's head, presence masks, reliance on each modality).
    ``origin``: ``baseline`` (random), ``literature`` (a published method, cited in the docstring) or ``ours``.
    ``multi_label``: the strategy has a defined form for multi-label models (per-class sigmoid
    probabilities, ``model.multi_label``); the others refuse such a model with a :class:`QueryError`
    naming the strategy instead of reading sigmoids as a distribution.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    family: ClassVar[str] = ""
    origin: ClassVar[str] = ""
    multi_label: ClassVar[bool] = False

    def query(self, model: ActiveModel, dataset: MultimodalDataset, pool: Pool, n: int, *, seed: int = 0) -> QueryResult:
        """Validate the request, then delegate to :meth:`select`. Returns exactly ``n`` unique unlabelled indices."""
        if pool.size != len(dataset):
            raise QueryError(f"pool covers {pool.size} items but the dataset has {len(dataset)}")
        if n <= 0:
            raise QueryError(f"n must be positive, got {n}")
        if pool.unlabeled.size == 0:
            raise QueryError("the unlabelled pool is empty: nothing left to query")
        if n > pool.unlabeled.size:
            raise QueryError(f"asked for {n} items but only {pool.unlabeled.size} are unlabelled")
        check_multi_label(self, model)
        result = self.select(model, dataset, pool, n, seed=seed)
        idx = np.asarray(result.indices, dtype=np.int64)
        if idx.shape != (n,) or np.unique(idx).size != n or not np.isin(idx, pool.unlabeled).all():
            raise AssertionError(f"strategy {self.name} returned an invalid selection")  # a bug, not bad input
        result.indices = idx
        return result

    @abstractmethod
    def select(self, model: ActiveModel, dataset: MultimodalDataset, pool: Pool, n: int, *, seed: int) -> QueryResult:
        """Pick ``n`` items from ``pool.unlabeled`` (already validated: 0 < n <= len(pool.unlabeled))."""


def is_multi_label(model: ActiveModel) -> bool:
    """True for a model of label sets (per-class sigmoids)."""
    return bool(getattr(model, "multi_label", False))


def check_multi_label(strategy: QueryStrategy, model: ActiveModel) -> None:
    """Refuse a multi-label model for a strategy without a multi-label form (see :func:`require_multi_label`)."""
    if is_multi_label(model):
        require_multi_label(strategy)


def require_multi_label(strategy: QueryStrategy | type[QueryStrategy]) -> None:
    """QueryError naming ``strategy`` (an object or its class; and those that have one) unless it has a
    multi-label form."""
    if not strategy.multi_label:
        ok = multi_label_strategies()
        raise QueryError(f"strategy '{strategy.name}' has no multi-label form (its formula reads one class per "
                         f"item); for multi-label projects use one of: {', '.join(ok)}")


class ScoringStrategy(QueryStrategy):
    """A strategy that ranks items independently by a score: top-``n`` with index tie-breaking."""

    @abstractmethod
    def score(self, model: ActiveModel, dataset: MultimodalDataset, pool: Pool, *, seed: int) -> np.ndarray:
        """(len(pool.unlabeled),) float64 priorities of ``pool.unlabeled`` (higher = query sooner)."""

    def select(self, model: ActiveModel, dataset: MultimodalDataset, pool: Pool, n: int, *, seed: int) -> QueryResult:
        scores = np.asarray(self.score(model, dataset, pool, seed=seed), dtype=np.float64)
        order = np.lexsort((pool.unlabeled, -scores))  # descending score, then ascending index
        return QueryResult(pool.unlabeled[order[:n]], scores, pool.unlabeled)
