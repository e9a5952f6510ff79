"""Semantics of the classic strategies, checked against NumPy references on the model's own outputs.

Most tests use the shared trained fusion model (``problem``). Geometry tests use a tiny real
ActiveModel over fixed tensors (``FixedModel``), so the expected picks can be worked out by hand.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pytest
import torch
from torch import nn

from backend.data import UNLABELED, MultimodalDataset, Pool
from backend.kernels import kmeans
from backend.models.api import ActiveModel, Predictions
from backend.strategies import QueryError, get_strategy


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def top_n(unlabeled: np.ndarray, priority: np.ndarray, n: int) -> np.ndarray:
    """Reference ranking: descending priority, ties to the lowest dataset index."""
    return unlabeled[np.lexsort((unlabeled, -priority))[:n]]


class FixedModel:
    """A real (if trivial) ActiveModel whose outputs are fixed tensors: probs (N, C), embedding (N, h)."""

    def __init__(self, probs: np.ndarray, emb: np.ndarray) -> None:
        self.probs = torch.as_tensor(probs, dtype=torch.float32)
        self.emb = torch.as_tensor(emb, dtype=torch.float32)
        self.n_classes = self.probs.shape[1]
        self.modality_names = ["a", "b"]
        self.device = torch.device("cpu")

    def predict(self, dataset: MultimodalDataset, indices: Sequence[int] | np.ndarray, *, drop: Sequence[str] = ()) -> Predictions:
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        p, z = self.probs[idx], self.emb[idx]
        masks = {k: torch.as_tensor(dataset.masks[k])[idx] & (k not in drop) for k in self.modality_names}
        return Predictions(p, {k: p for k in self.modality_names}, {k: z for k in self.modality_names}, z, masks)

    def predict_mc_dropout(self, dataset: MultimodalDataset, indices: Sequence[int] | np.ndarray, n_samples: int,
                           seed: int) -> torch.Tensor:
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        return self.probs[idx].expand(n_samples, -1, -1).clone()


def fixed_problem(emb: np.ndarray, labeled: Sequence[int] = (), probs: np.ndarray | None = None):
    n = len(emb)
    if probs is None:
        probs = np.full((n, 2), 0.5)
    ds = MultimodalDataset({"a": np.zeros((n, 1), np.float32), "b": np.zeros((n, 1), np.float32)},
                           np.full(n, UNLABELED), ["x", "y"])
    model = FixedModel(probs, emb)
    assert isinstance(model, ActiveModel)
    return model, ds, Pool.from_labeled(n, list(labeled))


# ------------------------------------------------------------------------------------------------
# uncertainty scores on the trained model


def test_margin_picks_smallest_margin_items(problem) -> None:
    model, ds, pool = problem
    p = _np(model.predict(ds, pool.unlabeled).probs)
    srt = np.sort(p, axis=1)
    want = top_n(pool.unlabeled, -(srt[:, -1] - srt[:, -2]), 10)
    res = get_strategy("margin").query(model, ds, pool, 10, seed=0)
    np.testing.assert_array_equal(res.indices, want)
    np.testing.assert_array_equal(res.scored, pool.unlabeled)
    np.testing.assert_allclose(res.scores, -(srt[:, -1] - srt[:, -2]), atol=1e-7)


def test_least_confidence_and_entropy_follow_their_formulas(problem) -> None:
    model, ds, pool = problem
    p = _np(model.predict(ds, pool.unlabeled).probs).astype(np.float64)
    refs = {
        "least_confidence": 1 - p.max(1),
        "entropy": -(p * np.log(np.clip(p, 1e-12, None))).sum(1),
    }
    for name, ref in refs.items():
        res = get_strategy(name).query(model, ds, pool, 10, seed=0)
        np.testing.assert_allclose(res.scores, ref, atol=1e-5)
        # the picks are the top-10 by the strategy's own scores ...
        np.testing.assert_array_equal(res.indices, top_n(pool.unlabeled, res.scores, 10))
        # ... which are the reference's top-10 up to float32 near-ties
        kth = np.sort(ref)[-10]
        assert np.all(ref[np.isin(pool.unlabeled, res.indices)] >= kth - 1e-5)


def test_random_is_seeded_model_free_and_covers_the_pool(problem) -> None:
    model, ds, pool = problem
    rnd = get_strategy("random")
    a = rnd.query(model, ds, pool, 10, seed=3).indices
    np.testing.assert_array_equal(a, rnd.query(model, ds, pool, 10, seed=3).indices)
    assert not np.array_equal(a, rnd.query(model, ds, pool, 10, seed=4).indices)
    seen = np.unique(np.concatenate([rnd.query(model, ds, pool, 10, seed=s).indices for s in range(200)]))
    assert seen.size > 0.95 * pool.unlabeled.size  # 2000 draws over ~260 items: every item is reachable


def test_bald_matches_reference_on_the_same_mc_samples(problem) -> None:
    model, ds, pool = problem
    mc = _np(model.predict_mc_dropout(ds, pool.unlabeled, 20, 7)).astype(np.float64)

    def h(p: np.ndarray) -> np.ndarray:
        return -(p * np.log(np.clip(p, 1e-12, None))).sum(-1)

    ref = np.maximum(h(mc.mean(0)) - h(mc).mean(0), 0)
    res = get_strategy("bald").query(model, ds, pool, 5, seed=7)
    np.testing.assert_allclose(res.scores, ref, atol=1e-5)
    assert ref.max() > 1e-3  # dropout is active: the samples do disagree somewhere


def test_bald_is_zero_when_all_mc_samples_agree(problem) -> None:
    model, ds, pool = problem
    frozen = model.copy()
    for m in frozen.module.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
    res = get_strategy("bald").query(frozen, ds, pool, 5, seed=0)
    np.testing.assert_allclose(res.scores, 0.0, atol=1e-5)
    with pytest.raises(QueryError, match="n_samples"):
        get_strategy("bald", n_samples=1)


# ------------------------------------------------------------------------------------------------
# core-set


def test_coreset_picks_farthest_from_labelled_first_then_greedy(problem) -> None:
    model, ds, pool = problem
    res = get_strategy("coreset").query(model, ds, pool, 8, seed=0)
    z = _np(model.predict(ds, np.arange(len(ds))).fused_embedding).astype(np.float64)
    centers = list(pool.labeled)
    for t, pick in enumerate(res.indices):
        d = ((z[pool.unlabeled, None, :] - z[None, centers, :]) ** 2).sum(-1).min(1)
        d[np.isin(pool.unlabeled, res.indices[:t])] = -1
        # float32 kernel vs float64 reference: the pick attains the greedy maximum up to round-off
        assert d[pool.unlabeled == pick][0] >= d.max() * (1 - 1e-4), f"pick {t}"
        if t == 0:
            np.testing.assert_allclose(res.scores, d, rtol=1e-4, atol=1e-4)
            assert pick == pool.unlabeled[np.argmax(d)]
        centers.append(pick)


def test_coreset_on_a_line_and_cold_start() -> None:
    x = np.array([[0.0], [1.0], [2.0], [10.0], [4.0], [9.0]])
    model, ds, pool = fixed_problem(x, labeled=[0])
    # farthest from 0 is 10 (idx 3); then 4 (idx 4, 4 from 0 vs 6 from 10: min 4) ... then 2 (idx 2: min 2)
    np.testing.assert_array_equal(get_strategy("coreset").query(model, ds, pool, 3, seed=0).indices, [3, 4, 2])
    model, ds, cold = fixed_problem(x)
    a = get_strategy("coreset").query(model, ds, cold, 3, seed=1)
    start = int(np.random.default_rng(1).integers(6))
    assert a.indices[0] == start and a.scores is None
    np.testing.assert_array_equal(a.indices, get_strategy("coreset").query(model, ds, cold, 3, seed=1).indices)


# ------------------------------------------------------------------------------------------------
# BADGE


def test_badge_starts_at_largest_gradient_norm_and_is_deterministic(problem) -> None:
    model, ds, pool = problem
    pred = model.predict(ds, pool.unlabeled)
    p, z = _np(pred.probs).astype(np.float64), _np(pred.fused_embedding).astype(np.float64)
    a = p.copy()
    a[np.arange(len(a)), a.argmax(1)] -= 1
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(z, axis=1)  # ||a (x) z|| = ||a|| ||z||
    res = get_strategy("badge").query(model, ds, pool, 10, seed=0)
    assert res.indices[0] == pool.unlabeled[np.argmax(norms)]
    np.testing.assert_allclose(res.scores, norms, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(res.indices, get_strategy("badge").query(model, ds, pool, 10, seed=0).indices)
    others = [get_strategy("badge").query(model, ds, pool, 10, seed=s).indices for s in range(1, 4)]
    assert any(not np.array_equal(res.indices, o) for o in others)  # the seed does drive the D^2 draws


def test_badge_picks_at_most_one_of_identical_gradients() -> None:
    # items 0..4 are certain (a = 0: all share the zero gradient); 5..7 are uncertain, distinct
    emb = np.array([[1.0, 0.0]] * 5 + [[0.0, 1.0], [0.0, 3.0], [2.0, 2.0]])
    probs = np.array([[1.0, 0.0]] * 5 + [[0.5, 0.5], [0.6, 0.4], [0.7, 0.3]])
    model, ds, pool = fixed_problem(emb, probs=probs)
    for seed in range(5):
        picks = get_strategy("badge").query(model, ds, pool, 4, seed=seed).indices
        assert picks[0] == 6  # largest ||a|| ||z|| = 0.4 * sqrt(2) * 3
        assert {5, 6, 7} <= set(picks.tolist()) and np.sum(picks < 5) == 1


# ------------------------------------------------------------------------------------------------
# TypiClust


def test_typiclust_takes_densest_item_of_largest_clusters_first() -> None:
    rng = np.random.default_rng(0)
    blobs = [(np.array([0.0, 0.0]), 40), (np.array([20.0, 0.0]), 25), (np.array([0.0, 20.0]), 12)]
    emb = np.concatenate([c + rng.normal(0, 1.0, (m, 2)) for c, m in blobs])
    model, ds, pool = fixed_problem(emb)
    res = get_strategy("typiclust").query(model, ds, pool, 3, seed=0)
    sizes = np.cumsum([0] + [m for _, m in blobs])
    for b, pick in enumerate(res.indices):  # largest cluster first, one pick per cluster
        members = np.arange(sizes[b], sizes[b + 1])
        assert pick in members
        x = emb[members]
        d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
        np.fill_diagonal(d, np.inf)
        k = min(20, len(members) // 2)
        typ = 1 / (np.sort(d, 1)[:, :k].mean(1) + 1e-5)
        assert pick == members[np.argmax(typ)]


def test_typiclust_prefers_clusters_without_labels() -> None:
    rng = np.random.default_rng(1)
    emb = np.concatenate([rng.normal(0, 1, (40, 2)), 30 + rng.normal(0, 1, (20, 2))])
    model, ds, pool = fixed_problem(emb, labeled=[0])  # the big cluster already has a label
    res = get_strategy("typiclust", max_clusters=2).query(model, ds, pool, 1, seed=0)
    assert res.indices[0] >= 40


def test_typiclust_on_trained_model_matches_reference(problem) -> None:
    model, ds, pool = problem
    n = 6
    res = get_strategy("typiclust").query(model, ds, pool, n, seed=3)
    np.testing.assert_array_equal(res.indices, get_strategy("typiclust").query(model, ds, pool, n, seed=3).indices)
    z = model.predict(ds, np.arange(len(ds))).fused_embedding
    k = pool.labeled.size + n
    _, lab_t = kmeans(z, k, 30, torch.Generator().manual_seed(3))
    labels = _np(lab_t)
    sizes = np.bincount(labels, minlength=k)
    lab_counts = np.bincount(labels[pool.labeled], minlength=k)
    ids = np.arange(k)
    ranked = ids[np.lexsort((ids, -sizes, lab_counts))]
    ranked = np.concatenate([ranked[sizes[ranked] > 5], ranked[sizes[ranked] <= 5]])
    zz = _np(z).astype(np.float64)
    want = []
    for c in ranked:
        members = np.setdiff1d(np.flatnonzero(labels == c), pool.labeled)
        if members.size == 0:
            continue
        kk = min(20, members.size // 2)
        if kk < 1:
            want.append(members[0])
        else:
            x = zz[members]
            d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
            np.fill_diagonal(d, np.inf)
            want.append(members[np.argmax(1 / (np.sort(d, 1)[:, :kk].mean(1) + 1e-5))])
        if len(want) == n:
            break
    np.testing.assert_array_equal(res.indices, want)


def test_typiclust_rejects_bad_parameters() -> None:
    with pytest.raises(QueryError, match="k_nn"):
        get_strategy("typiclust", k_nn=0)
    with pytest.raises(QueryError, match="chunk_size"):
        get_strategy("coreset", chunk_size=0)
