"""The contract every registered query strategy must honour, whoever wrote it.

Parametrised over ``list_strategies()`` at collection time, so a strategy registered later (BMMAL,
modality-aware ones, ...) is held to the same rules automatically: exactly n unique unlabelled
indices; seed-deterministic; robust to missing modalities; clear QueryErrors for impossible
requests; scores aligned with ``scored``. Runs on the shared ``problem``/``problem3`` fixtures
(real trained fusion models, see tests/conftest.py).
"""

from __future__ import annotations

import numpy as np
import pytest

from backend.data import Pool
from backend.strategies import QueryError, QueryResult, ScoringStrategy, get_strategy, list_strategies

STRATEGIES = sorted(list_strategies())
PROBLEMS = ["problem", "problem3", "problem_probe"]  # the last: recipe "probe"
MULTI_LABEL_PROBLEMS = ["problem_multilabel", "problem_multilabel_probe"]  # label sets, sgd and probe
MULTI_LABEL = [k for k in STRATEGIES if get_strategy(k).multi_label]
SINGLE_LABEL_ONLY = [k for k in STRATEGIES if k not in MULTI_LABEL]


def _check_selection(result: QueryResult, pool: Pool, n: int, name: str) -> None:
    idx = np.asarray(result.indices)
    assert idx.shape == (n,), f"{name}: expected {n} indices, got shape {idx.shape}"
    assert np.issubdtype(idx.dtype, np.integer), f"{name}: indices must be integers, got {idx.dtype}"
    assert np.unique(idx).size == n, f"{name}: duplicate indices {idx}"
    assert np.isin(idx, pool.unlabeled).all(), f"{name}: picked labelled/out-of-range items {np.setdiff1d(idx, pool.unlabeled)}"
    if result.scores is not None:
        scores = np.asarray(result.scores)
        assert result.scored is not None, f"{name}: scores given without the items they score"
        scored = np.asarray(result.scored)
        assert scores.shape == scored.shape == (scored.size,), f"{name}: scores {scores.shape} vs scored {scored.shape}"
        assert np.unique(scored).size == scored.size, f"{name}: scored has duplicates"
        assert np.isin(scored, pool.unlabeled).all(), f"{name}: scored contains items outside the unlabelled pool"
        assert not np.isnan(scores).any(), f"{name}: NaN scores"


def test_registry_has_the_classic_strategies() -> None:
    for name in ["random", "least_confidence", "margin", "entropy", "bald", "coreset", "badge", "typiclust"]:
        assert name in STRATEGIES
    for name, desc in list_strategies().items():
        assert desc and "\n" not in desc, f"{name}: needs a one-line description"
        assert type(get_strategy(name)).__doc__, f"{name}: needs a docstring with its formula"


@pytest.mark.parametrize("fixture", PROBLEMS)
@pytest.mark.parametrize("name", STRATEGIES)
def test_returns_n_unique_unlabelled_indices(name: str, fixture: str, request: pytest.FixtureRequest) -> None:
    model, ds, pool = request.getfixturevalue(fixture)
    for n in (1, 7):
        _check_selection(get_strategy(name).query(model, ds, pool, n, seed=0), pool, n, name)


@pytest.mark.parametrize("name", STRATEGIES)
def test_identical_seeds_give_identical_results(name: str, problem) -> None:
    model, ds, pool = problem
    a = get_strategy(name).query(model, ds, pool, 9, seed=5)
    b = get_strategy(name).query(model, ds, pool, 9, seed=5)
    np.testing.assert_array_equal(a.indices, b.indices)
    assert (a.scores is None) == (b.scores is None)
    if a.scores is not None:
        np.testing.assert_array_equal(a.scores, b.scores)
        np.testing.assert_array_equal(a.scored, b.scored)


@pytest.mark.parametrize("name", STRATEGIES)
def test_works_when_items_miss_modalities(name: str, problem3) -> None:
    model, ds, pool = problem3
    n = len(ds)
    i = np.arange(n)
    # every modality is missing for some items (never all of them for the same item)
    masks = {k: ds.masks[k] & (i % 4 != j) for j, k in enumerate(ds.modality_names)}
    holey = ds.with_masks(masks)
    result = get_strategy(name).query(model, holey, pool, 12, seed=1)
    _check_selection(result, pool, 12, name)


@pytest.mark.parametrize("name", STRATEGIES)
def test_n_equal_to_pool_size_works(name: str, problem) -> None:
    model, ds, pool = problem
    small = Pool.from_labeled(len(ds), np.setdiff1d(np.arange(len(ds)), pool.unlabeled[::20]))
    n = small.unlabeled.size
    result = get_strategy(name).query(model, ds, small, n, seed=0)
    _check_selection(result, small, n, name)
    assert set(result.indices.tolist()) == set(small.unlabeled.tolist())


