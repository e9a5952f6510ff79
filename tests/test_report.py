"""Metrics on hand-made results with known answers, and the smoke suite end to end through the CLI
(run, results, run.json, report with embedded images, PNGs and the three claims)."""

from __future__ import annotations

import base64
import json
import re
import time

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from typer.testing import CliRunner

from benchmark import metrics as M
from benchmark.cli import app


def _frame(curves: dict[str, list[list[float]]], dataset: str = "d", shares: dict[str, float] | None = None,
           gaps: dict[str, tuple[float, float]] | None = None) -> pd.DataFrame:
    """Results rows: curves[strategy][seed] = accuracy per round (cost = 10 * (round + 1))."""
    rows = []
    for st, per_seed in curves.items():
        for seed, accs in enumerate(per_seed):
            for r, acc in enumerate(accs):
                sa = (shares or {}).get(st, 0.5)
                ga, gb = (gaps or {}).get(st, (0.1, 0.1))
                rows.append({"dataset": dataset, "strategy": st, "seed": seed, "round": r, "n_labeled": 10 * (r + 1),
                             "cost": 10.0 * (r + 1), "accuracy": acc, "macro_f1": acc, "query_seconds": 0.0,
                             "train_seconds": 0.0, "contribution:a": sa, "contribution:b": 1 - sa,
                             "unimodal_acc:a": 0.5, "unimodal_acc:b": 0.5, "representation_gap:a": ga,
                             "representation_gap:b": gb, "reliance_gap": abs(sa - 0.5)})
    return pd.DataFrame(rows)


def test_aubc_normalised_trapezoid_and_hold_last_value():
    df = _frame({"flat": [[0.5, 0.5, 0.5]], "ramp": [[0.0, 0.5, 1.0]], "short": [[0.2, 0.4]]})
    t = M.aubc_table(df).set_index("strategy")
    assert t.loc["flat", "aubc"] == pytest.approx(0.5)
    assert t.loc["ramp", "aubc"] == pytest.approx(0.5)
    # stops at cost 20 of 30: held at 0.4 for the last segment -> (0.3 * 10 + 0.4 * 10) / 20
    assert t.loc["short", "aubc"] == pytest.approx(0.35)
    assert t.loc["ramp", "final_accuracy"] == 1.0


def test_intervals():
    v = [0.6, 0.7, 0.65, 0.72, 0.68]
    m, lo, hi = M.t_interval(v)
    ref = stats.t.interval(0.95, len(v) - 1, loc=np.mean(v), scale=stats.sem(v))
    assert m == pytest.approx(np.mean(v)) and (lo, hi) == pytest.approx(ref)
    assert np.isnan(M.t_interval([0.5])[1])
    bm, blo, bhi = M.bootstrap_interval(v)
    assert blo < bm < bhi and M.bootstrap_interval(v) == (bm, blo, bhi)


def test_accuracy_intervals_stay_inside_0_1():
    """The full pool on `difficulty` once read [0.555, 1.053]: every accuracy band is now cut at [0, 1]
    (the t interval intersected with the range the mean can take; its coverage is unchanged)."""
    v = [1.0, 1.0, 0.55, 1.0, 0.98]
    m, lo, hi = M.t_interval(v)
    assert hi > 1.0  # what the plain t interval claims
    bm, blo, bhi = M.bounded_interval(v)
    assert (bm, blo, bhi) == (m, lo, 1.0) and M.bounded_interval([0.0, 0.0, 0.3])[1] == 0.0
    assert M.bounded_interval(v, bounds=None) == (m, lo, hi) and np.isnan(M.bounded_interval([0.5])[1])
    rows = [{"dataset": "d", "strategy": s, "seed": k, "round": r, "cost": 10.0 * (r + 1), "accuracy": a}
            for s in ("random", "full_pool") for k, a in enumerate(v) for r in range(2)]
    df = pd.DataFrame(rows)
    for t in (M.learning_curves(df), M.reference_lines(df), M.summarize(M.aubc_table(df), "aubc"),
              M.summarize(M.aubc_table(df), "final_accuracy")):
        assert (t["high"] <= 1.0).all() and (t["low"] >= 0.0).all() and (t["high"] == 1.0).all()


def test_penalty_matrix_counts_significant_wins_per_budget_point():
    rng = np.random.default_rng(0)
    base = [list(0.5 + 0.01 * rng.standard_normal(4)) for _ in range(5)]
    better = [[a + 0.2 + 0.01 * rng.standard_normal() for a in s] for s in base]
    same = [[a + 0.001 * rng.standard_normal() for a in s] for s in base]
    df = pd.concat([_frame({"A": better, "B": base, "C": same}, "d1"), _frame({"A": better, "B": base, "C": same}, "d2")])
    p = M.penalty_matrix(df)
    assert p.loc["A", "B"] == pytest.approx(1.0) and p.loc["A", "C"] == pytest.approx(1.0)
    assert p.loc["B", "A"] == 0 and p.loc["C", "A"] == 0
    assert p.loc["B", "C"] + p.loc["C", "B"] <= 2 / 3  # noise rarely wins at all three budget points
    assert (np.diag(p.to_numpy()) == 0).all() and p.to_numpy().max() <= 1.0


