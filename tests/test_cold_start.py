"""The cold-start order (backend.cold_start): a permutation of the unlabelled items that covers the pool."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from backend.cold_start import coverage_features, coverage_order


def blobs(sizes: list[int], d: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Well separated Gaussian blobs of the given sizes: (points, blob of each point)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 20, (len(sizes), d))
    x = np.concatenate([rng.normal(c, 1.0, (n, d)) for c, n in zip(centers, sizes)])
    return x.astype(np.float32), np.repeat(np.arange(len(sizes)), sizes)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 60), head=st.integers(1, 20), n_labeled=st.integers(0, 10), seed=st.integers(0, 5))
def test_order_is_a_permutation_of_the_unlabelled_items(n, head, n_labeled, seed):
    x = torch.as_tensor(np.random.default_rng(seed).normal(size=(n, 3)), dtype=torch.float32)
    labeled = np.arange(min(n_labeled, n))
    order = coverage_order(x, head, labeled=labeled, seed=seed)
    assert sorted(order.tolist()) == list(range(labeled.size, n))
    assert order.dtype == np.int64


def test_first_tasks_are_one_typical_item_of_every_cluster_largest_first():
    sizes = [120, 60, 30, 16]
    x, blob = blobs(sizes)
    order = coverage_order(torch.as_tensor(x), head=4, seed=0)
    assert blob[order[:4]].tolist() == [0, 1, 2, 3]  # one per cluster, largest cluster first
    # typical = dense: the first pick of a blob is nearer its blob's mean than the blob's median item
    for b in range(4):
        members = np.flatnonzero(blob == b)
        dist = np.linalg.norm(x[members] - x[members].mean(0), axis=1)
        first = order[np.flatnonzero(blob[order] == b)[0]]
        assert np.linalg.norm(x[first] - x[members].mean(0)) <= np.median(dist)
    # a random order would need many more tasks to reach the smallest blob (16 of 226 items)
    assert 3 in blob[order[:4]]


def test_labelled_items_send_their_cluster_to_the_back():
    x, blob = blobs([50, 50, 50])
    labeled = np.flatnonzero(blob == 0)[:3]  # three labels in blob 0 already
    order = coverage_order(torch.as_tensor(x), head=3, labeled=labeled, seed=1)
    first_zero = int(np.flatnonzero(blob[order] == 0)[0])
    assert first_zero == 6  # blobs 1 and 2 get three rounds first, then blob 0 takes its turn
    assert not set(order.tolist()) & set(labeled.tolist())


def test_tiny_pools_use_at_least_four_items_a_cluster():
    x, blob = blobs([5, 5, 5, 5])
    order = coverage_order(torch.as_tensor(x), head=50, seed=0)
    assert sorted(order.tolist()) == list(range(20))
    assert len(set(blob[order[:4]].tolist())) == 4  # k = 20 // 4 = 5 clusters, still one item of every blob


def test_features_are_standardised_width_balanced_and_zero_where_missing():
    rng = np.random.default_rng(0)
    wide = rng.normal(5, 100, (40, 64))
    narrow = rng.normal(-3, 0.01, (40, 2))
    mask = np.ones(40, dtype=bool)
    mask[:10] = False
    f = coverage_features({"wide": wide, "narrow": narrow}, {"narrow": mask}).numpy()
    assert f.shape == (40, 66)
    wide_part, narrow_part = f[:, :64], f[:, 64:]
    # each modality block has (about) unit total variance whatever its width and scale
    assert wide_part.var(axis=0).sum() == pytest.approx(1.0, rel=1e-3)
    assert narrow_part[mask].var(axis=0).sum() == pytest.approx(1.0, rel=1e-3)
    assert np.all(narrow_part[~mask] == 0)


def test_mismatched_rows_are_named():
    with pytest.raises(ValueError, match="modality 'b' has 3 rows, expected 4"):
        coverage_features({"a": np.zeros((4, 2)), "b": np.zeros((3, 2))})
