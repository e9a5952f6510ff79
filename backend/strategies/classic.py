"""Classic unimodal query strategies: random and the uncertainty heuristics on fused probabilities.

These are the baselines every multimodal strategy must beat (and, per the literature, often does
not: entropy and margin are hard to beat). Each ranks the unlabelled pool by a per-item score
(:mod:`backend.heuristics`, higher = query sooner) computed from one batched prediction over the
whole pool, and takes the top ``n`` (ties to the lowest dataset index).
"""

from __future__ import annotations

import numpy as np
import torch

from backend import heuristics
from backend.data import MultimodalDataset, Pool, QueryError
from backend.models.api import ActiveModel
from backend.strategies.base import ScoringStrategy, is_multi_label
from backend.strategies.registry import register

__all__ = ["RandomStrategy", "LeastConfidence", "Margin", "Entropy", "BALD"]


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float64).numpy()


def _pool_probs(model: ActiveModel, dataset: MultimodalDataset, pool: Pool) -> torch.Tensor:
    """(U, C) fused probabilities of the unlabelled pool, one batched predict call."""
    return model.predict(dataset, pool.unlabeled).probs


def _heuristic(model: ActiveModel, single, multi):
    """The single-label heuristic, or its ``multilabel_*`` form for a model of label sets."""
    return multi if is_multi_label(model) else single


@register
class RandomStrategy(ScoringStrategy):
    """Uniform random sampling without replacement.

    score_i ~ U(0, 1) i.i.d. from ``np.random.default_rng(seed)``; the top-n of i.i.d. uniforms is a
    uniformly random n-subset. The model is never called.
    """

    name = "random"
    description = "uniformly random items (seeded); the baseline every strategy must beat"
    family = "classic"
    origin = "baseline"
    multi_label = True

    def score(self, model: ActiveModel, dataset: MultimodalDataset, pool: Pool, *, seed: int) -> np.ndarray:
        return np.random.default_rng(seed).random(pool.unlabeled.size)


@register
class LeastConfidence(ScoringStrategy):
    """Least confidence: ``score_i = 1 - max_c p(c | x_i)`` on the fused probabilities.

    Multi-label: ``1 - prod_c max(p_c, 1 - p_c)``, one minus the probability of the most likely set.
    """

    name = "least_confidence"
    description = "items whose most likely class has the lowest fused probability"
    family = "classic"
    origin = "literature"
    multi_label = True

    def score(self, model: ActiveModel, dataset: MultimodalDataset, pool: Pool, *, seed: int) -> np.ndarray:
        f = _heuristic(model, heuristics.least_confidence, heuristics.multilabel_least_confidence)
        return _to_numpy(f(_pool_probs(model, dataset, pool)))


@register
class Margin(ScoringStrategy):
    """Smallest margin: ``score_i = -(p_(1) - p_(2))``, the negated gap between the two top classes.

    Multi-label: ``-min_c |2 p_c - 1|``, the margin to 1/2 of the least certain class.
    """

    name = "margin"
    description = "items with the smallest gap between the two most likely classes (fused)"
    family = "classic"
    origin = "literature"
    multi_label = True

    def score(self, model: ActiveModel, dataset: MultimodalDataset, pool: Pool, *, seed: int) -> np.ndarray:
        f = _heuristic(model, heuristics.margin, heuristics.multilabel_margin)
        return _to_numpy(f(_pool_probs(model, dataset, pool)))


@register
class Entropy(ScoringStrategy):
    """Maximum entropy: ``score_i = -sum_c p(c | x_i) log p(c | x_i)`` on the fused probabilities.

    Multi-label: the mean binary entropy of the per-class probabilities.
    """

    name = "entropy"
    description = "items with the highest predictive entropy of the fused probabilities"
    family = "classic"
    origin = "literature"
    multi_label = True

    def score(self, model: ActiveModel, dataset: MultimodalDataset, pool: Pool, *, seed: int) -> np.ndarray:
        f = _heuristic(model, heuristics.entropy, heuristics.multilabel_entropy)
        return _to_numpy(f(_pool_probs(model, dataset, pool)))


@register
class BALD(ScoringStrategy):
    """BALD (Houlsby et al. 2011) with MC dropout (Gal et al. 2017).

    ``score_i = H(mean_t p_t(x_i)) - mean_t H(p_t(x_i))`` over ``n_samples`` dropout passes seeded by
    ``seed``: the mutual information between the label and the model weights. Multi-label: the mean
    over classes of each class's binary BALD.
    """

    name = "bald"
    description = "mutual information between label and weights over MC-dropout samples (T=20)"
    family = "classic"
    origin = "literature"
    multi_label = True

    def __init__(self, n_samples: int = 20) -> None:
        if int(n_samples) < 2:
            raise QueryError(f"bald needs n_samples >= 2 MC-dropout passes, got {n_samples}")
        self.n_samples = int(n_samples)

    def score(self, model: ActiveModel, dataset: MultimodalDataset, pool: Pool, *, seed: int) -> np.ndarray:
        mc = model.predict_mc_dropout(dataset, pool.unlabeled, self.n_samples, seed)
        return _to_numpy(_heuristic(model, heuristics.bald, heuristics.multilabel_bald)(mc))