def test_claims_follow_their_rules_on_known_data():
    accs = {"random": [[0.5, 0.6, 0.7]] * 2, "entropy": [[0.5, 0.62, 0.72]] * 2, "bmmal": [[0.5, 0.61, 0.69]] * 2}
    shares = {"random": 0.8, "entropy": 0.8, "bmmal": 0.8}
    df = pd.concat([_frame(accs, "x", shares, {s: (0.05, 0.4) for s in accs}),
                    _frame(accs, "y", shares, {s: (0.05, 0.4) for s in accs})])
    c1 = M.claim_reliance(df)
    assert c1["verdict"] is True and c1["n_by_share"] == 2 and c1["n_by_representation"] == 2
    assert c1["per_scenario"][0]["late_dominant"] == "a" and c1["per_scenario"][0]["late_neglected"] == "b"
    c2 = M.claim_strategies(df)
    assert c2["verdict"] is True and len(c2["flagged"]) == 2
    fam = {"random": "baseline", "entropy": "unimodal", "bmmal": "multimodal"}
    c3 = M.claim_multimodal(df, fam)
    assert c3["verdict"] is True and c3["per_strategy"][0]["scenarios_beating_best_unimodal"] == 0
    # a strategy that balances the model fixes it; a multimodal one that wins everywhere refutes claim 3
    shares2 = {**shares, "bmmal": 0.5}
    accs2 = {**accs, "bmmal": [[0.5, 0.7, 0.8]] * 2}
    df2 = pd.concat([_frame(accs2, d, shares2, {"random": (0.05, 0.4), "entropy": (0.05, 0.4), "bmmal": (0.1, 0.12)})
                     for d in ("x", "y")])
    assert M.claim_strategies(df2)["verdict"] is False
    assert M.claim_multimodal(df2, fam)["verdict"] is False
    # balanced reliance everywhere: claim 1 false, claim 2 has nothing to fix
    df3 = _frame(accs, "z")
    assert M.claim_reliance(df3)["verdict"] is False
    assert M.claim_strategies(df3)["verdict"] is None
    assert M.claim_multimodal(df3, {"random": "baseline", "entropy": "unimodal"})["verdict"] is None


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke")
    t0 = time.perf_counter()
    res = CliRunner().invoke(app, ["run", "--suite", "smoke", "--out", str(out), "--no-progress"])
    seconds = time.perf_counter() - t0
    assert res.exit_code == 0, res.output + repr(res.exception)
    return out, seconds


def test_smoke_suite_end_to_end(smoke_run):
    out, seconds = smoke_run
    print(f"smoke suite incl. report: {seconds:.1f} s")  # speed is reported, not asserted
    df = pd.read_csv(out / "results.csv")
    expected = ["dataset", "strategy", "seed", "round", "n_labeled", "cost", "accuracy", "macro_f1", "query_seconds",
                "train_seconds", "contribution:a", "contribution:b", "unimodal_acc:a", "unimodal_acc:b",
                "representation_gap:a", "representation_gap:b", "reliance_gap"]
    assert list(df.columns) == expected
    assert set(df["dataset"]) == {"balanced", "difficulty"}
    assert set(df["strategy"]) == {"random", "margin", "bmmal", "full_pool"}
    assert not df.duplicated(["dataset", "strategy", "seed", "round"]).any()
    assert np.allclose(df["contribution:a"] + df["contribution:b"], 1.0)
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "complete" and run["config"]["suite"] == "smoke"
    assert run["strategy_families"] == {"random": "baseline", "margin": "unimodal", "bmmal": "multimodal"}
    for name in ("learning_curves.png", "penalty_matrix.png", "modalities_balanced.png", "modalities_difficulty.png"):
        data = (out / "figures" / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
    page = (out / "report.html").read_text()
    imgs = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page)
    assert len(imgs) >= 4 and all(base64.b64decode(i)[:4] == b"\x89PNG" for i in imgs)
    assert "http://" not in page and "https://" not in page and "<script" not in page  # self-contained
    for claim in ("Claim 1.", "Claim 2.", "Claim 3.", "full pool (upper reference)", "Training recipe", "AUBC"):
        assert claim in page
    assert len(re.findall(r"class='v (?:t|f|na)'>(TRUE|FALSE|NOT TESTABLE)<", page)) >= 3
    findings = json.loads((out / "findings.json").read_text())
    assert findings["claim1"]["verdict"] in (True, False)
    assert findings["claim3"]["verdict"] in (True, False)  # smoke has a multimodal and a unimodal strategy


