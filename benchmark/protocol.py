"""One benchmark cell: a (scenario, strategy, seed) active-learning run, round by round.

Why it is built this way (the evaluation pitfalls of active learning, Lueth et al. 2023):
- every strategy starts from the *same* initial labelled set and the *same* round-0 model: the set
  is drawn from (scenario, seed) only, and the round-0 model is trained once, saved, and loaded by
  every strategy (a loaded model is used even right after training, so a cache hit and a cache miss
  give identical numbers);
- every seed in a cell is derived from (scenario, seed, round, purpose), never from which strategy
  runs or in which order, so cells can run in any order, in any process, on any machine;
- the training recipe is fixed per scenario and identical for every strategy; it can be chosen on
  validation data (never the test set) once per scenario with :func:`select_recipe`;
- each round is evaluated on the held-out test set with the modality diagnostics
  (:func:`backend.diagnostics.diagnose`), so reliance on one modality is measured, not guessed;
  multi-label scenarios (label sets) also record ``micro_f1`` and ``subset_accuracy``, and their
  ``accuracy`` is the subset accuracy (:mod:`benchmark.scores`).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from backend.data import DataError, MultimodalDataset, Pool
from backend.diagnostics import diagnose
from backend.models.fusion import FusionConfig
from backend.models.trainer import TrainConfig, TrainedFusionModel, train_model
from backend.runtime import torch_threads
from backend.strategies import QueryStrategy, StrategySpec
from benchmark.anchor import ANCHOR_COLUMNS, LinearProbeAnchor
from benchmark.oracle import SimulatedOracle
from benchmark.scenarios import Scenario, is_real, make_scenario
from benchmark.scores import HEADLINE, label_scores, predicted_labels
from benchmark.suites import REFERENCE_STRATEGY, BenchmarkConfig

BASE_COLUMNS = ["dataset", "strategy", "seed", "round", "n_labeled", "cost", "accuracy", "macro_f1",
                "query_seconds", "train_seconds"]
TIMING_COLUMNS = ["query_seconds", "train_seconds"]
MULTI_LABEL_COLUMNS = ["micro_f1", "subset_accuracy"]  # after macro_f1, in rows of multi-label scenarios


def derive_seed(*parts: Any) -> int:
    """A 31-bit seed from a stable hash of ``parts`` (never Python's salted ``hash``)."""
    digest = hashlib.sha256(json.dumps([str(p) for p in parts]).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def result_columns(modalities: list[str], anchor: bool = False, multi_label: bool = False) -> list[str]:
    """The tidy results columns for a scenario with these modalities, in order (``anchor``: a real-data
    scenario with feature vectors, which also records the linear-probe anchor's scores; ``multi_label``:
    label sets, which add :data:`MULTI_LABEL_COLUMNS` and the anchor's micro-F1)."""
    cols = list(BASE_COLUMNS)
    if multi_label:
        at = cols.index("macro_f1") + 1
        cols[at:at] = MULTI_LABEL_COLUMNS
    if anchor:
        cols += [ANCHOR_COLUMNS["accuracy"]] + ([ANCHOR_COLUMNS["micro_f1"]] if multi_label else [])
    for prefix in ("contribution", "unimodal_acc", "representation_gap"):
        cols += [f"{prefix}:{m}" for m in modalities]
    return cols + ["reliance_gap"]


_SCENARIO_MEMO: dict[str, Scenario] = {}


def scenario_key(config: BenchmarkConfig, name: str, seed: int) -> str:
    """What identifies a built scenario: its name, seed and parameters (the memo's key)."""
    return json.dumps([name, seed, config.scenario_params], sort_keys=True, default=str)


def remember_scenario(config: BenchmarkConfig, name: str, seed: int, scenario: Scenario) -> None:
    """Put a scenario built elsewhere (an RQ driver's copy) into this process's memo."""
    if len(_SCENARIO_MEMO) > 32:
        _SCENARIO_MEMO.clear()
    _SCENARIO_MEMO[scenario_key(config, name, seed)] = scenario


def has_scenario(config: BenchmarkConfig, name: str, seed: int) -> bool:
    """Whether this process already holds the built scenario."""
    return scenario_key(config, name, seed) in _SCENARIO_MEMO


def build_scenario(config: BenchmarkConfig, name: str, seed: int) -> Scenario:
    """The scenario of a cell (memoised in this process only; identical when rebuilt elsewhere)."""
    key = scenario_key(config, name, seed)
    sc = _SCENARIO_MEMO.get(key)
    if sc is None:
        sc = make_scenario(name, seed, **config.scenario_params)
        remember_scenario(config, name, seed, sc)
    return sc


def apply_recipe(fusion: FusionConfig, train: TrainConfig, overrides: Mapping[str, Any] | None) -> tuple[FusionConfig, TrainConfig]:
    """Apply ``{"train": {...}, "fusion": {...}}`` overrides, naming any unknown field."""
    if not overrides:
        return fusion, train
    unknown = set(overrides) - {"train", "fusion"}
    if unknown:
        raise DataError(f"recipe overrides may only have 'train' and 'fusion' keys, got {sorted(unknown)}")
    try:
        fusion = replace(fusion, **dict(overrides.get("fusion") or {}))
        train = replace(train, **dict(overrides.get("train") or {}))
    except TypeError as e:
        raise DataError(f"bad recipe override {dict(overrides)}: {e}") from None
    return fusion, train


def resolve_recipe(config: BenchmarkConfig, scenario: Scenario,
                   chosen: Mapping[str, Any] | None = None) -> tuple[FusionConfig, TrainConfig]:
    """The recipe of a scenario: its default, the config's overrides, then the chosen candidate."""
    fusion, train = apply_recipe(scenario.fusion, scenario.train,
                                 {"train": config.train_overrides, "fusion": config.fusion_overrides})
    return apply_recipe(fusion, train, chosen)


def initial_indices(scenario: Scenario, n_initial: int, seed: int) -> np.ndarray:
    """The initial labelled set: random items drawn from (scenario, seed) only, sorted."""
    n = len(scenario.pool)
    if not 0 < n_initial < n:
        raise DataError(f"n_initial must be in 1..{n - 1} for a pool of {n} items, got {n_initial}")
    rng = np.random.default_rng(derive_seed("initial", scenario.name, seed))
    return np.sort(rng.choice(n, size=n_initial, replace=False)).astype(np.int64)


def make_oracle(config: BenchmarkConfig, scenario: Scenario, seed: int) -> SimulatedOracle:
    """The cell's oracle: answers drawn from (scenario, seed), budget = the config's query budget."""
    return SimulatedOracle(scenario.pool, config.oracle, budget=config.budget,
                           seed=derive_seed("oracle", scenario.name, seed))


def evaluate(model: TrainedFusionModel, scenario: Scenario) -> dict[str, float]:
    """Test-set accuracy, macro F1 (label sets: also micro F1 and subset accuracy, :mod:`benchmark.scores`)
    and modality diagnostics of one model.

    representation_gap:m = what modality m alone can reach on items having it (synthetic: Bayes, ground
    truth; real data: estimated by the same recipe trained on the whole pool with only m, see
    :func:`benchmark.scenarios.estimate_informativeness`) minus the accuracy of the model's own head
    for m on those items. reliance_gap uses the same informativeness (estimated for real data).
    """
    test = scenario.test
    idx = np.arange(len(test))
    pred = predicted_labels(model.predict(test, idx).probs, test.multi_label)
    diag = diagnose(model, test, idx, informativeness=scenario.modality_informativeness(), chance=scenario.chance)
    out: dict[str, float] = label_scores(pred, test.labels, test.n_classes)
    names = scenario.modality_names
    for m in names:
        out[f"contribution:{m}"] = float(diag.contribution[m])
    for m in names:
        out[f"unimodal_acc:{m}"] = float(diag.unimodal_acc[m])
    for m in names:
        out[f"representation_gap:{m}"] = float(scenario.informativeness_present[m] - diag.unimodal_acc[m])
    out["reliance_gap"] = float("nan") if diag.reliance_gap is None else float(diag.reliance_gap)
    return out


def _cache_key(config: BenchmarkConfig, scenario: Scenario, seed: int, fusion: FusionConfig, train: TrainConfig,
               what: str) -> str:
    blob = json.dumps({"what": what, "scenario": scenario.name, "params": config.scenario_params, "seed": seed,
                       "n_initial": config.n_initial, "oracle": config.oracle.to_dict(), "fusion": fusion.to_dict(),
                       "train": train.to_dict(), "torch": torch.__version__}, sort_keys=True, default=str)
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in scenario.name)
    return f"{safe}__s{seed}__{what}__{hashlib.sha256(blob.encode()).hexdigest()[:16]}"


def default_cache_dir() -> Path:
    """Where a worker without the run folder keeps round-0 models (``MMAL_CACHE_DIR`` overrides)."""
    env = os.environ.get("MMAL_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "mmal" / "benchmark"


def round0_model(config: BenchmarkConfig, scenario: Scenario, dataset: MultimodalDataset, labeled: np.ndarray,
                 seed: int, fusion: FusionConfig, train: TrainConfig,
                 cache_dir: Path | None) -> tuple[TrainedFusionModel, float]:
    """The round-0 model of (scenario, seed): trained once, saved, and *loaded* by every strategy.

    Returns (model, seconds spent training; 0.0 on a cache hit).
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = cache_dir / f"{_cache_key(config, scenario, seed, fusion, train, 'round0')}.pt"
    seconds = 0.0
    if not path.exists():
        t0 = time.perf_counter()
        model = train_model(dataset, labeled, fusion=fusion, train=train, seed=derive_seed("train", scenario.name, seed, 0))
        seconds = time.perf_counter() - t0
        model.save(path)  # atomic: a concurrent worker never reads a partial file
    model = TrainedFusionModel.load(path, device=train.device)
    return model, seconds


def _anchor(config: BenchmarkConfig, scenario: Scenario) -> LinearProbeAnchor | None:
    """The linear-probe anchor of a real-data scenario with feature vectors (None otherwise)."""
    if not is_real(scenario.name) or not LinearProbeAnchor.applies(scenario.pool):
        return None
    return LinearProbeAnchor(scenario.pool, scenario.test, threads=config.threads)


def _row(scenario: Scenario, strategy: str, seed: int, rnd: int, n_labeled: int, cost: float, q_s: float, t_s: float,
         metrics: Mapping[str, float], anchor: Mapping[str, float] | None = None) -> dict[str, Any]:
    fixed: dict[str, Any] = {"dataset": scenario.name, "strategy": strategy, "seed": int(seed), "round": int(rnd),
                             "n_labeled": int(n_labeled), "cost": float(cost), "query_seconds": float(q_s),
                             "train_seconds": float(t_s)}
    values = {**metrics, **(anchor or {})}
    cols = result_columns(scenario.modality_names, anchor is not None, scenario.pool.multi_label)
    return {c: fixed[c] if c in fixed else float(values[c]) for c in cols}


def build_strategy(strategy: str) -> QueryStrategy:
    """A cell's strategy object from its name or spec (``name(key=value, ...)``, :class:`StrategySpec`)."""
    return StrategySpec.parse(strategy).build()


def run_cell(config: BenchmarkConfig, scenario_name: str, strategy: str, seed: int, *,
             recipe: Mapping[str, Any] | None = None, cache_dir: str | Path | None = None,
             make_strategy: Callable[[str], QueryStrategy] = build_strategy) -> list[dict[str, Any]]:
    """Run one (scenario, strategy, seed) cell and return one row per round (round 0 = initial model).

    ``strategy == "full_pool"`` gives the upper reference instead: one row for the same recipe
    trained on the whole pool (with the oracle's answers). ``recipe``: the chosen candidate's overrides.
    ``make_strategy``: name -> strategy object (default: the registered strategy of that spec; the studies
    pass their own, for variants that are not product strategies).
    Real-data scenarios with feature vectors also record ``anchor_acc`` (label sets: and ``anchor_micro_f1``):
    the linear-probe anchor (:mod:`benchmark.anchor`) fitted on the same labelled items with the same answers.
    """
    if scenario_name not in config.scenarios:
        raise DataError(f"scenario '{scenario_name}' is not in this run's scenarios {list(config.scenarios)}")
    if strategy != REFERENCE_STRATEGY and strategy not in config.strategies:
        raise DataError(f"strategy '{strategy}' is not in this run's strategies {list(config.strategies)}")
    with torch_threads(config.threads):
        sc = build_scenario(config, scenario_name, seed)
        fusion, train = resolve_recipe(config, sc, recipe)
        oracle = make_oracle(config, sc, seed)
        ds = sc.pool.with_masks({})  # a private copy whose labels this cell fills in
        anchor = _anchor(config, sc)

        def probe(rows: np.ndarray) -> dict[str, float] | None:
            return None if anchor is None else anchor.scores(rows, ds.labels[rows])

        if strategy == REFERENCE_STRATEGY:
            every = np.arange(len(ds))
            ds.labels[:] = oracle.label(every, charge=False)
            t0 = time.perf_counter()
            model = train_model(ds, every, fusion=fusion, train=train, seed=derive_seed("train", sc.name, seed, "full"))
            t_s = time.perf_counter() - t0
            return [_row(sc, strategy, seed, 0, len(ds), oracle.cost(every), 0.0, t_s, evaluate(model, sc),
                         probe(every))]

        labeled = initial_indices(sc, config.n_initial, seed)
        ds.labels[labeled] = oracle.label(labeled, charge=False)
        cost = oracle.cost(labeled)
        pool = Pool.from_labeled(len(ds), labeled)
        model, t_s = round0_model(config, sc, ds, labeled, seed, fusion, train, Path(cache_dir) if cache_dir else None)
        rows = [_row(sc, strategy, seed, 0, pool.labeled.size, cost, 0.0, t_s, evaluate(model, sc), probe(pool.labeled))]
        strat = make_strategy(strategy)
        rnd = 0
        while True:
            if config.rounds is not None and rnd >= config.rounds:
                break
            if pool.unlabeled.size == 0:
                break
            if oracle.remaining < float(oracle.item_costs[pool.unlabeled].min()) - 1e-9:
                break
            rnd += 1
            n = min(config.batch_size, int(pool.unlabeled.size))
            t0 = time.perf_counter()
            picked = strat.query(model, ds, pool, n, seed=derive_seed("query", sc.name, seed, rnd)).indices
            q_s = time.perf_counter() - t0
            picked = oracle.affordable(picked)
            if picked.size == 0:
                break
            ds.labels[picked] = oracle.label(picked)
            cost += oracle.cost(picked)
            pool = pool.add(picked)
            t0 = time.perf_counter()
            model = train_model(ds, pool.labeled, fusion=fusion, train=train,
                                seed=derive_seed("train", sc.name, seed, rnd), init=model)
            t_s = time.perf_counter() - t0
            rows.append(_row(sc, strategy, seed, rnd, pool.labeled.size, cost, q_s, t_s, evaluate(model, sc),
                             probe(pool.labeled)))
        return rows


def select_recipe(config: BenchmarkConfig, scenario_name: str) -> dict[str, Any]:
    """Choose a scenario's recipe among ``config.recipe_candidates`` by *validation* accuracy (label sets:
    micro-F1, the metric their curves use).

    Trained on ``tune_size`` randomly labelled pool items of the first seed (a mid-budget labelled
    set, strategy-independent), scored on the scenario's validation set. Returns
    ``{"chosen": index, "overrides": {...}, "scores": [val score per candidate], "n_labeled": k}``.
    """
    seed = config.seeds[0]
    with torch_threads(config.threads):
        sc = build_scenario(config, scenario_name, seed)
        if not config.recipe_candidates:
            return {"chosen": None, "overrides": {}, "scores": [], "n_labeled": 0}
        n = len(sc.pool)
        if config.tune_size is not None:
            k = int(config.tune_size)
        else:
            spend = config.budget if config.budget is not None else (config.rounds or 0) * config.batch_size
            k = int(config.n_initial + spend // 2)
        k = max(2, min(k, n))
        rng = np.random.default_rng(derive_seed("tune", sc.name, seed))
        idx = np.sort(rng.choice(n, size=k, replace=False))
        ds = sc.pool.with_masks({})
        oracle = make_oracle(config, sc, seed)
        ds.labels[idx] = oracle.label(idx, charge=False)
        scores = []
        for i, cand in enumerate(config.recipe_candidates):
            fusion, train = resolve_recipe(config, sc, cand)
            model = train_model(ds, idx, fusion=fusion, train=train, seed=derive_seed("tune", sc.name, seed, i))
            pred = predicted_labels(model.predict(sc.val, np.arange(len(sc.val))).probs, sc.val.multi_label)
            scores.append(label_scores(pred, sc.val.labels, sc.val.n_classes)[HEADLINE[sc.val.multi_label]])
        best = int(np.argmax(scores))  # first best on ties: deterministic
        return {"chosen": best, "overrides": dict(config.recipe_candidates[best]), "scores": scores, "n_labeled": k}
