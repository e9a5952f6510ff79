"""BMMAL: the paper's two-player scales by hand, its M-player generalisation, and selection."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from backend import kernels
from backend.data import Pool
from backend.strategies.base import QueryError
from backend.strategies.multimodal import (
    BMMAL,
    bmmal_factors,
    bmmal_scales,
    scales_from_shapley,
    shares_from_shapley,
)


def test_scales_hand_computed_example() -> None:
    # Item 0: p = 0.8, p_-1 = 0.5, p_-2 = 0.7, p_-12 = 0.3
    #   D1 = ((0.8 - 0.5) + (0.7 - 0.3)) / 2 = (0.3 + 0.4) / 2 = 0.35
    #   D2 = ((0.8 - 0.7) + (0.5 - 0.3)) / 2 = (0.1 + 0.2) / 2 = 0.15
    #   phi1 = 0.35 / 0.5 = 0.7, phi2 = 0.15 / 0.5 = 0.3
    #   modality 1 is stronger: s1 = 1, s2 = 1 - (0.7 - 0.3) = 0.6
    # Item 1: p = 0.6, p_-1 = 0.7, p_-2 = 0.4, p_-12 = 0.5 (modality 1 *hurts*: D1 < 0)
    #   D1 = ((0.6 - 0.7) + (0.4 - 0.5)) / 2 = -0.1
    #   D2 = ((0.6 - 0.4) + (0.7 - 0.5)) / 2 = 0.2
    #   phi1 = 0.1 / 0.3 = 1/3, phi2 = 0.2 / 0.3 = 2/3
    #   s1 = 1 - (2/3 - 1/3) = 2/3, s2 = 1
    # Item 2: nothing changes when modalities are removed: D1 = D2 = 0 -> phi uniform -> s = (1, 1)
    p = torch.tensor([0.8, 0.6, 0.5])
    p_m1 = torch.tensor([0.5, 0.7, 0.5])
    p_m2 = torch.tensor([0.7, 0.4, 0.5])
    p_0 = torch.tensor([0.3, 0.5, 0.5])
    s = bmmal_scales(p, p_m1, p_m2, p_0)
    expected = torch.tensor([[1.0, 0.6], [2 / 3, 1.0], [1.0, 1.0]], dtype=torch.float64)
    assert torch.allclose(s, expected, atol=1e-6)


def test_scales_accept_full_probability_rows() -> None:
    # predicted class of p is class 1 (0.8); every other row is read at class 1: same numbers as item 0
    p = torch.tensor([[0.1, 0.8, 0.1]])
    p_m1 = torch.tensor([[0.4, 0.5, 0.1]])  # argmax here is 1 too, but it must read class 1 regardless
    p_m2 = torch.tensor([[0.2, 0.7, 0.1]])
    p_0 = torch.tensor([[0.6, 0.3, 0.1]])  # its own argmax is 0: must still read class 1 -> 0.3
    assert torch.allclose(bmmal_scales(p, p_m1, p_m2, p_0), torch.tensor([[1.0, 0.6]], dtype=torch.float64))


def test_scales_reject_mismatched_lengths() -> None:
    with pytest.raises(QueryError, match="same length"):
        bmmal_scales(torch.ones(3), torch.ones(3), torch.ones(2), torch.ones(3))


def test_m_player_rule_matches_two_player_and_keeps_strongest_at_one() -> None:
    d = torch.tensor([[0.35, 0.15], [-0.1, 0.2], [0.0, 0.0]], dtype=torch.float64)
    assert torch.allclose(scales_from_shapley(d), torch.tensor([[1.0, 0.6], [2 / 3, 1.0], [1.0, 1.0]], dtype=torch.float64))
    # three players: phi = (0.5, 0.3, 0.2) -> s = (1, 0.8, 0.7)
    d3 = torch.tensor([[0.5, -0.3, 0.2]], dtype=torch.float64)
    assert torch.allclose(shares_from_shapley(d3), torch.tensor([[0.5, 0.3, 0.2]], dtype=torch.float64))
    assert torch.allclose(scales_from_shapley(d3), torch.tensor([[1.0, 0.8, 0.7]], dtype=torch.float64))


def test_factors_match_paper_formula_on_real_model(problem) -> None:
    """For M = 2 the Shapley-based scales equal the paper's formula from four explicit predictions."""
    model, ds, pool = problem
    idx = pool.unlabeled[:60]
    a, zs, scales = bmmal_factors(model, ds, idx)
    p = model.predict(ds, idx).probs
    p_m1 = model.predict(ds, idx, drop=["a"]).probs
    p_m2 = model.predict(ds, idx, drop=["b"]).probs
    p_0 = model.predict(ds, idx, drop=["a", "b"]).probs
    assert torch.allclose(scales.double(), bmmal_scales(p, p_m1, p_m2, p_0), atol=1e-5)
    # a = p - onehot(yhat); z_k are the model's embeddings
    yhat = p.argmax(1)
    r = torch.arange(len(idx), device=p.device)
    assert torch.allclose(a[r, yhat], p[r, yhat] - 1)
    assert torch.allclose(zs[1], model.predict(ds, idx).embeddings["b"])
    # items without modality 'b': dropping it changes nothing, so D_b = 0 and b gets the lower scale
    missing = ~ds.masks["b"][idx]
    assert missing.any()
    s = scales.cpu()[torch.as_tensor(missing)]
    assert torch.all(s[:, 0] == 1.0)
    assert torch.all(s[:, 1] <= 1.0)


def test_selection_deterministic_and_valid(problem) -> None:
    model, ds, pool = problem
    r1 = BMMAL().query(model, ds, pool, 15, seed=3)
    r2 = BMMAL().query(model, ds, pool, 15, seed=3)
    assert np.array_equal(r1.indices, r2.indices)
    assert len(set(r1.indices.tolist())) == 15
    assert np.isin(r1.indices, pool.unlabeled).all()


def test_selection_equals_kmeanspp_on_materialized_embedding(problem) -> None:
    """The factored embedding BMMAL seeds on is exactly concat_k s_k * (a ⊗ z_k)."""
    model, ds, pool = problem
    small = Pool.from_labeled(len(ds), np.setdiff1d(np.arange(len(ds)), pool.unlabeled[:50]))
    a, zs, scales = bmmal_factors(model, ds, small.unlabeled)
    explicit = torch.cat(
        [(scales[:, k, None, None] * a[:, :, None] * z[:, None, :]).reshape(len(a), -1) for k, z in enumerate(zs)], 1
    )
    gen = torch.Generator().manual_seed(7)
    ref = kernels.kmeanspp_seeding(explicit.double(), 10, gen, first="max_norm").cpu().numpy()
    got = BMMAL().query(model, ds, small, 10, seed=7).indices
    assert np.array_equal(got, small.unlabeled[ref])


def test_three_modalities_and_random_first(problem3) -> None:
    model, ds, pool = problem3
    r = BMMAL(first="random").query(model, ds, pool, 12, seed=0)
    assert len(set(r.indices.tolist())) == 12 and np.isin(r.indices, pool.unlabeled).all()
    with pytest.raises(QueryError, match="first"):
        BMMAL(first="centroid")
