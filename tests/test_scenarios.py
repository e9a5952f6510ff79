"""Scenario generators: the data must have the ground truth the scenario claims.

The Bayes informativeness is checked three ways: against its own definition (synergy at chance),
against independent learned classifiers (which can never beat Bayes by more than sampling error,
and reach it where the optimum is linear), and against the Bayes predictor on the test set.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.linear_model import LogisticRegression

from backend.data import UNLABELED, DataError
from benchmark.scenarios import calibrate_sigma, list_scenarios, make_scenario, parse_name

SMALL = {"n_items": 400, "n_test": 2000, "n_val": 100, "dims": 8, "mc_samples": 20000}
TOL = 0.02  # Monte Carlo error of 20k samples is about 0.0035; learned models add a little


def _fit_score(x_tr, y_tr, x_te, y_te, model) -> float:
    return float(model.fit(x_tr, y_tr).score(x_te, y_te))


def _fresh(name: str, seed: int = 0, n: int = 6000, **params):
    """A large labelled sample of the scenario's process (the 'test' split with n items)."""
    sc = make_scenario(name, seed, **{**SMALL, "n_test": n, **params})
    return sc, sc.test


def test_same_seed_same_data_and_other_seed_other_data():
    a = make_scenario("difficulty+missing_mnar_30", 3, **SMALL)
    b = make_scenario("difficulty+missing_mnar_30", 3, **SMALL)
    c = make_scenario("difficulty+missing_mnar_30", 4, **SMALL)
    for k in a.modality_names:
        assert np.array_equal(a.pool.modalities[k], b.pool.modalities[k])
        assert np.array_equal(a.pool.masks[k], b.pool.masks[k])
        assert np.array_equal(a.test.modalities[k], b.test.modalities[k])
        assert not np.array_equal(a.pool.modalities[k], c.pool.modalities[k])
    assert np.array_equal(a.pool.true_labels, b.pool.true_labels)
    assert a.informativeness == b.informativeness


def test_pool_is_unlabelled_with_ground_truth_and_test_is_labelled():
    sc = make_scenario("balanced", 0, **SMALL)
    assert (sc.pool.labels == UNLABELED).all()
    assert sc.pool.true_labels is not None and sc.pool.true_labels.min() >= 0
    assert (sc.test.labels == sc.test.true_labels).all()
    assert (sc.val.labels >= 0).all()
    assert sc.pool.is_featurized() and sc.pool.modalities["a"].dtype == np.float32
    assert sc.pool.modalities["a"].shape == (400, 8)
    # classes are balanced in expectation
    counts = np.bincount(sc.test.labels, minlength=4) / len(sc.test)
    assert np.all(np.abs(counts - 0.25) < 0.04)
    assert set(sc.informativeness) == {"a", "b", "all", "chance"}
    assert sc.chance == pytest.approx(0.25)
    ids = set(sc.pool.ids) | set(sc.test.ids) | set(sc.val.ids)
    assert len(ids) == len(sc.pool) + len(sc.test) + len(sc.val)


def test_balanced_modalities_equally_informative_and_lda_reaches_bayes():
    sc, d = _fresh("balanced")
    inf = sc.informativeness
    assert inf["a"] == pytest.approx(0.80, abs=TOL) and inf["b"] == pytest.approx(0.80, abs=TOL)
    assert inf["all"] > max(inf["a"], inf["b"]) + 0.05
    y = d.labels
    half = len(y) // 2
    for k in ("a", "b"):  # the optimum is linear here: LDA must reach Bayes, never beat it
        x = d.modalities[k]
        acc = _fit_score(x[:half], y[:half], x[half:], y[half:], LinearDiscriminantAnalysis())
        assert acc == pytest.approx(inf[k], abs=0.03)
    x = np.hstack([d.modalities["a"], d.modalities["b"]])
    acc = _fit_score(x[:half], y[:half], x[half:], y[half:], LinearDiscriminantAnalysis())
    assert acc == pytest.approx(inf["all"], abs=0.03)


