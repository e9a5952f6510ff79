"""Diversity and hybrid query strategies: core-set, BADGE and TypiClust on the fused embedding.

All three pick a *set* (not independent top-n), so they implement ``select`` directly on top of the
chunked, incremental kernels in :mod:`backend.kernels` (no N x N matrix, no N x C*d embedding).
Each calls the model once, batched, over the items it needs.
"""

from __future__ import annotations

import numpy as np
import torch

from backend.data import MultimodalDataset, Pool, QueryError
from backend.kernels import FactoredEmbedding, greedy_k_center, kmeans, kmeanspp_seeding, knn_mean_distance
from backend.models.api import ActiveModel
from backend.strategies.base import QueryResult, QueryStrategy, is_multi_label
from backend.strategies.registry import register

__all__ = ["Coreset", "Badge", "TypiClust"]


def _np(t: torch.Tensor, dtype: type = np.float64) -> np.ndarray:
    return t.detach().cpu().numpy().astype(dtype, copy=False)


@register
class Coreset(QueryStrategy):
    """Core-set (Sener & Savarese 2018): greedy k-center on the fused embedding z.

    With labelled set L as initial centers, pick ``argmax_{i in U} min_{c in L + picked} ||z_i - z_c||^2``
    n times (lazily: only the largest stale distance bounds are refreshed per pick). With no labelled
    item the first pick is a seeded random unlabelled item. ``scores`` (when L is non-empty) are the
    squared distances of every unlabelled item to its nearest labelled item (the first pick is their
    argmax).
    """

    name = "coreset"
    description = "greedy k-center on the fused embedding: items farthest from everything labelled"
    family = "classic"
    origin = "literature"
    multi_label = True  # the embedding alone, whatever the head

    def __init__(self, chunk_size: int | None = None) -> None:
        if chunk_size is not None and int(chunk_size) < 1:
            raise QueryError(f"chunk_size must be >= 1, got {chunk_size}")
        self.chunk_size = chunk_size

    def select(self, model: ActiveModel, dataset: MultimodalDataset, pool: Pool, n: int, *, seed: int) -> QueryResult:
        lab, unl = pool.labeled, pool.unlabeled
        order = np.concatenate([lab, unl])  # rows 0..L-1 labelled, then the candidates
        z = model.predict(dataset, order).fused_embedding
        n_lab = lab.size
        if n_lab:
            picks, initial = greedy_k_center(z, torch.arange(n_lab), n, chunk_size=self.chunk_size, return_initial=True)
            return QueryResult(order[_np(picks, np.int64)], _np(initial[n_lab:]), unl)
        start = int(np.random.default_rng(seed).integers(unl.size))
        rest = _np(greedy_k_center(z, torch.tensor([start]), n - 1, chunk_size=self.chunk_size), np.int64)
        return QueryResult(order[np.concatenate([[start], rest])])


@register
class Badge(QueryStrategy):
    """BADGE (Ash et al. 2020): k-means++ seeding on hallucinated last-layer gradients.

    ``g_i = (p_i - onehot(argmax p_i)) (x) z_i`` with p the fused probabilities and z the fused
    embedding; kept factored (||g_i - g_j||^2 from ``||a||^2 ||z||^2`` and ``(a_i.a_j)(z_i.z_j)``,
    O(N (C + d)) per pick). The first pick is the largest gradient norm (as in the reference code),
    the rest are D^2-sampled with ``torch.Generator().manual_seed(seed)``. ``scores`` are the gradient
    norms ``||g_i||`` (BADGE's uncertainty term), a sensible order for items beyond the batch.

    Multi-label: ``g_i = (p_i - 1[p_i >= 1/2]) (x) z_i``, the binary cross-entropies' gradient at the
    most likely label set (:meth:`FactoredEmbedding.badge_multilabel`).
    """

    name = "badge"
    description = "k-means++ seeding on fused gradient embeddings: uncertain and diverse (seeded)"
    family = "classic"
    origin = "literature"
    multi_label = True

    def select(self, model: ActiveModel, dataset: MultimodalDataset, pool: Pool, n: int, *, seed: int) -> QueryResult:
        unl = pool.unlabeled
        pred = model.predict(dataset, unl)
        build = FactoredEmbedding.badge_multilabel if is_multi_label(model) else FactoredEmbedding.badge
        emb = build(pred.probs, [pred.fused_embedding])
        gen = torch.Generator().manual_seed(int(seed))
        picks = _np(kmeanspp_seeding(emb, n, gen, first="max_norm"), np.int64)
        return QueryResult(unl[picks], np.sqrt(_np(emb.sq_norms)), unl)


