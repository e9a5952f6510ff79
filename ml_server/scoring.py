"""Strategy ranking -> Label Studio prediction ``score`` (LOW score = label first).

Label Studio orders tasks by ascending prediction score (Data Manager sort on ``predictions_score`` and
its built-in "uncertainty sampling" both serve the lowest score first), while strategies rank by a
priority where higher = query sooner. The contract, for the unlabelled pool of ``n`` tasks ranked
best first by the project's strategy:

    score(task of rank r) = r / n          r = 0 .. n-1, so scores lie in [0, 1)
    score(labelled task)  = 1.0

so the most useful task has the lowest score and ties never occur. Strategies without a per-item
score (batch strategies like BADGE or BMMAL) rank their selected batch (``MMAL_QUERY_BATCH``) first, in
selection order, and the rest of the pool by margin uncertainty.

Tasks that arrive after a training (``/predict`` for a task the worker never ranked) get the score
the same rank would give: their priority is placed among the pool's priorities of that training
(the *calibration*, kept with the model version).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from backend.data import MultimodalDataset, Pool
from backend.models.api import ActiveModel
from backend import heuristics
from backend.strategies.base import QueryStrategy, ScoringStrategy, check_multi_label, is_multi_label

LABELED_SCORE = 1.0


def margin_priority(probs: torch.Tensor, multi_label: bool = False) -> np.ndarray:
    """Fallback priority: 1 - (p_top1 - p_top2) in [0, 1] (higher = more uncertain = query sooner);
    for per-class sigmoids (``multi_label``) 1 - min_c |2 p_c - 1|, the margin of the least certain class."""
    if probs.shape[0] == 0:
        return np.zeros(0)
    if multi_label:
        return (1.0 + heuristics.multilabel_margin(probs.float())).double().cpu().numpy()
    if probs.shape[1] < 2:
        return np.zeros(probs.shape[0])
    top2 = torch.topk(probs.float(), 2, dim=1).values
    return (1.0 - (top2[:, 0] - top2[:, 1])).double().cpu().numpy()


@dataclass
class PoolRanking:
    """The strategy's order of the unlabelled pool and the priorities behind it.

    order: (n,) dataset indices, best first. unlabeled: (n,) the pool's unlabelled indices (sorted).
    priority: (n,) priority of each item of ``unlabeled`` (higher = sooner). ``kind``: ``"strategy"`` when
    the priorities are the strategy's own scores, ``"margin"`` when margin uncertainty stands in for them
    (batch strategies; the selected batch is lifted above every other item).
    """

    order: np.ndarray
    unlabeled: np.ndarray
    priority: np.ndarray
    kind: str

    def scores(self) -> dict[int, float]:
        """dataset index -> Label Studio score (rank / n) for every unlabelled item."""
        n = len(self.order)
        return {int(i): r / n for r, i in enumerate(self.order)}

    def calibration(self) -> np.ndarray:
        """Sorted (ascending) pool priorities: maps a new item's priority to a score."""
        return np.sort(np.asarray(self.priority, dtype=np.float64))


def rank_pool(strategy: QueryStrategy, model: ActiveModel, dataset: MultimodalDataset, pool: Pool, *,
              seed: int = 0, batch: int = 100) -> PoolRanking:
    """Order the whole unlabelled pool by ``strategy`` (best first); see the module docstring."""
    unl = pool.unlabeled
    if unl.size == 0:
        return PoolRanking(np.zeros(0, dtype=np.int64), unl, np.zeros(0), "strategy")
    check_multi_label(strategy, model)
    if isinstance(strategy, ScoringStrategy):
        pri = np.asarray(strategy.score(model, dataset, pool, seed=seed), dtype=np.float64)
        if pri.shape != unl.shape:
            raise AssertionError(f"strategy {strategy.name} returned {pri.shape} scores for {unl.shape} items")
        pri = np.nan_to_num(pri, nan=-np.inf)
        order = unl[np.lexsort((unl, -pri))]
        return PoolRanking(order, unl, pri, "strategy")
    result = strategy.query(model, dataset, pool, min(batch, unl.size), seed=seed)
    first = np.asarray(result.indices, dtype=np.int64)
    # the rest of the pool by margin: the one priority /predict can also compute for a new task
    pri = margin_priority(model.predict(dataset, unl).probs, is_multi_label(model))
    kind = "margin"
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
    return PoolRanking(order, unl, lifted, kind)


def calibrated_score(priority: np.ndarray, calibration: np.ndarray | None) -> np.ndarray:
    """Scores for items ranked *after* a training: the fraction of the pool that outranks each one.

    With no calibration (no pool), the priority itself is squashed to (0, 1) reversed, so that higher
    priority still means a lower score.
    """
    pri = np.asarray(priority, dtype=np.float64)
    if calibration is None or len(calibration) == 0:
        return 1.0 / (1.0 + np.exp(np.clip(pri, -50, 50)))
    cal = np.asarray(calibration, dtype=np.float64)
    n = len(cal)
    greater = n - np.searchsorted(cal, pri, side="right")
    # below every pool item: just after the pool's last rank, still under the labelled tasks' 1.0
    return np.minimum(greater, n - 0.5) / n


def batch_priority(strategy: QueryStrategy, model: ActiveModel, dataset: MultimodalDataset,
                   indices: np.ndarray, *, seed: int = 0, kind: str = "strategy") -> np.ndarray:
    """Priorities of ``indices`` (a ``/predict`` batch) on the same scale as the training's calibration.

    ``kind`` is the calibration's kind: the strategy's own scores when it is a scoring strategy,
    margin priority otherwise (or when the strategy fails on a tiny batch).
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
        except Exception:  # a strategy may need more items than a batch has: fall back, never fail /predict
            pass
    return margin_priority(model.predict(dataset, idx).probs, is_multi_label(model))
