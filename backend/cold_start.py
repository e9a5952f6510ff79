"""Order a pool before any label exists, so the first labels cover the data.

Before the first training there is no model to be uncertain with; the usual initial set of active
learning is a random sample, which on imbalanced data misses small classes for a long time. With
pretrained features the pool's structure is already visible, so the first tasks can be chosen to
span it (TypiClust's "typical items of many clusters", Hacohen et al. 2022, here without a model):

1. every modality's features are standardised (per dimension, over the items that have it) and its
   block scaled by ``1 / sqrt(d_m)``, so each modality weighs the same whatever its width; a missing
   modality is all zeros (its mean);
2. k-means with ``k = min(head, N // 4)`` clusters (``head``: ``MMAL_COLD_START_CLUSTERS``);
3. within each cluster, items are ranked by *typicality*, ``1 / (mean distance to its kNN in the
   cluster + 1e-5)``: dense, representative items first, outliers last;
4. the order visits the clusters round-robin, largest first, taking each cluster's next most typical
   item: the first ``k`` tasks are one typical item of every cluster, and so on (labelled items count
   as picks already made from their cluster).

The cost is one k-means over the pool plus kNN inside each cluster (chunked torch kernels).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch

from backend.kernels import kmeans, knn_mean_distance


def coverage_features(features: Mapping[str, np.ndarray | torch.Tensor],
                      masks: Mapping[str, np.ndarray] | None = None) -> torch.Tensor:
    """(N, sum d_m) float32: standardised, width-balanced, zero where a modality is missing.

    features: name -> (N, d_m) (trailing dims are flattened); masks: name -> (N,) bool presence.
    """
    blocks = []
    n = None
    for name, x in features.items():
        t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).float()
        t = t.reshape(t.shape[0], -1)
        n = t.shape[0] if n is None else n
        if t.shape[0] != n:
            raise ValueError(f"modality '{name}' has {t.shape[0]} rows, expected {n}")
        present = torch.ones(n, dtype=torch.bool) if masks is None or name not in masks else \
            torch.as_tensor(np.asarray(masks[name], dtype=bool))
        if present.any():
            rows = t[present]
            mean = rows.mean(dim=0)
            std = rows.std(dim=0, unbiased=False).clamp_min(1e-6)
            t = (t - mean) / std
        t = torch.where(present[:, None], t, torch.zeros_like(t)) / float(np.sqrt(max(t.shape[1], 1)))
        blocks.append(t)
    if not blocks:
        raise ValueError("no modality to order the pool by")
    return torch.cat(blocks, dim=1)


def coverage_order(x: torch.Tensor, head: int = 20, *, labeled: np.ndarray | None = None, seed: int = 0,
                   k_nn: int = 20, iters: int = 30) -> np.ndarray:
    """Indices of the unlabelled rows of ``x`` (N, d) in cold-start order (see the module docstring).

    ``labeled``: rows already labelled; they are clustered with the rest but never returned, and a
    cluster's labelled items count as picks already made from it (its next item waits that many rounds),
    so labels that exist steer the order toward clusters nobody has labelled yet.
    """
    x = torch.as_tensor(x).float()
    n = x.shape[0]
    taken = np.zeros(n, dtype=bool)
    if labeled is not None and len(labeled):
        taken[np.asarray(labeled, dtype=np.int64)] = True
    if n == 0 or taken.all():
        return np.zeros(0, dtype=np.int64)
    k = max(1, min(int(head), n // 4))  # at least 4 items a cluster on average: typicality needs neighbours
    _, labels_t = kmeans(x, k, iters, torch.Generator().manual_seed(int(seed)))
    labels = labels_t.cpu().numpy()
    sizes = np.bincount(labels, minlength=k)
    done = np.bincount(labels[taken], minlength=k)
    rows, keys = [], []
    for c in range(k):
        members = np.flatnonzero((labels == c) & ~taken)
        if members.size == 0:
            continue
        kk = min(int(k_nn), members.size - 1)
        if kk >= 1:
            mean_d = knn_mean_distance(x[torch.as_tensor(members)], kk).cpu().numpy()
            members = members[np.lexsort((members, mean_d))]  # most typical (smallest kNN distance) first
        depth = done[c] + np.arange(members.size)
        rows.append(members)
        keys.append(np.stack([depth, np.full(members.size, -sizes[c]), np.full(members.size, c)]))
    rows_a = np.concatenate(rows)
    key = np.concatenate(keys, axis=1)
    # round first, then larger clusters, then cluster id: one typical item of every cluster per round
    return rows_a[np.lexsort((key[2], key[1], key[0]))].astype(np.int64)
