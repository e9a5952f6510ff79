"""Multimodal query strategies from the literature: BMMAL (Shen et al., ACM MM 2023).

BMMAL ("Towards Balanced Active Learning for Multimodal Classification") rebalances BADGE: the
gradient embedding of each modality is scaled down for samples on which the model already relies
more on another modality, so k-means++ seeding does not keep picking items that only teach the
dominant modality.

Per sample, with v(S) = fused probability of the predicted class (of the full model) when only the
modalities in S are present (the others dropped, i.e. treated as absent via
``model.predict(drop=...)``; the paper zeroes features, our models have an explicit absent state):

  M = 2, p = v({1,2}), p_-1 = v({2}), p_-2 = v({1}), p_-12 = v({}):
      D1 = ((p - p_-1) + (p_-2 - p_-12)) / 2,   D2 = ((p - p_-2) + (p_-1 - p_-12)) / 2
  M > 2: D_k = the exact M-player Shapley value of modality k under the same v (which is exactly
      the formula above for M = 2).
  phi_k = |D_k| / sum_j |D_j|   (uniform 1/M when every D_j is 0)
  s_k   = 1 - (max_j phi_j - phi_k)   (the strongest keeps 1; for M = 2 the weaker gets
          1 - (phi_strong - phi_weak), the paper's rule)

Embedding: g_i = concat_k s_k(i) * (a_i ⊗ z_k(i)), a_i = p_i - onehot(yhat_i), z_k = modality k's
embedding; the batch is picked by k-means++ seeding on g without materialising N x C*d
(:class:`backend.kernels.FactoredEmbedding`); the first centre is the largest-norm point, as in the
BADGE reference code (``first="random"`` for a seeded uniform start).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from backend import kernels
from backend.data import MultimodalDataset, Pool, QueryError
from backend.diagnostics import modality_shapley
from backend.models.api import ActiveModel
from backend.strategies.base import QueryResult, QueryStrategy
from backend.strategies.registry import register


def _at_prediction(v: torch.Tensor, yhat: torch.Tensor | None) -> torch.Tensor:
    """(n,) values: v itself if 1-D, else v gathered at class ``yhat``."""
    if v.ndim == 1:
        return v
    if v.ndim != 2 or yhat is None:
        raise QueryError(f"probabilities must be (n,) or (n, C), got shape {tuple(v.shape)}")
    return v.gather(1, yhat.unsqueeze(1)).squeeze(1)


def shares_from_shapley(d: torch.Tensor) -> torch.Tensor:
    """(n, M) phi_k = |D_k| / sum_j |D_j| per sample; uniform 1/M where every D_j is 0."""
    if d.ndim != 2 or d.shape[1] < 1:
        raise QueryError(f"Shapley values must be (n, M), got shape {tuple(d.shape)}")
    a = d.abs()
    tot = a.sum(dim=1, keepdim=True)
    uniform = torch.full_like(a, 1.0 / a.shape[1])
    return torch.where(tot > 0, a / torch.where(tot > 0, tot, torch.ones_like(tot)), uniform)


def scales_from_shapley(d: torch.Tensor) -> torch.Tensor:
    """(n, M) BMMAL scales s_k = 1 - (max_j phi_j - phi_k) from per-sample Shapley values D (n, M)."""
    phi = shares_from_shapley(d)
    return 1.0 - (phi.max(dim=1, keepdim=True).values - phi)


def bmmal_scales(
    p: torch.Tensor, p_minus1: torch.Tensor, p_minus2: torch.Tensor, p_none: torch.Tensor
) -> torch.Tensor:
    """(n, 2) BMMAL per-sample scales of modalities 1 and 2 (the paper's two-player formula).

    Arguments are the fused probability of the predicted class with both modalities (p), without
    modality 1 (p_minus1), without modality 2 (p_minus2) and with neither (p_none): each (n,), or
    (n, C) full probability rows, then read at the predicted class argmax(p).
    """
    yhat = p.argmax(dim=1) if p.ndim == 2 else None
    vals = [_at_prediction(torch.as_tensor(v), yhat).double() for v in (p, p_minus1, p_minus2, p_none)]
    n = vals[0].shape[0]
    if any(v.shape != (n,) for v in vals):
        raise QueryError(f"p, p_minus1, p_minus2, p_none must have the same length, got {[tuple(v.shape) for v in vals]}")
    v12, v2, v1, v0 = vals  # v(S): S = {1,2}, {2} (1 removed), {1} (2 removed), {}
    d1 = ((v12 - v2) + (v1 - v0)) / 2
    d2 = ((v12 - v1) + (v2 - v0)) / 2
    return scales_from_shapley(torch.stack([d1, d2], dim=1))


def bmmal_factors(
    model: ActiveModel, dataset: MultimodalDataset, indices: np.ndarray
) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
    """Factors of the BMMAL embedding for ``indices``: (a (n, C), [z_k (n, d_k)], scales (n, M)).

    g_i = concat_k scales[i, k] * (a_i ⊗ z_k(i)), a_i = p_i - onehot(argmax p_i). 2^M forward passes.
    """
    pred = model.predict(dataset, indices)
    p = pred.probs.float()
    yhat = p.argmax(dim=1)
    d = modality_shapley(model, dataset, indices, target=yhat.cpu().numpy(), full_probs=p)
    scales = scales_from_shapley(d).to(p.dtype)
    a = p - torch.nn.functional.one_hot(yhat, p.shape[1]).to(p.dtype)
    zs = [pred.embeddings[k].float() for k in model.modality_names]
    return a, zs, scales


@register
class BMMAL(QueryStrategy):
    """BMMAL (Shen et al. 2023): BADGE on Shapley-rebalanced per-modality gradient embeddings.

    See the module docstring for the formula. Cost: 2^M forward passes over the unlabelled pool
    and O(n N (C + sum_k d_k)) for the seeding, memory O(N (C + sum_k d_k)). ``scores`` are the norms
    of the scaled gradient embeddings (BADGE's uncertainty term), an order for items beyond the batch.
    """

    name = "bmmal"
    description = "BMMAL: k-means++ on BADGE embeddings per modality, scaled by per-sample Shapley balance"
    family = "multimodal"
    origin = "literature"

    def __init__(self, first: str = "max_norm") -> None:
        if first not in ("max_norm", "random"):
            raise QueryError(f"first must be 'max_norm' (BADGE's choice) or 'random', got {first!r}")
        self.first = first
        self.info: dict[str, Any] = {}

    def select(self, model: ActiveModel, dataset: MultimodalDataset, pool: Pool, n: int, *, seed: int) -> QueryResult:
        unl = pool.unlabeled
        a, zs, scales = bmmal_factors(model, dataset, unl)
        points = kernels.FactoredEmbedding(a, [(z, scales[:, k]) for k, z in enumerate(zs)])
        gen = torch.Generator(device="cpu").manual_seed(int(seed))  # CPU generator: same picks on any device
        pos = kernels.kmeanspp_seeding(points, n, gen, first=self.first).cpu().numpy().astype(np.int64)
        self.info = {"mean_scales": dict(zip(model.modality_names, scales.mean(0).double().cpu().tolist()))}
        norms = points.sq_norms.double().sqrt().cpu().numpy()  # ||g_i||: an order for items beyond the batch
        return QueryResult(unl[pos], norms, unl)
