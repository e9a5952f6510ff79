"""The order of a whole unlabelled pool by a strategy, and where a new item falls in it.

A query strategy picks a batch; an annotation tool serves one task after another, so it needs an order of
every unlabelled item (best first) and, for an item that arrives later, the place the same order would
give it. The policy, for the unlabelled pool ``U`` and a strategy:

- a *scoring* strategy (:class:`~backend.strategies.base.ScoringStrategy`) orders ``U`` by its own
  priority (higher first, ties to the lower dataset index; NaN last);
- a *batch* strategy (BADGE, BMMAL, core-set, ...) has no priority for items beyond its batch: its
  selected batch (``batch`` items) comes first, in selection order, then the rest of ``U`` by margin
  uncertainty (:func:`backend.heuristics.margin_uncertainty`), the one priority that can also be computed
  for a single new item; the batch's priorities are lifted above every other one.

The *calibration* (the pool's priorities, sorted) is kept with a model: a new item's priority
(:func:`item_priority`, on the same scale) is placed among them (:func:`place_among`), so it gets the
rank the pool order would have given it. Turning ranks into an annotation tool's scores is the caller's
business (``ml_server.scoring`` for Label Studio).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from backend.data import MultimodalDataset, Pool
from backend.heuristics import margin_uncertainty
from backend.models.api import ActiveModel
from backend.strategies.base import QueryStrategy, ScoringStrategy, check_multi_label, is_multi_label

__all__ = ["Ranking", "rank", "item_priority", "place_among", "margin_priority"]

RankingKind = Literal["strategy", "margin"]


def margin_priority(probs: torch.Tensor, multi_label: bool = False) -> np.ndarray:
    """(n,) float64 margin uncertainty in [0, 1] (higher = query sooner): the priority that stands in for a
    batch strategy's beyond its batch (:func:`backend.heuristics.margin_uncertainty`, in float32)."""
    return margin_uncertainty(probs.float(), multi_label).double().cpu().numpy()


@dataclass
class Ranking:
    """A strategy's order of the unlabelled pool and the priorities behind it.

    order: (n,) dataset indices, best first. unlabeled: (n,) the pool's unlabelled indices (sorted).
    priority: (n,) priority of each item of ``unlabeled`` (higher = sooner). ``kind``: ``"strategy"`` when
    the priorities are the strategy's own scores, ``"margin"`` when margin uncertainty stands in for them
    (batch strategies; the selected batch is lifted above every other item).
    """

    order: np.ndarray
    unlabeled: np.ndarray
    priority: np.ndarray
    kind: RankingKind

    def calibration(self) -> np.ndarray:
        """Sorted (ascending) pool priorities: where a new item's priority falls (:func:`place_among`)."""
        return np.sort(np.asarray(self.priority, dtype=np.float64))


def rank(strategy: QueryStrategy, model: ActiveModel, dataset: MultimodalDataset, pool: Pool, *,
         seed: int = 0, batch: int = 100) -> Ranking:
    """Order the whole unlabelled pool by ``strategy``, best first (see the module docstring)."""
    unl = pool.unlabeled
    if unl.size == 0:
        return Ranking(np.zeros(0, dtype=np.int64), unl, np.zeros(0), "strategy")
    check_multi_label(strategy, model)
    if isinstance(strategy, ScoringStrategy):
        pri = np.asarray(strategy.score(model, dataset, pool, seed=seed), dtype=np.float64)
        if pri.shape != unl.shape:
            raise AssertionError(f"strategy {strategy.name} returned {pri.shape} scores for {unl.shape} items")
        pri = np.nan_to_num(pri, nan=-np.inf)
        order = unl[np.lexsort((unl, -pri))]
        return Ranking(order, unl, pri, "strategy")
    result = strategy.query(model, dataset, pool, min(batch, unl.size), seed=seed)
    first = np.asarray(result.indices, dtype=np.int64)
    # the rest of the pool by margin: the one priority item_priority can also compute for a new item
    pri = margin_priority(model.predict(dataset, unl).probs, is_multi_label(model))
    rest_mask = ~np.isin(unl, first)
    rest = unl[rest_mask]
    rest_pri = pri[rest_mask]
    rest_order = rest[np.lexsort((rest, -rest_pri))]
    order = np.concatenate([first, rest_order])
    # the selected batch outranks the rest: lift its priorities above every other one
    lifted = pri.copy()
    if first.size:
        top = float(np.max(pri)) if pri.size else 0.0
        sel_pos = {int(i): k for k, i in enumerate(first)}
        for j, i in enumerate(unl):
            k = sel_pos.get(int(i))
            if k is not None:
                lifted[j] = top + 1.0 + (first.size - k)
    return Ranking(order, unl, lifted, "margin")


def item_priority(strategy: QueryStrategy, model: ActiveModel, dataset: MultimodalDataset, indices: np.ndarray, *,
                  seed: int = 0, kind: RankingKind = "strategy") -> np.ndarray:
    """Priorities of ``indices`` (items the ranking never saw) on the scale of a :class:`Ranking` of ``kind``.

    The strategy's own scores when ``kind`` is ``"strategy"`` and it is a scoring strategy, margin
    priority otherwise (or when the strategy fails on so few items).
    """
    idx = np.asarray(indices, dtype=np.int64)
    if idx.size == 0:
        return np.zeros(0)
    if kind == "strategy" and isinstance(strategy, ScoringStrategy) and idx.size:
        pool = Pool.from_labeled(len(dataset), np.setdiff1d(np.arange(len(dataset)), idx))
        try:
            pri = np.asarray(strategy.score(model, dataset, pool, seed=seed), dtype=np.float64)
            # pool.unlabeled is sorted; map back to the order of ``idx``
            lookup = dict(zip(pool.unlabeled.tolist(), pri.tolist()))
            return np.array([lookup[int(i)] for i in idx])
        except Exception:  # a strategy may need more items than a batch has: fall back, never fail
            pass
    return margin_priority(model.predict(dataset, idx).probs, is_multi_label(model))


def place_among(priority: np.ndarray, calibration: np.ndarray) -> np.ndarray:
    """(n,) float64 rank each priority would have had in the pool of ``calibration`` (a non-empty
    :meth:`Ranking.calibration`): how many pool items outrank it, at most ``len(calibration) - 0.5`` (an item
    below the whole pool comes just after its last rank)."""
    pri = np.asarray(priority, dtype=np.float64)
    cal = np.asarray(calibration, dtype=np.float64)
    n = len(cal)
    greater = n - np.searchsorted(cal, pri, side="right")
    return np.minimum(greater, n - 0.5)