@register
class TypiClust(QueryStrategy):
    """TypiClust (Hacohen et al. 2022), on the fused embedding z of every item.

    K = min(|L| + n, max_clusters) k-means clusters. Clusters are visited round-robin in the order
    (fewest labelled items, largest size, lowest id), clusters with <= ``min_cluster_size`` items
    after all others; from each the most *typical* unlabelled, unpicked item is taken:
    ``typicality(x) = 1 / (mean_{x' in kNN(x)} ||x - x'||_2 + 1e-5)`` with k = min(k_nn, m // 2)
    neighbours among that cluster's m unlabelled, unpicked items (k = 0: lowest index).
    """

    name = "typiclust"
    description = "most typical (densest) item of the largest, least-labelled k-means clusters"
    family = "classic"
    origin = "literature"
    multi_label = True  # the embedding alone, whatever the head

    def __init__(self, max_clusters: int = 500, k_nn: int = 20, min_cluster_size: int = 5, iters: int = 30) -> None:
        for field, value, low in (("max_clusters", max_clusters, 1), ("k_nn", k_nn, 1),
                                  ("min_cluster_size", min_cluster_size, 0), ("iters", iters, 0)):
            if int(value) < low:
                raise QueryError(f"typiclust: {field} must be >= {low}, got {value}")
        self.max_clusters = int(max_clusters)
        self.k_nn = int(k_nn)
        self.min_cluster_size = int(min_cluster_size)
        self.iters = int(iters)

    def _most_typical(self, z: torch.Tensor, members: np.ndarray) -> int:
        k = min(self.k_nn, members.size // 2)
        if k < 1:
            return int(members[0])
        mean_d = knn_mean_distance(z[torch.as_tensor(members, device=z.device)], k)
        typicality = 1.0 / (mean_d + 1e-5)
        return int(members[int(torch.argmax(typicality))])

    def select(self, model: ActiveModel, dataset: MultimodalDataset, pool: Pool, n: int, *, seed: int) -> QueryResult:
        z = model.predict(dataset, np.arange(pool.size)).fused_embedding
        k = min(pool.labeled.size + n, self.max_clusters, pool.size)
        _, labels_t = kmeans(z, k, self.iters, torch.Generator().manual_seed(int(seed)))
        labels = _np(labels_t, np.int64)
        sizes = np.bincount(labels, minlength=k)
        lab_counts = np.bincount(labels[pool.labeled], minlength=k)
        ids = np.arange(k)
        ranked = ids[np.lexsort((ids, -sizes, lab_counts))]
        big = sizes[ranked] > self.min_cluster_size
        available = np.zeros(pool.size, dtype=bool)
        available[pool.unlabeled] = True
        selected: list[int] = []
        for phase in (ranked[big], ranked[~big]):
            while len(selected) < n:
                progressed = False
                for c in phase:
                    if len(selected) == n:
                        break
                    members = np.flatnonzero((labels == c) & available)
                    if members.size == 0:
                        continue
                    pick = self._most_typical(z, members)
                    selected.append(pick)
                    available[pick] = False
                    progressed = True
                if not progressed:
                    break
        return QueryResult(np.asarray(selected, dtype=np.int64))