@pytest.mark.parametrize("name", STRATEGIES)
def test_works_with_no_labelled_items(name: str, problem) -> None:
    model, ds, _ = problem
    cold = Pool.from_labeled(len(ds), [])
    _check_selection(get_strategy(name).query(model, ds, cold, 5, seed=2), cold, 5, name)


@pytest.mark.parametrize("name", STRATEGIES)
def test_impossible_requests_raise_clear_query_errors(name: str, problem) -> None:
    model, ds, pool = problem
    strategy = get_strategy(name)
    with pytest.raises(QueryError, match=f"asked for {pool.unlabeled.size + 1} items but only {pool.unlabeled.size}"):
        strategy.query(model, ds, pool, pool.unlabeled.size + 1, seed=0)
    full = Pool.from_labeled(len(ds), np.arange(len(ds)))
    with pytest.raises(QueryError, match="unlabelled pool is empty"):
        strategy.query(model, ds, full, 1, seed=0)
    with pytest.raises(QueryError, match="n must be positive"):
        strategy.query(model, ds, pool, 0, seed=0)


def test_the_multi_label_forms_the_issue_names_exist() -> None:
    for name in ["random", "least_confidence", "margin", "entropy", "bald", "coreset", "badge", "typiclust"]:
        assert name in MULTI_LABEL


@pytest.mark.parametrize("fixture", MULTI_LABEL_PROBLEMS)
@pytest.mark.parametrize("name", MULTI_LABEL)
def test_multi_label_strategies_honour_the_contract(name: str, fixture: str, request: pytest.FixtureRequest) -> None:
    model, ds, pool = request.getfixturevalue(fixture)
    assert model.multi_label and ds.multi_label
    for n in (1, 7):
        _check_selection(get_strategy(name).query(model, ds, pool, n, seed=0), pool, n, name)
    a = get_strategy(name).query(model, ds, pool, 9, seed=5)
    b = get_strategy(name).query(model, ds, pool, 9, seed=5)
    np.testing.assert_array_equal(a.indices, b.indices)
    i = np.arange(len(ds))
    holey = ds.with_masks({k: ds.masks[k] & (i % 4 != j) for j, k in enumerate(ds.modality_names)})
    _check_selection(get_strategy(name).query(model, holey, pool, 12, seed=1), pool, 12, name)
    cold = Pool.from_labeled(len(ds), [])
    _check_selection(get_strategy(name).query(model, ds, cold, 5, seed=2), cold, 5, name)


@pytest.mark.parametrize("name", SINGLE_LABEL_ONLY)
def test_strategies_without_a_multi_label_form_refuse_by_name(name: str, problem_multilabel) -> None:
    model, ds, pool = problem_multilabel
    with pytest.raises(QueryError, match=rf"strategy '{name}' has no multi-label form.*use one of: .*margin"):
        get_strategy(name).query(model, ds, pool, 3, seed=0)


def test_family_and_origin_are_the_readme_table():
    """README: classic = random and the seven baselines; multimodal = bmmal; modality-aware (ours) = four."""
    from backend.strategies import strategy_class

    got = {name: (strategy_class(name).family, strategy_class(name).origin) for name in STRATEGIES}
    assert {n for n, (_, o) in got.items() if o == "ours"} == {
        "underrelied_uncertainty", "head_disagreement", "missing_aware", "reducible_margin"}
    assert {n for n, (f, o) in got.items() if f == "multimodal" and o != "ours"} == {"bmmal"}
    assert {n for n, (f, _) in got.items() if f == "classic"} == {
        "random", "least_confidence", "margin", "entropy", "bald", "badge", "coreset", "typiclust"}
    assert [n for n, (_, o) in got.items() if o == "baseline"] == ["random"]


@pytest.mark.parametrize("name", STRATEGIES)
def test_rank_orders_the_whole_pool_starting_with_the_query(name, problem):
    """rank(): every unlabelled item once, by descending priority, beginning with what query() picks."""
    from backend.strategies import rank

    model, ds, pool = problem
    r = rank(get_strategy(name), model, ds, pool, seed=3, batch=7)
    assert sorted(r.order.tolist()) == pool.unlabeled.tolist() and r.unlabeled.tolist() == pool.unlabeled.tolist()
    by_item = dict(zip(r.unlabeled.tolist(), r.priority.tolist()))
    pri = [by_item[i] for i in r.order.tolist()]
    assert all(a >= b for a, b in zip(pri, pri[1:])), f"{name}: priorities out of order"
    assert r.order[:7].tolist() == get_strategy(name).query(model, ds, pool, 7, seed=3).indices.tolist()
    assert r.kind == ("strategy" if isinstance(get_strategy(name), ScoringStrategy) else "margin")
