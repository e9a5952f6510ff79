"""Semantics of the modality-aware strategies (the contract suite checks the generic guarantees)."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from backend.data import MultimodalDataset, Pool
from backend.strategies import QueryError, get_strategy
from backend.strategies.modality_aware import (
    HeadDisagreement,
    MissingAware,
    ReducibleBadge,
    ReducibleMargin,
    UnderreliedUncertainty,
    js_divergence,
    missing_excess,
    modality_outliers,
    normalized_uncertainty,
    reliance_shares,
    within_group_rank,
)

STRATEGIES = [UnderreliedUncertainty, HeadDisagreement, MissingAware, ReducibleMargin, ReducibleBadge]


# --- shared pieces ---------------------------------------------------------------------------------


def test_normalized_uncertainty_range() -> None:
    p = torch.tensor([[1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3], [0.5, 0.5, 0.0]])
    assert torch.allclose(normalized_uncertainty(p, "entropy"), torch.tensor([0.0, 1.0, math.log(2) / math.log(3)]))
    assert torch.allclose(normalized_uncertainty(p, "margin"), torch.tensor([0.0, 1.0, 1.0]))
    with pytest.raises(QueryError, match="uncertainty"):
        normalized_uncertainty(p, "variance")


def test_reliance_shares_labelled_or_seeded_sample(problem) -> None:
    model, ds, pool = problem
    s = reliance_shares(model, ds, pool)
    assert s.shape == (2,) and math.isclose(s.sum(), 1.0)
    empty = Pool.from_labeled(len(ds), [])
    a = reliance_shares(model, ds, empty, sample=50, seed=1)
    assert np.array_equal(a, reliance_shares(model, ds, empty, sample=50, seed=1))
    assert not np.array_equal(a, reliance_shares(model, ds, empty, sample=50, seed=2))


@pytest.mark.parametrize("cls", STRATEGIES)
@pytest.mark.parametrize("fixture", ["problem", "problem3"])
def test_valid_and_deterministic(cls, fixture, request) -> None:
    model, ds, pool = request.getfixturevalue(fixture)
    r1 = cls().query(model, ds, pool, 17, seed=5)
    r2 = cls().query(model, ds, pool, 17, seed=5)
    assert np.array_equal(r1.indices, r2.indices)
    assert len(set(r1.indices.tolist())) == 17 and np.isin(r1.indices, pool.unlabeled).all()
    assert r1.scores is not None and r1.scores.shape == pool.unlabeled.shape and np.isfinite(r1.scores).all()


def test_bad_parameters() -> None:
    with pytest.raises(QueryError, match="uncertainty"):
        UnderreliedUncertainty(uncertainty="variance")
    with pytest.raises(QueryError, match="gain"):
        UnderreliedUncertainty(gain=-1)
    with pytest.raises(QueryError, match="q_min"):
        MissingAware(q_min=0.6, q_max=0.5)
    with pytest.raises(QueryError, match="tie"):
        HeadDisagreement(tie=-1)


# --- underrelied_uncertainty ---------------------------------------------------------------------


def test_underrelied_weight_zero_when_balanced() -> None:
    assert UnderreliedUncertainty.mix_weight(np.array([0.5, 0.5])) == 0.0
    assert UnderreliedUncertainty.mix_weight(np.array([1 / 3, 1 / 3, 1 / 3])) == pytest.approx(0.0)
    assert UnderreliedUncertainty.mix_weight(np.array([0.8, 0.2])) == pytest.approx(0.6)
    assert UnderreliedUncertainty.mix_weight(np.array([0.8, 0.2]), gain=3.0) == 1.0


def test_underrelied_zero_weight_is_fused_uncertainty(problem) -> None:
    model, ds, pool = problem
    scores = UnderreliedUncertainty(gain=0.0).score(model, ds, pool, seed=0)
    fused = normalized_uncertainty(model.predict(ds, pool.unlabeled).probs, "entropy").double().cpu().numpy()
    np.testing.assert_allclose(scores, fused, atol=1e-12)


def test_underrelied_formula_and_weak_head_only_where_present(problem3) -> None:
    model, ds, pool = problem3
    strat = UnderreliedUncertainty(uncertainty="margin")
    scores = strat.score(model, ds, pool, seed=0)
    shares = np.array(list(strat.info["shares"].values()))
    weak = strat.info["weak"]
    assert weak == model.modality_names[int(np.argmin(shares))]
    w = strat.info["weight"]
    assert w == pytest.approx(shares.max() - shares.min())
    pred = model.predict(ds, pool.unlabeled)
    uf = normalized_uncertainty(pred.probs, "margin").double().cpu().numpy()
    uw = normalized_uncertainty(pred.unimodal_probs[weak], "margin").double().cpu().numpy()
    present = ds.masks[weak][pool.unlabeled]
    np.testing.assert_allclose(scores, (1 - w) * uf + w * uw * present, atol=1e-6)


# --- head_disagreement ---------------------------------------------------------------------------


def test_js_divergence_bounds() -> None:
    p = torch.tensor([[1.0, 0.0], [0.3, 0.7], [0.5, 0.5]])
    q = torch.tensor([[0.0, 1.0], [0.3, 0.7], [1.0, 0.0]])
    js = js_divergence(p, q)
    assert js[0] == pytest.approx(math.log(2), abs=1e-6)
    assert js[1] == pytest.approx(0.0, abs=1e-7)
    assert 0 < js[2] < math.log(2)
    assert torch.allclose(js, js_divergence(q, p))


def test_head_disagreement_by_hand(problem) -> None:
    model, ds, pool = problem
    scores = HeadDisagreement(tie=0.0).score(model, ds, pool, seed=0)
    pred = model.predict(ds, pool.unlabeled)
    ja = js_divergence(pred.unimodal_probs["a"], pred.probs).double().cpu().numpy()
    jb = js_divergence(pred.unimodal_probs["b"], pred.probs).double().cpu().numpy()
    hb = ds.masks["b"][pool.unlabeled]
    expected = np.where(hb, (ja + jb) / 2, ja) / math.log(2)  # 'a' is always present here
    np.testing.assert_allclose(scores, expected, atol=1e-6)
    assert scores.min() >= 0 and scores.max() <= 1


# --- missing_aware -------------------------------------------------------------------------------


def test_missing_excess_by_hand() -> None:
    # complete items (pattern 11) have U = 0.2; items lacking modality 2 (pattern 10) have U = 0.6;
    # one predicted class, shrinkage 0: excess = 0.6 - 0.2 = 0.4 for the incomplete items, 0 otherwise
    u = np.array([0.2, 0.2, 0.6, 0.6])
    presence = np.array([[1, 1], [1, 1], [1, 0], [1, 0]], dtype=bool)
    yhat = np.zeros(4, dtype=np.int64)
    np.testing.assert_allclose(missing_excess(u, presence, yhat, shrink=0.0), [0, 0, 0.4, 0.4])
    # two classes: class 1 complete items are U = 0.5 -> group (10, class 1) excess = 0.1 with no shrinkage
    u2 = np.array([0.2, 0.5, 0.6, 0.6])
    yhat2 = np.array([0, 1, 0, 1])
    np.testing.assert_allclose(missing_excess(u2, presence, yhat2, shrink=0.0), [0, 0, 0.4, 0.1])
    # shrink towards pattern-level (0.6 - 0.35 = 0.25) with weight 1 against n_g = 1: (0.4 + 0.25)/2
    np.testing.assert_allclose(missing_excess(u2, presence, yhat2, shrink=1.0)[2], 0.325)
    # an incomplete group *less* uncertain than complete ones explains nothing: clipped at 0
    assert missing_excess(np.array([0.5, 0.1]), np.array([[1, 1], [1, 0]], dtype=bool), np.zeros(2, np.int64), 0.0)[1] == 0
    # no complete item at all: fraction of modalities missing, U * (1 - present / M)
    np.testing.assert_allclose(
        missing_excess(np.array([0.8, 0.6]), np.array([[1, 0], [0, 1]], dtype=bool), np.zeros(2, np.int64)), [0.4, 0.3]
    )


def _weak_masked(model, ds, pool, keep_unlabelled: int | None = None, frac_missing: float = 0.7, seed: int = 0):
    """The dataset with the model's weak modality absent for most unlabelled items (labelled items untouched,
    so the measured shares and hence the weak modality do not change)."""
    shares = reliance_shares(model, ds, pool)
    weak = model.modality_names[int(np.argmin(shares))]
    rng = np.random.default_rng(seed)
    mask = ds.masks[weak].copy()
    unl = pool.unlabeled
    if keep_unlabelled is None:
        mask[unl[rng.random(unl.size) < frac_missing]] = False
    else:
        keep = rng.choice(unl, keep_unlabelled, replace=False)
        mask[unl] = False
        mask[keep] = True
    return ds.with_masks({weak: mask}), weak


def test_missing_aware_quota_only_spent_on_items_with_weak_modality(problem) -> None:
    model, ds, pool = problem
    ds2, weak = _weak_masked(model, ds, pool)
    strat = MissingAware(q_min=0.4, q_max=0.4)
    res = strat.query(model, ds2, pool, 20, seed=0)
    assert strat.info["weak"] == weak and strat.info["n_weak"] == 8
    weak_idx = np.array(strat.info["weak_indices"])
    assert ds2.masks[weak][weak_idx].all()
    assert np.isin(weak_idx, res.indices).all()
    # they are the lowest-weak-head-margin items among those that have the weak modality
    unl = pool.unlabeled
    pred = model.predict(ds2, unl)
    u_weak = normalized_uncertainty(pred.unimodal_probs[weak], "margin").double().cpu().numpy()
    has = ds2.masks[weak][unl]
    cand = np.flatnonzero(has)
    expected = unl[cand[np.lexsort((unl[cand], -u_weak[cand]))][:8]]
    assert np.array_equal(weak_idx, expected)
    # interleaved by relative rank: 8 weak picks among 20 -> a weak pick within every prefix of length >= 3
    is_weak = np.isin(res.indices, weak_idx)
    assert is_weak[:3].any() and is_weak[:10].sum() == 4


def test_missing_aware_quota_capped_by_items_having_weak(problem) -> None:
    model, ds, pool = problem
    ds2, weak = _weak_masked(model, ds, pool, keep_unlabelled=3)
    strat = MissingAware(q_min=1.0, q_max=1.0)
    res = strat.query(model, ds2, pool, 12, seed=0)
    assert strat.info["n_weak"] == 3
    assert ds2.masks[weak][strat.info["weak_indices"]].all()
    assert len(set(res.indices.tolist())) == 12


def test_missing_aware_without_quota_is_discounted_margin(problem) -> None:
    model, ds, pool = problem
    strat = MissingAware(q_min=0.0, q_max=0.0)
    res = strat.query(model, ds, pool, 15, seed=0)
    assert strat.info["n_weak"] == 0
    unl = pool.unlabeled
    pred = model.predict(ds, unl)
    u = normalized_uncertainty(pred.probs, "margin").double().cpu().numpy()
    presence = np.stack([ds.masks[k][unl] for k in model.modality_names], 1)
    u_adj = u - missing_excess(u, presence, pred.probs.argmax(1).cpu().numpy(), 5.0)
    expected = unl[np.lexsort((unl, -u_adj))[:15]]
    assert np.array_equal(res.indices, expected)
    # items lacking a modality are discounted, never boosted
    assert np.all(u_adj <= u + 1e-12)
    # scores: the batch first (in batch order), then the rest by discounted margin
    order = np.lexsort((unl, -res.scores))
    assert np.array_equal(unl[order[:15]], res.indices)


# --- reducible_margin ----------------------------------------------------------------------------


def test_within_group_rank_by_hand() -> None:
    u = np.array([0.1, 0.9, 0.5, 0.3, 0.2])
    g = np.array([0, 0, 0, 1, 1])
    np.testing.assert_allclose(within_group_rank(u, g), [1 / 3, 1.0, 2 / 3, 1.0, 0.5])


def test_reducible_margin_is_margin_on_complete_clean_data(problem) -> None:
    model, ds, pool = problem
    full = ds.with_masks({"b": np.ones(len(ds), dtype=bool)})
    got = ReducibleMargin(outlier_z=None, quota=0.0).query(model, full, pool, 25, seed=0).indices
    want = get_strategy("margin").query(model, full, pool, 25, seed=0).indices
    assert np.array_equal(got, want)


def test_reducible_margin_stratifies_by_presence_pattern(problem) -> None:
    model, ds, pool = problem
    n = 40
    res = ReducibleMargin(outlier_z=None, quota=0.0).query(model, ds, pool, n, seed=0)
    has_b = ds.masks["b"][pool.unlabeled]
    picked_b = ds.masks["b"][res.indices]
    # every pattern gets about its pool share of the batch (rank percentiles), not what raw margin gives
    assert abs(picked_b.mean() - has_b.mean()) <= 2.0 / n + 1e-9
    # inside a pattern, the picks are that pattern's most uncertain items
    pred = model.predict(ds, pool.unlabeled)
    u = normalized_uncertainty(pred.probs, "margin").double().cpu().numpy()
    miss = np.flatnonzero(~has_b)
    k = int((~picked_b).sum())
    top_missing = set(pool.unlabeled[miss[np.argsort(-u[miss], kind="stable")][:k]].tolist())
    assert set(res.indices[~picked_b].tolist()) == top_missing


def _corrupted(ds, pool, n_bad: int = 15, seed: int = 0):
    """A copy of ``ds`` with heavy noise on every dimension of modality a for ``n_bad`` unlabelled items."""
    rng = np.random.default_rng(seed)
    bad = rng.choice(pool.unlabeled, n_bad, replace=False)
    a = ds.modalities["a"].copy()
    a[bad] += rng.normal(0, 8.0, a[bad].shape).astype(np.float32)
    return MultimodalDataset({"a": a, "b": ds.modalities["b"]}, ds.labels, ds.class_names, ds.masks,
                             true_labels=ds.true_labels), bad


def test_modality_outliers_find_corrupted_copies(problem) -> None:
    model, ds, pool = problem
    unl = pool.unlabeled
    noisy, bad = _corrupted(ds, pool)
    pred = model.predict(noisy, unl)
    out = modality_outliers(pred.embeddings, pred.masks, model.modality_names, z=3.0)
    flagged = unl[out[:, 0]]
    assert np.isin(bad, flagged).mean() >= 0.8  # found
    assert np.isin(flagged, bad).mean() >= 0.8  # and little else
    assert not out[~ds.masks["b"][unl], 1].any()  # absent copies are never outliers
    res = ReducibleMargin().query(model, noisy, pool, 30, seed=0)
    assert not np.isin(res.indices, flagged).any()  # flagged (corrupted) items are queried last


@pytest.mark.parametrize("cls", [ReducibleMargin, ReducibleBadge])
def test_reducible_quota_spent_first_on_items_having_weak(problem, cls) -> None:
    model, ds, pool = problem
    ds2, weak = _weak_masked(model, ds, pool)
    strat = cls(quota=0.5, outlier_z=None)
    res = strat.query(model, ds2, pool, 20, seed=0)
    assert strat.info["weak"] == weak and strat.info["quota"] == 0.5 and strat.info["n_quota"] == 10
    assert ds2.masks[weak][res.indices[:10]].all()


def test_reducible_margin_bad_parameters() -> None:
    for kw, field in (({"outlier_z": 0.0}, "outlier_z"), ({"k": 0}, "k"), ({"quota": 1.5}, "quota"),
                      ({"outliers": "drop"}, "outliers")):
        with pytest.raises(QueryError, match=field):
            ReducibleMargin(**kw)


# --- reducible_badge ------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 3])
def test_reducible_badge_without_outliers_or_quota_is_badge(problem, seed) -> None:
    model, ds, pool = problem
    got = ReducibleBadge(outlier_z=None, quota=0.0).query(model, ds, pool, 20, seed=seed)
    want = get_strategy("badge").query(model, ds, pool, 20, seed=seed)
    assert np.array_equal(got.indices, want.indices)
    np.testing.assert_allclose(got.scores, want.scores)


def test_reducible_badge_is_badge_over_the_non_outliers(problem) -> None:
    model, ds, pool = problem
    noisy, bad = _corrupted(ds, pool)
    strat = ReducibleBadge()
    res = strat.query(model, noisy, pool, 30, seed=1)
    pred = model.predict(noisy, pool.unlabeled)
    flagged = pool.unlabeled[modality_outliers(pred.embeddings, pred.masks, model.modality_names).any(axis=1)]
    assert strat.info["n_outliers"] == flagged.size and np.isin(bad, flagged).mean() >= 0.8
    assert not np.isin(res.indices, flagged).any()
    # the picks are exactly BADGE's on the pool without the flagged items
    keep = np.setdiff1d(np.arange(len(noisy)), flagged)
    sub = noisy.subset(keep)
    sub_pool = Pool.from_labeled(keep.size, np.flatnonzero(np.isin(keep, pool.labeled)))
    want = keep[get_strategy("badge").query(model, sub, sub_pool, 30, seed=1).indices]
    assert np.array_equal(res.indices, want)


def test_reducible_badge_fills_a_short_batch_with_outliers_by_margin(problem) -> None:
    model, ds, pool = problem
    noisy, _ = _corrupted(ds, pool, n_bad=40)
    strat = ReducibleBadge()
    pred = model.predict(noisy, pool.unlabeled)
    flagged = modality_outliers(pred.embeddings, pred.masks, model.modality_names).any(axis=1)
    n = pool.unlabeled.size
    res = strat.query(model, noisy, pool, n, seed=0)
    k = int(flagged.sum())
    assert k > 0 and not np.isin(res.indices[:n - k], pool.unlabeled[flagged]).any()
    u = normalized_uncertainty(pred.probs, "margin").double().cpu().numpy()
    pos = np.flatnonzero(flagged)
    assert np.array_equal(res.indices[n - k:], pool.unlabeled[pos[np.argsort(-u[pos], kind="stable")]])


def test_reducible_badge_bad_parameters() -> None:
    for kw, field in (({"outlier_z": -1.0}, "outlier_z"), ({"k": 0}, "k"), ({"quota": 2}, "quota"),
                      ({"q_max": 1.5}, "q_max"), ({"sample": 0}, "sample")):
        with pytest.raises(QueryError, match=field):
            ReducibleBadge(**kw)


# --- variant specs: the ablation suite names reducible_margin's variants as strings ------------------


def test_strategy_spec_is_the_strategy_with_those_settings(problem) -> None:
    from backend.strategies import StrategySpec

    assert StrategySpec.parse("margin") == StrategySpec(name="margin", params={})
    spec = StrategySpec.parse("reducible_margin(quota=0.25, outlier_z=null, outliers=absent, stratify=false)")
    assert (spec.name, spec.params) == (
        "reducible_margin", {"quota": 0.25, "outlier_z": None, "outliers": "absent", "stratify": False})
    assert StrategySpec.model_validate(str(spec)) == spec  # a spec's text reads back as the same spec
    model, ds, pool = problem
    for spec, kw in (("reducible_margin(quota=0)", {"quota": 0}), ("reducible_margin(outliers=absent)", {"outliers": "absent"})):
        got = get_strategy(spec).query(model, ds, pool, 15, seed=2).indices
        assert np.array_equal(got, ReducibleMargin(**kw).query(model, ds, pool, 15, seed=2).indices)


@pytest.mark.parametrize("spec, named", [("reducible_margin(quota=2)", "quota must be"),
                                         ("reducible_margin(foo=1)", "unexpected keyword argument 'foo'"),
                                         ("reducible_margin(quota)", "is not key=value"),
                                         ("reducible_margin(quota=0, quota=1)", "quota given twice"),
                                         ("reducible_margin(quota=0", "expected name(key=value"),
                                         ("nope(x=1)", "unknown strategy 'nope'")])
def test_bad_strategy_spec_is_named(spec, named) -> None:
    with pytest.raises(QueryError, match=re.escape(named)):
        get_strategy(spec)


def test_ablation_suite_resolves_every_variant() -> None:
    from benchmark.runner import strategy_families
    from benchmark.suites import BenchmarkConfig, get_suite, resolve_strategies

    cfg = get_suite("ablation")
    variants = [s for s in cfg.strategies if s.startswith("reducible_margin(")]
    assert len(variants) == 5 and cfg.seeds == (100, 101, 102, 103)
    assert all(f == "ours" for s, f in strategy_families(variants).items())
    with pytest.raises(QueryError, match="quota must be"):
        resolve_strategies(BenchmarkConfig(strategies=("random", "reducible_margin(quota=3)")))


def test_study_variants_are_specs_and_register_nothing() -> None:
    """studies/ is outside the product: its variants are specs (or an unregistered class with settings)."""
    from backend.strategies import StrategySpec, list_strategies
    from backend.strategies.modality_aware import ReducibleBadge

    before = list_strategies()
    from studies.variants import SPECS, make_strategy

    assert list_strategies() == before
    assert all(StrategySpec.parse(spec).name in before for spec in SPECS.values())
    rm = make_strategy("rm_strat_only")
    assert isinstance(rm, ReducibleMargin) and rm.outlier_z is None and rm.stratify
    assert isinstance(make_strategy("rb_auto"), ReducibleBadge) and make_strategy("rb_auto").quota == "auto"
    assert isinstance(make_strategy("margin"), type(get_strategy("margin")))
