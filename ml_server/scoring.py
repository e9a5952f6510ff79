"""A strategy's ranks -> Label Studio prediction ``score`` (LOW score = label first).

Label Studio orders tasks by ascending prediction score (Data Manager sort on ``predictions_score`` and
its built-in "uncertainty sampling" both serve the lowest score first). The engine ranks
(:mod:`backend.strategies.ranking`: the whole pool's order, batch strategies' batch first and the rest by
margin, and the place of a new task); this module only turns ranks into scores. For the unlabelled pool of
``n`` tasks ranked best first:

    score(task of rank r) = r / n          r = 0 .. n-1, so scores lie in [0, 1)
    score(labelled task)  = 1.0

so the most useful task has the lowest score and ties never occur. Tasks that arrive after a training
(``/predict`` for a task the worker never ranked) get the score the same rank would give: the rank of
their priority among the pool's priorities of that training (the *calibration*, kept with the model version).
"""

from __future__ import annotations

import numpy as np

from backend.strategies.ranking import Ranking, place_among

LABELED_SCORE = 1.0


def pool_scores(ranking: Ranking) -> dict[int, float]:
    """dataset index -> Label Studio score (rank / n) for every unlabelled item of ``ranking``."""
    n = len(ranking.order)
    return {int(i): r / n for r, i in enumerate(ranking.order)}


def calibrated_score(priority: np.ndarray, calibration: np.ndarray | None) -> np.ndarray:
    """Scores for items ranked *after* a training: the fraction of the pool that outranks each one.

    With no calibration (no pool), the priority itself is squashed to (0, 1) reversed, so that higher
    priority still means a lower score.
    """
    pri = np.asarray(priority, dtype=np.float64)
    if calibration is None or len(calibration) == 0:
        return 1.0 / (1.0 + np.exp(np.clip(pri, -50, 50)))
    return place_among(pri, calibration) / len(calibration)