def test_difficulty_easy_linear_modality_and_hard_nonlinear_one():
    sc, d = _fresh("difficulty")
    inf = sc.informativeness
    assert inf["a"] == pytest.approx(0.70, abs=TOL)
    assert inf["b"] == pytest.approx(0.95, abs=TOL)
    assert inf["all"] >= inf["b"]
    assert sc.roles == {"a": "easy", "b": "hard"}
    y = d.labels
    half = len(y) // 2
    lin_a = _fit_score(d.modalities["a"][:half], y[:half], d.modalities["a"][half:], y[half:], LogisticRegression(max_iter=500))
    lin_b = _fit_score(d.modalities["b"][:half], y[:half], d.modalities["b"][half:], y[half:], LogisticRegression(max_iter=500))
    assert lin_a == pytest.approx(inf["a"], abs=0.03)  # easy: a linear model gets what there is
    assert lin_b < inf["b"] - 0.3  # hard: a linear model is far from what b carries


def test_synergy_each_modality_alone_at_chance():
    sc, d = _fresh("synergy")
    inf = sc.informativeness
    assert sc.pool.n_classes == 2  # XOR by default
    for k in ("a", "b"):
        assert inf[k] == pytest.approx(inf["chance"], abs=TOL)
    assert inf["all"] > 0.85
    y = d.labels
    half = len(y) // 2
    for k in ("a", "b"):  # independent check: no learned model does better than chance from one modality
        x = d.modalities[k]
        assert _fit_score(x[:half], y[:half], x[half:], y[half:], LinearDiscriminantAnalysis()) < 0.5 + 0.04
    # more classes: modular sum, still chance per modality
    sc4 = make_scenario("synergy", 0, **{**SMALL, "n_classes": 3})
    for k in ("a", "b"):
        assert sc4.informativeness[k] == pytest.approx(1 / 3, abs=TOL)


def test_uniqueness_each_modality_carries_its_own_factor():
    sc, _ = _fresh("uniqueness")
    inf = sc.informativeness
    # 4 classes = 2 x 2 factors: each modality alone knows one factor (~95 %), so about 0.95 / 2
    for k in ("a", "b"):
        assert inf[k] == pytest.approx(0.95 / 2, abs=TOL)
    assert inf["all"] == pytest.approx(0.95 ** 2, abs=0.03)
    with pytest.raises(DataError, match="composite"):
        make_scenario("uniqueness", 0, **{**SMALL, "n_classes": 5})


def test_redundancy_both_together_add_little():
    sc, _ = _fresh("redundancy")
    inf = sc.informativeness
    assert inf["a"] == pytest.approx(0.85, abs=TOL) and inf["b"] == pytest.approx(0.85, abs=TOL)
    assert inf["all"] - max(inf["a"], inf["b"]) < 0.03
    bal = make_scenario("balanced", 0, **SMALL).informativeness
    assert bal["all"] - max(bal["a"], bal["b"]) > 0.08  # conditionally independent views do add up


@pytest.mark.parametrize("rate", [0.1, 0.3, 0.5])
def test_missing_completely_at_random_rates(rate):
    sc, d = _fresh(f"missing_mcar_{int(rate * 100)}", n=8000)
    pres = d.presence_matrix()
    assert pres.any(axis=1).all()  # no item without any modality
    for j, k in enumerate(d.modality_names):
        absent = ~pres[:, j]
        assert absent.mean() == pytest.approx(rate, abs=0.025)
        per_class = [absent[d.labels == c].mean() for c in range(d.n_classes)]
        assert max(per_class) - min(per_class) < 0.06  # independent of the class
        assert (d.modalities[k][absent] == 0).all()  # zero-filled only together with the mask
    assert sc.informativeness_present["a"] == pytest.approx(0.80, abs=TOL)
    assert sc.informativeness["a"] < sc.informativeness_present["a"]
    assert sc.informativeness["all"] < make_scenario("balanced", 0, **SMALL).informativeness["all"]