def test_results_table_bands_are_inside_0_1(smoke_run):
    from benchmark.cli import results_table

    out, _ = smoke_run
    rows = results_table(out)
    assert all(0.0 <= r["final_acc_low"] <= r["final_acc"] <= r["final_acc_high"] <= 1.0 for r in rows)
    assert all(0.0 <= r["aubc_low"] <= r["aubc_high"] <= 1.0 for r in rows if r["strategy"] != "full_pool")
    res = CliRunner().invoke(app, ["table", str(out)])
    assert res.exit_code == 0 and "final accuracy [95 % CI]" in res.output
    assert re.search(r"\| random \| 0\.\d{3} \[0\.\d{3}, [01]\.\d{3}\] \|", res.output), res.output


def test_report_command_rewrites_report_and_rejects_empty_folder(smoke_run, tmp_path):
    out, _ = smoke_run
    (out / "report.html").unlink()
    res = CliRunner().invoke(app, ["report", str(out)])
    assert res.exit_code == 0 and (out / "report.html").exists()
    res = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert res.exit_code == 2 and "results.csv" in res.output and len(res.output.strip().splitlines()) == 1


def test_cli_flags_change_the_config_and_list_scenarios(tmp_path):
    res = CliRunner().invoke(app, ["run", "--suite", "smoke", "--out", str(tmp_path), "--scenarios", "synergy",
                                   "--strategies", "random,entropy", "--seeds", "0-1", "--rounds", "1",
                                   "--batch-size", "10", "--train", "epochs=7", "--train", "modality_balance=mmpareto",
                                   "--no-progress", "--no-report"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    cfg = json.loads((tmp_path / "run.json").read_text())["config"]
    assert cfg["train_overrides"] == {"epochs": 7, "patience": 5, "modality_balance": "mmpareto"}  # smoke's patience kept
    df = pd.read_csv(tmp_path / "results.csv")
    assert set(df["dataset"]) == {"synergy"} and set(df["seed"]) == {0, 1}
    assert df[df["strategy"] == "entropy"]["n_labeled"].tolist() == [30, 40, 30, 40]
    res = CliRunner().invoke(app, ["scenarios"])
    assert res.exit_code == 0 and "missing_mnar_30" in res.output


@pytest.mark.parametrize("flag, named", [("epoch=5", "epoch: not a training setting"), ("epochs", "KEY=VALUE"),
                                         ("modality_balance=pareto", "modality_balance must be one of"),
                                         ("ogm_alpha=-1", "ogm_alpha must be >= 0")])
def test_bad_train_setting_is_named_before_anything_runs(tmp_path, flag, named):
    res = CliRunner().invoke(app, ["run", "--suite", "smoke", "--out", str(tmp_path / "r"), "--train", flag,
                                   "--no-progress", "--no-report"])
    text = " ".join(res.output.replace("│", " ").split())  # rich may wrap the message in a box
    assert res.exit_code == 2 and named in text and not (tmp_path / "r").exists()


def test_matrix_table_means_best_in_bold_and_ours_against_the_best_baseline(tmp_path):
    """`mmal benchmark table --format matrix` (the README's table): mean AUBC per scenario x strategy and
    the paired difference of our best modality-aware strategy against the best baseline, by hand."""
    curves = {"random": [[0.5, 0.5], [0.5, 0.5], [0.5, 0.5]],
              "badge": [[0.6, 0.6], [0.7, 0.7], [0.5, 0.5]],
              "reducible_margin": [[0.7, 0.7], [0.7, 0.7], [0.6, 0.6]],
              "missing_aware": [[0.2, 0.2], [0.2, 0.2], [0.2, 0.2]]}
    _frame(curves).to_csv(tmp_path / "results.csv", index=False)
    out = CliRunner().invoke(app, ["table", str(tmp_path), "--format", "matrix"])
    assert out.exit_code == 0, out.output
    head, rule, row = out.output.strip().splitlines()
    assert head.split(" | ")[2:6] == ["random", "badge", "reducible_margin (ours)", "missing_aware (ours)"]
    cells = [c.strip() for c in row.strip("| ").split(" | ")]
    assert cells[:6] == ["d", "3", "50.00", "60.00", "**66.67**", "20.00"]
    diffs = np.array([0.1, 0.0, 0.1]) * 100  # reducible_margin - badge per seed
    m, lo, hi = M.t_interval(diffs)
    assert cells[6] == f"reducible_margin − badge: {m:+.2f} [{lo:+.2f}, {hi:+.2f}], 2/3"
    # a run kept as results.parquet alone (results/paper in the repository) reads the same
    kept = tmp_path / "kept"
    kept.mkdir()
    pd.read_csv(tmp_path / "results.csv").to_parquet(kept / "results.parquet", index=False)
    assert CliRunner().invoke(app, ["table", str(kept), "--format", "matrix"]).output == out.output
