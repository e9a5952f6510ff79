"""Multi-label in the benchmark (issue 16 item 4): the synthetic ``multilabel`` scenario and its ground
truth, the scores against scikit-learn, the oracle's label sets, the one-vs-rest anchor, a smoke-sized run
through the CLI (mixed with a single-label scenario, resumed, reported) and the refusal of strategies
without a multi-label form before anything runs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, f1_score
from typer.testing import CliRunner

from backend.data import DataError
from benchmark.anchor import LinearProbeAnchor
from benchmark.oracle import OracleConfig, SimulatedOracle
from benchmark.protocol import MULTI_LABEL_COLUMNS, result_columns
from benchmark.runner import run_benchmark
from benchmark.scenarios import is_multi_label, list_scenarios, make_scenario, presence_strata
from benchmark.scores import label_scores, multi_label_scores, predicted_labels, single_label_scores
from benchmark.suites import BenchmarkConfig, get_suite
from mmal.cli import app

SMALL = {"n_items": 300, "n_test": 300, "n_val": 100, "dims": 8, "mc_samples": 20000}
TOL = 0.02  # Monte Carlo error of 20,000 samples is about 0.0035; the rest is calibration


# ----------------------------------------------------------------------------------------------
# scores against scikit-learn
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed, rate", [(0, 0.3), (1, 0.05), (2, 0.6)])
def test_multi_label_scores_match_sklearn(seed, rate):
    rng = np.random.default_rng(seed)
    y = (rng.random((200, 7)) < rate).astype(np.int64)
    pred = np.where(rng.random(y.shape) < 0.2, 1 - y, y)
    pred[:, 6] = 0  # a class never predicted
    y[:, 5], pred[:, 5] = 0, 0  # a class neither true nor predicted: F1 0 (zero_division=0)
    got = multi_label_scores(pred, y)
    assert got["micro_f1"] == pytest.approx(f1_score(y, pred, average="micro", zero_division=0))
    assert got["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro", zero_division=0))
    assert got["subset_accuracy"] == got["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert label_scores(pred, y, 7) == got


def test_single_label_scores_match_sklearn_and_predictions_threshold_at_one_half():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 5, 300)
    pred = np.where(rng.random(300) < 0.3, rng.integers(0, 5, 300), y)
    pred[pred == 4] = 3  # class 4 never predicted
    got = single_label_scores(pred, y, 6)  # class 5 absent from both
    assert got["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert got["macro_f1"] == pytest.approx(f1_score(y, pred, labels=range(6), average="macro", zero_division=0))
    probs = np.array([[0.2, 0.5, 0.7], [0.49, 0.9, 0.1]])
    assert predicted_labels(probs, multi_label=True).tolist() == [[0, 1, 1], [0, 1, 0]]
    assert predicted_labels(probs, multi_label=False).tolist() == [2, 1]


# ----------------------------------------------------------------------------------------------
# the synthetic scenario
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ml():
    return make_scenario("multilabel", 0, **SMALL)


def test_multilabel_scenario_tags_per_modality_ground_truth(ml):
    names = ["tag_a0", "tag_a1", "tag_b0", "tag_b1", "tag_ab0"]
    assert ml.pool.class_names == names and ml.pool.multi_label and ml.test.multi_label
    assert ml.pool.labels.shape == (300, 5) and (ml.pool.labels == -1).all()
    assert (ml.test.labels == ml.test.true_labels).all() and set(np.unique(ml.test.labels)) == {0, 1}
    rate = ml.pool.true_labels.mean(axis=0)
    assert rate[:4] == pytest.approx([0.3] * 4, abs=0.08) and rate[4] == pytest.approx(0.5, abs=0.08)
    per = ml.params["class_informativeness"]
    for m, own, other in (("a", ["tag_a0", "tag_a1"], ["tag_b0", "tag_b1"]),
                          ("b", ["tag_b0", "tag_b1"], ["tag_a0", "tag_a1"])):
        for t in own:  # its own tags at the stated accuracy, the other modality's at the prior (0.7)
            assert per[m][t] == pytest.approx(0.9, abs=TOL)
        for t in other:
            assert per[m][t] == pytest.approx(0.7, abs=TOL)
        assert per[m]["tag_ab0"] == pytest.approx(0.5, abs=TOL)  # the XOR tag: each alone at chance
    assert per["all"]["tag_ab0"] > 0.7  # both together decide it
    # informativeness = Bayes subset accuracy (whole sets), chance = the most probable set
    info = ml.informativeness
    assert info["chance"] == pytest.approx(0.7 ** 4 * 0.5) and info["chance"] < info["a"] < info["all"]
    assert info["all"] > info["b"] and ml.summary()["multi_label"] and 1.4 < ml.summary()["label_cardinality"] < 2.1
    # the Bayes predictor reaches its informativeness on the test set (whole sets)
    pred = ml.process.bayes_predict(ml.test.modalities, ml.test.masks)
    assert (ml.process.labels_of(pred) == ml.test.labels).all(axis=1).mean() == pytest.approx(info["all"], abs=0.07)


def test_multilabel_composes_with_modifiers_and_is_reproducible(ml):
    again = make_scenario("multilabel", 0, **SMALL)
    assert np.array_equal(again.pool.modalities["a"], ml.pool.modalities["a"])
    assert np.array_equal(again.pool.true_labels, ml.pool.true_labels)
    mnar = make_scenario("multilabel+missing_mnar_30", 0, **{**SMALL, "n_items": 2000})
    y, absent = presence_strata(mnar.pool.true_labels), ~mnar.pool.masks["a"]
    assert mnar.pool.presence_matrix().any(axis=1).all()
    assert absent[y % 2 == 0].mean() > 0.4 and absent[y % 2 == 1].mean() < 0.15  # rate follows the stratum
    assert mnar.informativeness["all"] < ml.informativeness["all"]
    noisy = make_scenario("multilabel+noisy", 0, **SMALL)
    assert noisy.truth["corrupted"].mean() == pytest.approx(0.3, abs=0.06)
    assert noisy.informativeness["a"] < ml.informativeness["a"]
    assert is_multi_label("multilabel+missing_mnar_30") and is_multi_label("emoji_tags+missing_mcar_10")
    assert not is_multi_label("synergy") and not is_multi_label("emoji")
    assert "multilabel" in list_scenarios() and "emoji_tags" in list_scenarios(real=True)
    assert not any(is_multi_label(s) for s in get_suite("paper").scenarios)  # "all" strategies include refusers
    with pytest.raises(DataError, match="tags_both"):
        make_scenario("multilabel", 0, **SMALL, tags_both=9)
    with pytest.raises(DataError, match="n_modalities=2"):
        make_scenario("multilabel", 0, **SMALL, n_modalities=3)


def test_presence_strata():
    sets = np.array([[0, 1, 1], [0, 0, 0], [1, 0, 1]])
    assert presence_strata(sets).tolist() == [1, 3, 0]
    assert presence_strata(np.array([2, 0])).tolist() == [2, 0]


# ----------------------------------------------------------------------------------------------
# oracle and anchor
# ----------------------------------------------------------------------------------------------
def test_oracle_answers_label_sets_and_noise_toggles_one_class(ml):
    exact = SimulatedOracle(ml.pool, seed=1)
    assert np.array_equal(exact.label([3, 5]), ml.pool.true_labels[[3, 5]])
    noisy = SimulatedOracle(ml.pool, OracleConfig(noise_rate=0.2), seed=1)
    wrong = (noisy.answers != ml.pool.true_labels).sum(axis=1)
    assert set(np.unique(wrong)) == {0, 1} and np.array_equal(wrong == 1, noisy.flipped)
    assert noisy.flipped.mean() == pytest.approx(0.2, abs=0.06)
    assert np.array_equal(noisy.answers, SimulatedOracle(ml.pool, OracleConfig(noise_rate=0.2), seed=1).answers)


def _one_vs_rest_reference(x_train, y, x_test):
    """scikit-learn's own one-vs-rest wrapper around the anchor's logistic regression."""
    import warnings

    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "label not 3 is present in all training examples": a constant column
        return OneVsRestClassifier(LogisticRegression(C=0.5, max_iter=1000)).fit(x_train, y).predict(x_test)


def test_anchor_one_vs_rest_matches_sklearn(ml):
    anchor = LinearProbeAnchor(ml.pool, ml.test)
    idx = np.arange(120)
    y = ml.pool.true_labels[idx].copy()
    y[:, 3] = 0  # a class no labelled item has: predicted absent
    got = anchor.scores(idx, y)
    ref = multi_label_scores(_one_vs_rest_reference(anchor.x_pool[idx], y, anchor.x_test), ml.test.labels)
    assert got == {"anchor_acc": ref["accuracy"], "anchor_micro_f1": ref["micro_f1"]}
    assert 0.3 < got["anchor_micro_f1"] < 1


# ----------------------------------------------------------------------------------------------
# runs: CLI smoke (mixed with a single-label scenario), resume, report, refusal
# ----------------------------------------------------------------------------------------------
SMOKE = ["benchmark", "run", "--suite", "smoke", "--scenarios", "balanced,multilabel", "--strategies", "random,margin",
         "--seeds", "0,1", "--rounds", "1", "--initial", "20", "--batch-size", "20", "--items", "200",
         "--train", "epochs=10", "--no-progress"]


def test_multilabel_smoke_run_through_the_cli_mixed_resumed_and_reported(tmp_path):
    out = tmp_path / "run"
    res = CliRunner().invoke(app, SMOKE + ["--out", str(out)])
    assert res.exit_code == 0, res.output + repr(res.exception)
    df = pd.read_csv(out / "results.csv")
    ml, sl = df[df["dataset"] == "multilabel"], df[df["dataset"] == "balanced"]
    assert list(df.columns) == result_columns(["a", "b"], multi_label=True)
    assert len(ml) == len(sl) == 2 * (1 + 2 * 2)  # per seed: the full-pool line, 2 strategies x 2 rounds
    assert ml[MULTI_LABEL_COLUMNS + ["macro_f1"]].notna().all().all() and sl[MULTI_LABEL_COLUMNS].isna().all().all()
    assert (ml["accuracy"] == ml["subset_accuracy"]).all()  # documented: accuracy of label sets = subset accuracy
    assert ml[["micro_f1", "macro_f1", "subset_accuracy"]].stack().between(0, 1).all()
    assert np.allclose(ml["contribution:a"] + ml["contribution:b"], 1.0)
    run = json.loads((out / "run.json").read_text())
    summ = run["scenarios"]["multilabel"]["0"]
    assert summ["multi_label"] and summ["n_classes"] == 5 and not run["scenarios"]["balanced"]["0"]["multi_label"]
    # the report: micro-F1 curves and a multi-label table beside the single-label scenario
    page = (out / "report.html").read_text()
    assert "Multi-label scenarios" in page and "multilabel (micro-F1)" in page and "final subset accuracy" in page
    assert "Claim 3." in page
    res = CliRunner().invoke(app, ["benchmark", "table", str(out)])
    assert res.exit_code == 0 and "AUBC micro-F1 [95 % CI]" in res.output and "final accuracy [95 % CI]" in res.output
    # resuming a finished run recomputes nothing
    files = {p.name: p.stat().st_mtime_ns for p in (out / "cells").glob("*.json")}
    res = CliRunner().invoke(app, SMOKE + ["--out", str(out), "--no-report"])
    assert res.exit_code == 0, res.output
    assert {p.name: p.stat().st_mtime_ns for p in (out / "cells").glob("*.json")} == files


@pytest.mark.parametrize("strategy", ["bmmal", "missing_aware", "reducible_margin(quota=0)"])
def test_strategies_without_a_multi_label_form_are_refused_before_anything_runs(tmp_path, strategy):
    out = tmp_path / "r"
    res = CliRunner().invoke(app, ["benchmark", "run", "--suite", "smoke", "--scenarios", "multilabel+missing_mnar_30",
                                   "--strategies", f"random,{strategy}", "--out", str(out), "--no-progress"])
    lines = res.output.strip().splitlines()
    assert res.exit_code == 2 and len(lines) == 1, res.output
    assert f"'{strategy}'" in lines[0] and "'multilabel+missing_mnar_30'" in lines[0] and "margin" in lines[0]
    assert not out.exists()
    cfg = BenchmarkConfig(scenarios=("balanced", "multilabel"), strategies=("random", strategy))
    with pytest.raises(DataError, match="no multi-label form"):
        run_benchmark(cfg, out, progress=False)
    assert not out.exists()