def test_missing_not_at_random_depends_on_class():
    sc, d = _fresh("missing_mnar_30", n=8000)
    absent_a = ~d.masks["a"]
    assert absent_a.mean() == pytest.approx(0.3, abs=0.03)
    even = absent_a[d.labels % 2 == 0].mean()
    odd = absent_a[d.labels % 2 == 1].mean()
    assert even == pytest.approx(0.3 * 1.8, abs=0.04) and odd == pytest.approx(0.3 * 0.2, abs=0.04)
    # the mask itself is informative: the Bayes optimum with modality a and its presence beats MCAR
    mcar = make_scenario("missing_mcar_30", 0, **SMALL)
    assert sc.informativeness["a"] > mcar.informativeness["a"] + 0.02
    with pytest.raises(DataError, match="too high"):
        make_scenario("missing_mnar_50", 0, **SMALL, mnar_strength=1.0, missing_modalities=["a"], missing_rate=0.6)


def test_noisy_modality_corrupts_a_share_of_items_per_modality():
    sc = make_scenario("noisy_modality", 0, **{**SMALL, "n_items": 4000})
    corrupted = sc.truth["corrupted"]
    assert corrupted.shape == (4000, 2)
    assert corrupted.mean(axis=0) == pytest.approx([0.3, 0.3], abs=0.03)
    # a corrupted copy is visibly noisier, so which items are worth labelling depends on their modalities
    norms = np.linalg.norm(sc.pool.modalities["a"], axis=1)
    assert norms[corrupted[:, 0]].mean() > 3 * norms[~corrupted[:, 0]].mean()
    clean = make_scenario("balanced", 0, **SMALL).informativeness
    assert sc.informativeness["a"] < clean["a"] - 0.1
    assert sc.informativeness["all"] > max(sc.informativeness["a"], sc.informativeness["b"])


def test_bayes_predictor_matches_its_informativeness_on_the_test_set():
    sc = make_scenario("difficulty+noisy", 1, **{**SMALL, "n_test": 4000})
    pred = sc.process.bayes_predict(sc.test.modalities, sc.test.masks)
    assert (pred == sc.test.labels).mean() == pytest.approx(sc.informativeness["all"], abs=0.025)
    pred_b = sc.process.bayes_predict(sc.test.modalities, sc.test.masks, use=["b"])
    assert (pred_b == sc.test.labels).mean() == pytest.approx(sc.informativeness["b"], abs=0.025)


def test_noise_parameter_lowers_informativeness():
    lo = make_scenario("balanced", 0, **SMALL, noise=1.5).informativeness
    assert lo["a"] < 0.75 and lo["b"] < 0.75


def test_names_registry_and_errors():
    names = list_scenarios()
    for n in ("balanced", "difficulty", "missing_mcar_10", "missing_mnar_50", "redundancy", "uniqueness",
              "synergy", "noisy_modality"):
        assert n in names
    assert parse_name("missing_mcar_30") == ("balanced", {"missing": "mcar", "missing_rate": 0.3})
    assert parse_name("difficulty+noisy_20") == ("difficulty", {"corrupt_rate": 0.2})
    with pytest.raises(DataError, match="unknown scenario part 'bogus'"):
        make_scenario("balanced+bogus")
    with pytest.raises(DataError, match="unknown scenario parameters"):
        make_scenario("balanced", 0, n_itemz=10)
    with pytest.raises(DataError, match="seed"):
        make_scenario("balanced", -1)
    with pytest.raises(DataError, match="n_items"):
        make_scenario("balanced", 0, n_items=0)
    with pytest.raises(DataError, match="target accuracy"):
        calibrate_sigma(np.eye(2), np.array([0.5, 0.5]), np.array([0, 1]), 0.4)


def test_three_modalities_and_per_modality_dims():
    sc = make_scenario("balanced+missing_mcar_20", 0, **{**SMALL, "n_modalities": 3, "dims": [6, 8, 10]})
    assert sc.modality_names == ["a", "b", "c"]
    assert [sc.pool.modalities[k].shape[1] for k in "abc"] == [6, 8, 10]
    assert sc.informativeness["all"] > max(sc.informativeness[k] for k in "abc")
    syn = make_scenario("synergy", 0, **{**SMALL, "n_modalities": 3})
    for k in "abc":
        assert syn.informativeness[k] == pytest.approx(0.5, abs=TOL)
