"""Agreement checks behind the performance harness (perf/), fast and without timing assertions.

On small N: our core-set strategy picks exactly what a plain float64 NumPy k-center picks from the same
labelled start; our margin/entropy strategies pick the same top-b as NumPy (ties to the lowest index);
the harness's BADGE objective equals a brute-force one. If the peer libraries happen to be installed
(perf/run.sh's .venv-perf), the same inputs are also checked against them; CI does not need them.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from backend.kernels import FactoredEmbedding, greedy_k_center
from backend.strategies import get_strategy
from perf.common import (
    badge_objective,
    cached_problem,
    entropy_reference,
    kcenter_reference,
    make_inputs,
    margin_reference,
    topb_reference,
)

B = 25


@pytest.fixture(scope="module")
def inputs():
    """600 items, d=24, C=5, 60 labelled; rows 100..119 duplicate rows 0..19 (exact score ties)."""
    inp = make_inputs(600, d=24, n_classes=5, n_labeled=60, seed=3)
    inp.z[100:120] = inp.z[0:20]
    inp.probs[100:120] = inp.probs[0:20]
    return inp


def test_make_inputs_is_seeded_and_valid():
    a, b = make_inputs(300, d=8, n_classes=4, n_labeled=20, seed=1), make_inputs(300, d=8, n_classes=4, n_labeled=20, seed=1)
    assert np.array_equal(a.z, b.z) and np.array_equal(a.probs, b.probs) and np.array_equal(a.labeled, b.labeled)
    assert a.z.dtype == np.float32 and a.probs.dtype == np.float32
    np.testing.assert_allclose(a.probs.sum(axis=1), 1.0, atol=1e-5)
    assert a.labeled.size == 20 and np.unique(a.labeled).size == 20
    assert np.array_equal(np.sort(np.concatenate([a.labeled, a.unlabeled])), np.arange(300))
    with pytest.raises(ValueError, match="n_labeled"):
        make_inputs(10, n_labeled=10)


def test_coreset_strategy_matches_plain_kcenter(inputs):
    model, ds, pool = cached_problem(inputs)
    ours = get_strategy("coreset").query(model, ds, pool, B).indices
    ref = kcenter_reference(inputs.z, inputs.labeled, B, exact=True)
    assert ours.tolist() == ref.tolist()  # same start, same picks, same order


def test_kcenter_kernel_matches_reference_from_a_single_start(inputs):
    start = [int(inputs.unlabeled[7])]
    ours = greedy_k_center(torch.from_numpy(inputs.z), start, B)
    assert ours.tolist() == kcenter_reference(inputs.z, start, B, exact=True).tolist()
    # the expanded float64 reference (the harness's "plain NumPy" row) agrees with the exact one
    assert kcenter_reference(inputs.z, start, B).tolist() == ours.tolist()


@pytest.mark.parametrize("name,reference", [("margin", margin_reference), ("entropy", entropy_reference)])
def test_uncertainty_topb_matches_numpy(inputs, name, reference):
    model, ds, pool = cached_problem(inputs)
    res = get_strategy(name).query(model, ds, pool, B)
    unl = pool.unlabeled
    ref = topb_reference(reference(inputs.probs[unl]), unl, B)
    assert set(res.indices.tolist()) == set(ref.tolist())
    np.testing.assert_allclose(res.scores, reference(inputs.probs[unl]), atol=1e-5)


def test_uncertainty_ties_go_to_the_lowest_index():
    inp = make_inputs(200, d=4, n_classes=3, n_labeled=10, seed=0)
    inp.probs[:] = inp.probs[0]  # every item ties
    model, ds, pool = cached_problem(inp)
    for name in ("margin", "entropy"):
        assert get_strategy(name).query(model, ds, pool, 5).indices.tolist() == pool.unlabeled[:5].tolist()


def test_badge_objective_matches_brute_force(inputs):
    model, ds, pool = cached_problem(inputs)
    picks = get_strategy("badge").query(model, ds, pool, B, seed=0).indices
    unl = pool.unlabeled
    assert np.unique(picks).size == B and np.isin(picks, unl).all()
    g = FactoredEmbedding.badge(torch.from_numpy(inputs.probs[unl].astype(np.float64)),
                                [torch.from_numpy(inputs.z[unl].astype(np.float64))]).materialize().numpy()
    centers = g[np.searchsorted(unl, picks)]
    brute = ((g[:, None, :] - centers[None, :, :]) ** 2).sum(axis=2).min(axis=1).sum()
    assert badge_objective(inputs.probs, inputs.z, unl, np.sort(picks)) == pytest.approx(brute, rel=1e-9)


# ---- optional: the peers themselves, when installed (perf/run.sh's .venv-perf) ----------------


def test_peers_agree_when_installed():
    pytest.importorskip("skactiveml")
    pytest.importorskip("small_text")
    from perf.kernels_vs_peers import _setup_ours, _setup_peer

    inputs = make_inputs(600, d=24, n_classes=5, n_labeled=60, seed=4)  # no duplicates: scikit-activeml breaks ties randomly

    for kernel, peers in (("coreset", ("skactiveml", "small-text")), ("margin", ("skactiveml", "small-text")),
                          ("entropy", ("skactiveml", "small-text"))):
        ours = _setup_ours(kernel, inputs, B)()
        for peer in peers:
            theirs = _setup_peer(kernel, peer, inputs, B)()
            if kernel == "coreset":
                assert theirs.tolist() == ours.tolist(), (kernel, peer)
            else:
                unl = inputs.unlabeled
                ref = (margin_reference if kernel == "margin" else entropy_reference)(inputs.probs[unl])
                full = np.full(inputs.n, np.nan)
                full[unl] = ref
                boundary = full[topb_reference(ref, unl, B)[-1]]
                diff = np.array(sorted(set(theirs.tolist()) ^ set(ours.tolist())), dtype=np.int64)
                assert np.all(np.abs(full[diff] - boundary) <= 1e-6), (kernel, peer)  # equal up to boundary ties
    badge = _setup_peer("badge", "skactiveml", inputs, B)()
    assert np.unique(badge).size == B and np.isin(badge, inputs.unlabeled).all()
