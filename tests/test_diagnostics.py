"""Modality diagnostics: exact Shapley against brute force, shares, head accuracy, reliance gap."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch

from backend.data import UNLABELED, DataError
from backend.diagnostics import (
    RoundDiagnostics,
    contribution_shares,
    diagnose,
    imbalance,
    informativeness_shares,
    item_shares,
    modality_shapley,
    reliance_gap,
    shapley_from_values,
    unimodal_accuracy,
)


def _brute_force_shapley(model, ds, idx) -> np.ndarray:
    """Permutation definition: phi_k = mean over all M! orderings of v(pred + k) - v(pred), plain Python."""
    names = list(model.modality_names)
    full = model.predict(ds, idx).probs.double().cpu().numpy()
    target = full.argmax(1)
    rows = np.arange(len(idx))

    def v(present: frozenset) -> np.ndarray:
        drop = [k for k in names if k not in present]
        return model.predict(ds, idx, drop=drop).probs.double().cpu().numpy()[rows, target]

    cache = {}
    for r in range(len(names) + 1):
        for subset in itertools.combinations(names, r):
            cache[frozenset(subset)] = v(frozenset(subset))
    phi = np.zeros((len(idx), len(names)))
    orders = list(itertools.permutations(names))
    for order in orders:
        before: frozenset = frozenset()
        for k in order:
            after = before | {k}
            phi[:, names.index(k)] += cache[after] - cache[before]
            before = after
    return phi / len(orders)


def test_shapley_matches_permutation_brute_force_three_modalities(problem3) -> None:
    model, ds, pool = problem3
    idx = pool.unlabeled[:40]
    phi = modality_shapley(model, ds, idx)
    assert phi.shape == (40, 3) and phi.dtype == torch.float64
    np.testing.assert_allclose(phi.cpu().numpy(), _brute_force_shapley(model, ds, idx), atol=1e-7)


def test_efficiency_axiom_and_dummy_player(problem3) -> None:
    model, ds, pool = problem3
    idx = pool.unlabeled
    phi = modality_shapley(model, ds, idx)
    p = model.predict(ds, idx).probs.double()
    p0 = model.predict(ds, idx, drop=list(model.modality_names)).probs.double()
    t = p.argmax(1)
    r = torch.arange(len(idx))
    assert torch.allclose(phi.sum(1).cpu(), (p[r.to(p.device), t] - p0[r.to(p.device), t]).cpu(), atol=1e-7)
    # an item that already lacks 'c' is unchanged by dropping it: c is a dummy player, phi_c = 0
    lacks_c = ~ds.masks["c"][idx]
    assert lacks_c.any()
    assert torch.all(phi.cpu()[torch.as_tensor(lacks_c), 2] == 0)


def test_chunking_and_targets_agree(problem) -> None:
    model, ds, pool = problem
    idx = pool.unlabeled[:50]
    whole = modality_shapley(model, ds, idx)
    # other batch sizes may pick other kernels: bit-exact on CPU, bf16-autocast round-off on CUDA
    tol = 1e-6 if model.device.type == "cpu" else 3e-2
    assert torch.allclose(whole, modality_shapley(model, ds, idx, batch_size=7), atol=tol)
    pred = model.predict(ds, idx).probs
    assert torch.allclose(whole, modality_shapley(model, ds, idx, target=pred.argmax(1).cpu().numpy()))
    assert torch.allclose(whole, modality_shapley(model, ds, idx, full_probs=pred))
    by_label = modality_shapley(model, ds, idx, target="label")  # falls back to true labels
    assert torch.allclose(by_label, modality_shapley(model, ds, idx, target=ds.true_labels[idx]))


def test_shapley_bad_input(problem) -> None:
    model, ds, pool = problem
    with pytest.raises(DataError, match="index 100000"):
        modality_shapley(model, ds, [0, 100000])
    with pytest.raises(DataError, match="target"):
        modality_shapley(model, ds, [0, 1], target="nonsense")
    with pytest.raises(DataError, match="target array"):
        modality_shapley(model, ds, [0, 1], target=np.array([0]))
    assert modality_shapley(model, ds, []).shape == (0, 2)


def test_shapley_from_values_known_games() -> None:
    # additive game v(S) = sum_{k in S} w_k -> phi = w
    w = np.array([0.3, -0.1, 0.5])
    vals = torch.tensor([[sum(w[k] for k in range(3) if s >> k & 1) for s in range(8)]], dtype=torch.float64)
    assert torch.allclose(shapley_from_values(vals), torch.from_numpy(w[None]))
    # pure synergy of two players (v = 1 only with both): each gets 1/2
    assert torch.allclose(shapley_from_values(torch.tensor([[0.0, 0.0, 0.0, 1.0]])), torch.tensor([[0.5, 0.5]]))
    with pytest.raises(DataError):
        shapley_from_values(torch.zeros(2, 6))


def test_shares_sum_to_one_and_uniform_when_zero(problem3) -> None:
    model, ds, pool = problem3
    phi = modality_shapley(model, ds, pool.unlabeled[:80])
    s = contribution_shares(phi)
    assert s.shape == (3,) and math.isclose(s.sum(), 1.0) and np.all(s >= 0)
    per = item_shares(phi)
    np.testing.assert_allclose(per.sum(1), 1.0)
    assert np.array_equal(contribution_shares(np.zeros((4, 3))), np.full(3, 1 / 3))
    assert np.array_equal(item_shares(np.array([[0.0, 0.0], [1.0, -3.0]])), np.array([[0.5, 0.5], [0.25, 0.75]]))
    # mean |phi| then normalise: |(1, -3)| and |(1, 1)| -> mean (1, 2) -> (1/3, 2/3)
    np.testing.assert_allclose(contribution_shares(np.array([[1.0, -3.0], [1.0, 1.0]])), [1 / 3, 2 / 3])
    assert imbalance(np.array([0.7, 0.2, 0.1])) == pytest.approx(0.6)


def test_reliance_gap_examples() -> None:
    # informativeness: a 0.9, b 0.6, chance 0.5 -> gains 0.4, 0.1 -> info shares (0.8, 0.2)
    assert informativeness_shares({"a": 0.9, "b": 0.6}, 0.5) == pytest.approx({"a": 0.8, "b": 0.2})
    # reliance (0.9, 0.1): TV = (|0.9 - 0.8| + |0.1 - 0.2|) / 2 = 0.1
    assert reliance_gap({"a": 0.9, "b": 0.1}, {"a": 0.9, "b": 0.6}, 0.5) == pytest.approx(0.1)
    # relying fully on an uninformative modality while the other is informative: gap 1
    assert reliance_gap({"a": 1.0, "b": 0.0}, {"a": 0.5, "b": 0.9}, 0.5) == pytest.approx(1.0)
    # matching shares: gap 0
    assert reliance_gap({"a": 0.8, "b": 0.2}, {"a": 0.9, "b": 0.6}, 0.5) == pytest.approx(0.0)
    # nothing is informative -> uniform informativeness; below-chance accuracy counts as 0
    assert reliance_gap({"a": 0.75, "b": 0.25}, {"a": 0.3, "b": 0.2}, 0.5) == pytest.approx(0.25)
    # three modalities: gains (0.6, 0.3, 0.1) -> info (0.6, 0.3, 0.1); shares (0.2, 0.3, 0.5) -> TV 0.4
    gap3 = reliance_gap({"a": 0.2, "b": 0.3, "c": 0.5}, {"a": 0.85, "b": 0.55, "c": 0.35}, 0.25)
    assert gap3 == pytest.approx(0.4)
    with pytest.raises(DataError, match="cover"):
        reliance_gap({"a": 1.0}, {"a": 0.9, "b": 0.6}, 0.5)
    with pytest.raises(DataError, match="sum to 1"):
        reliance_gap({"a": 0.7, "b": 0.7}, {"a": 0.9, "b": 0.6}, 0.5)
    with pytest.raises(DataError, match="'b'"):
        reliance_gap({"a": 0.5, "b": 0.5}, {"a": 0.9, "b": 1.6}, 0.5)


def test_unimodal_accuracy_by_hand_and_nan_safe(problem) -> None:
    model, ds, pool = problem
    idx = pool.unlabeled
    acc = unimodal_accuracy(model, ds, idx)
    pred = model.predict(ds, idx)
    y = ds.true_labels[idx]
    has_b = ds.masks["b"][idx]
    assert acc["fused"] == pytest.approx(float(np.mean(pred.probs.argmax(1).cpu().numpy() == y)))
    assert acc["a"] == pytest.approx(float(np.mean(pred.unimodal_probs["a"].argmax(1).cpu().numpy() == y)))
    assert acc["b"] == pytest.approx(float(np.mean(pred.unimodal_probs["b"].argmax(1).cpu().numpy()[has_b] == y[has_b])))
    # only items lacking 'b': its head has nothing to be scored on -> NaN, not an error
    only_missing = idx[~has_b]
    assert math.isnan(unimodal_accuracy(model, ds, only_missing)["b"])
    # no ground truth at all -> every entry NaN
    blind = ds.subset(np.arange(len(ds)))
    blind.true_labels = None
    blind.labels[:] = UNLABELED
    assert all(math.isnan(v) for v in unimodal_accuracy(model, blind, np.arange(10)).values())


def test_diagnose_round_trip_json(problem3) -> None:
    model, ds, pool = problem3
    d = diagnose(model, ds, pool.unlabeled[:60], informativeness={"a": 0.9, "b": 0.7, "c": 0.5})
    assert isinstance(d, RoundDiagnostics)
    assert set(d.contribution) == {"a", "b", "c"} and math.isclose(sum(d.contribution.values()), 1.0)
    assert d.per_item.shape == (60, 3)
    assert d.reliance_gap is not None and 0.0 <= d.reliance_gap <= 1.0
    assert d.dominant in d.contribution and 0.0 <= d.imbalance <= 1.0
    out = json.loads(json.dumps(d.to_dict(), allow_nan=False))
    assert out["contribution"] == pytest.approx(d.contribution)
    assert len(out["per_item"]) == 60
    assert "per_item" not in d.to_dict(per_item=False)
    assert diagnose(model, ds, pool.unlabeled[:10]).reliance_gap is None
    with pytest.raises(DataError, match="at least one item"):
        diagnose(model, ds, [])
