"""Real datasets in the benchmark: emoji and mfeat replayed with the simulated oracle, with injected
missing modalities, through the same scenario registry, runner, results table and CLI as the
synthetic scenarios. Small pools and one round keep this fast; every cache goes to a temp folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from backend.data import UNLABELED, DataError
from benchmark.cli import real_scenarios
from benchmark.protocol import result_columns
from benchmark.runner import run_benchmark
from benchmark.scenarios import _load_real, is_real, list_scenarios, make_scenario, parse_name
from benchmark.suites import BenchmarkConfig
from mmal.cli import app
from tests.netguard import no_network  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("no_network")

SMALL_MFEAT = {"n_items": 600, "val_size": 100, "test_size": 300}


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    """A private MMAL_CACHE_DIR (features and informativeness estimates) for one test."""
    root = tmp_path / "mmal-cache"
    monkeypatch.setenv("MMAL_CACHE_DIR", str(root))
    return root


def _files(root: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def test_emoji_end_to_end_with_simple_featurizers(tmp_path, cache):
    cfg = BenchmarkConfig(suite="test", scenarios=("emoji",), strategies=("random",), seeds=(0,),
                          scenario_params={"n_items": 150, "val_size": 50, "test_size": 150, "featurizers": "simple"},
                          n_initial=20, batch_size=10, rounds=1, train_overrides={"epochs": 4, "patience": 2},
                          reference=False)
    df = run_benchmark(cfg, tmp_path / "run", progress=False)
    assert list(df.columns) == result_columns(["image", "text"])
    assert df["dataset"].tolist() == ["emoji", "emoji"] and df["n_labeled"].tolist() == [20, 30]
    assert np.allclose(df["contribution:image"] + df["contribution:text"], 1.0)
    assert df["reliance_gap"].between(0, 1).all() and df["accuracy"].between(0, 1).all()
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    summ = run["scenarios"]["emoji"]["0"]
    assert summ["informativeness_kind"] == "estimated"
    assert set(summ["informativeness"]) == {"image", "text", "chance"}
    assert summ["n_pool"] == 150 and summ["n_val"] == 50 and summ["n_test"] == 150
    assert summ["chance"] == pytest.approx(386 / 1906)  # People & Body, the largest category
    # the representation gap is measured against the estimate: full-pool unimodal accuracy minus own head
    for m in ("image", "text"):
        assert 0 <= summ["informativeness"][m] <= 1
        assert df[f"representation_gap:{m}"].to_numpy() == pytest.approx(
            summ["informativeness_present"][m] - df[f"unimodal_acc:{m}"].to_numpy())
    # a second build encodes and trains nothing: every cache file is read, none written
    before = _files(cache)
    assert any("real-informativeness" in p for p in before) and any("/features/" in p for p in before)
    _load_real.cache_clear()
    again = make_scenario("emoji", 0, **cfg.scenario_params)
    assert _files(cache) == before
    assert again.informativeness == summ["informativeness"]
    # the report says what the reference lines are: estimates from full-pool models, not a Bayes optimum
    from benchmark.report import build_report

    page = build_report(tmp_path / "run").read_text()
    assert "estimated optimum (full-pool model)" in page and "full-pool model of the modality alone" in page
    assert "Bayes" not in page


def test_emoji_tags_multi_label_end_to_end(tmp_path, cache):
    name = "emoji_tags+missing_mnar_30"
    cfg = BenchmarkConfig(suite="test", scenarios=(name,), strategies=("random", "margin"), seeds=(0,),
                          scenario_params={"n_items": 150, "val_size": 50, "test_size": 150, "featurizers": "simple"},
                          n_initial=20, batch_size=10, rounds=1, train_overrides={"epochs": 4, "patience": 2},
                          reference=False)
    df = run_benchmark(cfg, tmp_path / "run", progress=False)
    assert list(df.columns) == result_columns(["image", "text"], multi_label=True)  # pixels/tokens: no anchor
    assert df["n_labeled"].tolist() == [20, 30, 20, 30] and (df["accuracy"] == df["subset_accuracy"]).all()
    assert df[["micro_f1", "macro_f1"]].stack().between(0, 1).all()
    summ = json.loads((tmp_path / "run" / "run.json").read_text())["scenarios"][name]["0"]
    assert summ["multi_label"] and summ["n_classes"] == 32 and summ["informativeness_kind"] == "estimated"
    assert summ["chance"] == pytest.approx(259 / 1906)  # the most frequent whole set: {country, flag/flags}
    assert set(summ["informativeness"]) == {"image", "text", "chance"}
    assert all(0 <= summ["informativeness"][m] <= 1 for m in ("image", "text"))
    assert 0.5 < summ["presence_rate"]["image"] < 1 and 0.5 < summ["presence_rate"]["text"] < 1
    sc = make_scenario(name, 0, **cfg.scenario_params)
    assert sc.pool.multi_label and (sc.pool.labels == UNLABELED).all() and sc.pool.true_labels.sum(axis=1).min() >= 1
    assert sc.pool.presence_matrix().any(axis=1).all()


def test_mfeat_missing_mcar_30_through_the_cli(tmp_path, cache):
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["benchmark", "run", "--suite", "smoke", "--dataset", "mfeat", "--missing-rate", "0.3",
                                   "--strategies", "random", "--seeds", "0", "--rounds", "1", "--initial", "20",
                                   "--batch-size", "10", "--items", "300", "--out", str(out), "--no-report",
                                   "--no-progress"])
    assert res.exit_code == 0, res.output
    df = pd.read_csv(out / "results.csv")
    assert set(df["dataset"]) == {"mfeat+missing_mcar_30"}
    assert set(df["strategy"]) == {"random", "full_pool"}
    assert list(df.columns) == result_columns(["fou", "kar"], anchor=True)
    assert df["anchor_acc"].between(0.2, 1).all()  # the linear probe on the same labels (and on the whole pool)
    full = df[df["strategy"] == "full_pool"]
    assert float(full["anchor_acc"].iloc[0]) > float(df[df["strategy"] == "random"]["anchor_acc"].max()) - 0.05
    run = json.loads((out / "run.json").read_text())
    summ = run["scenarios"]["mfeat+missing_mcar_30"]["0"]
    assert summ["modalities"] == ["fou", "kar"] and summ["informativeness_kind"] == "estimated"
    assert set(summ["informativeness"]) == {"fou", "kar", "chance"} and summ["chance"] == pytest.approx(0.1)
    assert summ["params"]["missing"] == "mcar" and summ["params"]["missing_rate"] == pytest.approx(0.3)
    for m in ("fou", "kar"):
        assert summ["presence_rate"][m] == pytest.approx(0.7, abs=0.09)  # 300 items: sd of the rate about 0.03
    # the per-strategy table (final accuracy, AUBC, contributions) that docs/real_data_results.md shows
    res = CliRunner().invoke(app, ["benchmark", "table", str(out)])
    assert res.exit_code == 0, res.output
    assert "### mfeat+missing_mcar_30" in res.output and "estimated" in res.output
    assert "| random |" in res.output and "| full pool (reference) |" in res.output and "contribution kar" in res.output
    from benchmark.report import build_report

    assert "linear probe on random's labels (anchor)" in build_report(out).read_text()


def test_missing_modalities_injected_at_the_rate(cache):
    clean = make_scenario("mfeat", 0, **SMALL_MFEAT)
    mcar = make_scenario("mfeat+missing_mcar_30", 0, **SMALL_MFEAT)
    assert all(clean.pool.masks[m].all() for m in clean.modality_names)
    for ds in (mcar.pool, mcar.val, mcar.test):
        pres = ds.presence_matrix()
        assert pres.any(axis=1).all()  # every item keeps at least one modality
        for j, m in enumerate(ds.modality_names):
            assert 1 - pres[:, j].mean() == pytest.approx(0.3, abs=0.1 if len(ds) < 200 else 0.06)
            assert not ds.modalities[m][~pres[:, j]].any()  # absent rows are zero-filled with their mask
    # informativeness is estimated per modality, on items having it and on all items
    for m in mcar.modality_names:
        assert 0.1 < mcar.informativeness_present[m] <= 1 and 0 < mcar.informativeness[m] <= 1
    # MNAR: the rate depends on the class (even classes lose the first view more often)
    mnar = make_scenario("mfeat+missing_mnar_50", 0, **{**SMALL_MFEAT, "n_items": None})
    y, absent = mnar.pool.true_labels, ~mnar.pool.masks["fou"]
    assert absent[y % 2 == 0].mean() > 0.7 and absent[y % 2 == 1].mean() < 0.3


def test_split_is_stratified_fixed_per_seed_and_shared_by_variants(cache):
    a = make_scenario("mfeat", 1, **SMALL_MFEAT)
    b = make_scenario("mfeat+missing_mnar_30", 1, **SMALL_MFEAT)
    c = make_scenario("mfeat", 2, **SMALL_MFEAT)
    assert np.array_equal(a.pool.ids, b.pool.ids) and np.array_equal(a.test.ids, b.test.ids)
    assert not np.array_equal(a.pool.ids, c.pool.ids)
    assert (np.bincount(a.test.labels, minlength=10) == 30).all()  # mfeat: 200 per digit, stratified
    assert (np.bincount(a.pool.true_labels, minlength=10) == 60).all()  # n_items caps the pool, stratified
    assert (a.pool.labels == UNLABELED).all() and (a.test.labels == a.test.true_labels).all()
    assert not set(a.pool.ids) & set(a.test.ids) and not set(a.pool.ids) & set(a.val.ids)
    assert a.informativeness_kind == "estimated" and a.summary()["params"]["views"] == ["fou", "kar"]


def test_names_params_and_cli_helpers(cache):
    assert parse_name("emoji+missing_mnar_30") == ("emoji", {"missing": "mnar", "missing_rate": 0.3})
    assert is_real("mfeat+missing_mcar_10") and not is_real("difficulty+missing_mnar_30")
    assert "emoji" not in list_scenarios() and "mfeat+missing_mnar_30" in list_scenarios(real=True)
    assert real_scenarios(["emoji", "mfeat"], [0, 30], "mnar") == ["emoji", "emoji+missing_mnar_30", "mfeat",
                                                                   "mfeat+missing_mnar_30"]
    assert real_scenarios(["emoji+missing_mcar_10"], [0, 30], "mnar") == ["emoji+missing_mcar_10"]
    with pytest.raises(DataError, match="only missing"):
        make_scenario("emoji+noisy_30", 0)
    with pytest.raises(DataError, match="unknown scenario parameters"):
        make_scenario("mfeat", 0, viewz=("fou", "pix"))
    with pytest.raises(DataError, match="featurizers must be one of"):
        make_scenario("emoji", 0, featurizers="clip")
    with pytest.raises(DataError, match="unknown views"):
        make_scenario("mfeat", 0, views=("fou", "xyz"))
    # synthetic scenarios ignore the real-only parameters (one run can mix both), bit for bit
    small = {"n_items": 100, "n_test": 100, "n_val": 50, "dims": 4, "mc_samples": 2000}
    s1 = make_scenario("balanced", 0, **small)
    s2 = make_scenario("balanced", 0, **small, featurizers="pretrained", views=["fac", "pix"], test_size=10)
    assert np.array_equal(s1.pool.modalities["a"], s2.pool.modalities["a"]) and s1.informativeness == s2.informativeness
    res = CliRunner().invoke(app, ["benchmark", "run", "--dataset", "cifar", "--out", "x"])
    assert res.exit_code != 0 and "not a real dataset" in res.output
    res = CliRunner().invoke(app, ["benchmark", "run", "--scenarios", "balanced", "--missing-rate", "0.3", "--out", "x"])
    assert res.exit_code != 0 and "--dataset" in res.output
