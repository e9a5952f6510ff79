"""Real datasets (``emoji``, ``emoji_tags``, ``mfeat``, a researcher's own file) as benchmark scenarios,
replayed with the same simulated oracle; their informativeness is estimated, not ground truth."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from backend.data import UNLABELED, DataError, MultimodalDataset
from backend.files import write_json_atomic
from backend.models.fusion import FusionConfig
from backend.models.trainer import TrainConfig, train_model
from backend.runtime import torch_threads
from benchmark.scenarios.missingness import _inject_missing, _presence
from benchmark.scenarios.names import REAL_DATASETS, _is_real_base, parse_name
from benchmark.scenarios.scenario import DEFAULT_PARAMS, Scenario, _seed_sequence, default_recipe
from benchmark.scenarios.structures import _BASES
from benchmark.scores import hits, predicted_labels

# parameters only real datasets take (synthetic scenarios ignore them, so one run can mix both)
REAL_PARAMS: dict[str, Any] = {
    # image/text data (emoji, own files): "pretrained" (efficientnet_lite0 + minilm) or "simple" (image_pixels +
    # text_tokens: fast, no weights, but a worse picture: emoji's best full-pool accuracy 0.59 against 0.83)
    "featurizers": "pretrained",
    "views": ("fou", "kar"),  # mfeat: 2..6 of fou fac kar pix zer mor
    "label": "category",  # emoji: "category" (9 classes) or "subcategory" (98)
    "val_size": None,  # None: the dataset's default (REAL_DATASETS)
    "test_size": None,
    "own_data": None,  # own files: {file name: spec from connectors.own_data.describe_own_data}
}
OWN_VAL_FRACTION, OWN_TEST_FRACTION = 0.1, 0.2  # own data without a split column: stratified shares
# synthetic parameters real datasets honour; every other synthetic parameter does not apply to them
_REAL_SHARED = ("n_items", "missing", "missing_rate", "missing_modalities", "mnar_strength")
FEATURIZER_PRESETS = ("simple", "pretrained")


def real_cache_dir() -> Path:
    """Root of the real-data caches: ``$MMAL_CACHE_DIR`` if set, else ``~/.cache/mmal``.

    Features live in ``<root>/features`` (the :class:`~backend.encoders.FeatureCache`), informativeness
    estimates in ``<root>/real-informativeness``: a second run (or another worker) encodes and trains nothing.
    """
    env = os.environ.get("MMAL_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "mmal"


@lru_cache(maxsize=6)
def _load_real(dataset: str, featurizers: str, views: tuple[str, ...], label: str, cache_dir: str) -> MultimodalDataset:
    """The featurized dataset, memoised per process (read-only: callers take subsets, never mutate it)."""
    from connectors.datasets import load_featurized

    params: dict[str, Any] = {"views": views} if dataset == "mfeat" else {"label": label} if dataset == "emoji" else {}
    return load_featurized(dataset, featurizers=featurizers, cache_dir=cache_dir, progress=sys.stderr.isatty(),
                           **params)


@lru_cache(maxsize=6)
def _load_own(spec_json: str, featurizers: str, cache_dir: str) -> MultimodalDataset:
    """An own data file featurized through the content-addressed cache, memoised per process (read-only)."""
    from connectors.datasets import load_featurized
    from connectors.own_data import load_own_data

    raw = load_own_data(json.loads(spec_json))
    return load_featurized(raw, featurizers=featurizers, cache_dir=cache_dir, progress=sys.stderr.isatty())


def _own_spec(base: str, own: Any) -> dict[str, Any]:
    spec = (own or {}).get(base) if isinstance(own, dict) else None
    if spec is None:
        raise DataError(f"scenario {base!r} names a data file, but the own_data parameter describes "
                        f"{sorted(own or {})}; pass the file with `mmal benchmark run --dataset PATH`")
    return spec


def _split_by_column(full: MultimodalDataset,
                     seed: int) -> tuple[MultimodalDataset, MultimodalDataset, MultimodalDataset]:
    """(pool, val, test) from the file's split column; no ``val`` rows: a stratified tenth of ``train``."""
    split_of = full.meta["split_of"]
    which = np.array([split_of[str(i)] for i in full.ids])
    parts = {k: full.subset(np.flatnonzero(which == k)) for k in ("train", "val", "test")}
    for k in ("train", "test"):
        if not len(parts[k]):
            raise DataError(f"{full.meta.get('source', 'own data')}: the split column has no '{k}' rows")
    pool, val, test = parts["train"], parts["val"], parts["test"]
    if not len(val):
        from connectors.datasets import split_dataset

        pool, val, _ = split_dataset(pool, n_val=max(1, round(OWN_VAL_FRACTION * len(pool))), n_test=0, seed=seed)
    pool.labels[:] = UNLABELED
    val.labels = val.true_labels.copy()
    test.labels = test.true_labels.copy()
    return pool, val, test


def _sub_seed(*parts: Any) -> int:
    """A 31-bit seed from a stable hash of ``parts``."""
    return int.from_bytes(hashlib.sha256(json.dumps([str(p) for p in parts]).encode()).digest()[:4], "little") & 0x7FFFFFFF


def _data_digest(*datasets: MultimodalDataset) -> str:
    h = hashlib.sha256()
    for ds in datasets:
        h.update("\x00".join(map(str, ds.ids.tolist())).encode())
        h.update(ds.true_labels.tobytes())
        for k in ds.modality_names:
            h.update(k.encode())
            h.update(np.packbits(ds.masks[k]).tobytes())
    return h.hexdigest()


def estimate_informativeness(name: str, seed: int, pool: MultimodalDataset, test: MultimodalDataset,
                             fusion: FusionConfig, train: TrainConfig,
                             cache_dir: Path | None = None) -> tuple[dict[str, float], dict[str, float]]:
    """What each modality alone can achieve on real data, estimated (no ground truth exists).

    For each modality m, the scenario's own recipe is trained on the *whole* pool with every other
    modality marked absent (the oracle's answers for every item), then scored on the test split with
    the other modalities dropped. Returns (accuracy on every test item, as the synthetic
    ``informativeness``, including what m's presence says; accuracy on test items having m, the
    representation-gap reference); for label sets both are subset accuracies (:mod:`benchmark.scores`).
    Cached on disk by (data, recipe, seed); computed with one torch thread.
    """
    names = pool.modality_names
    blob = json.dumps({"name": name, "seed": int(seed), "data": _data_digest(pool, test),
                       "featurizers": pool.meta.get("featurizers", {}), "fusion": fusion.to_dict(),
                       "train": train.to_dict(), "torch": __import__("torch").__version__}, sort_keys=True, default=str)
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name.replace("+", "--"))
    root = (cache_dir or real_cache_dir()) / "real-informativeness"
    path = root / f"{safe}__s{seed}__{hashlib.sha256(blob.encode()).hexdigest()[:16]}.json"
    if path.is_file():
        try:
            got = json.loads(path.read_text())
            if set(got["informativeness"]) == set(names):
                return got["informativeness"], got["informativeness_present"]
        except (OSError, ValueError, KeyError):
            pass  # a damaged entry is recomputed
    lab = pool.with_masks({})
    lab.labels[:] = lab.true_labels
    every, tidx = np.arange(len(lab)), np.arange(len(test))
    info: dict[str, float] = {}
    present: dict[str, float] = {}
    with torch_threads(1):
        for m in names:
            others = [k for k in names if k != m]
            only = lab.with_masks({k: np.zeros(len(lab), dtype=bool) for k in others})
            model = train_model(only, every, fusion=fusion, train=train, seed=_sub_seed("informativeness", name, seed, m))
            pred = predicted_labels(model.predict(test, tidx, drop=others).probs, test.multi_label)
            hit = hits(pred, test.labels)
            info[m] = float(hit.mean())
            has = test.masks[m]
            present[m] = float(hit[has].mean()) if has.any() else float("nan")
    # atomic: concurrent workers only ever read complete entries
    write_json_atomic(path, {"informativeness": info, "informativeness_present": present, "key": json.loads(blob)},
                      mode=0o644, indent=1)
    return info, present


def _chance(truth: np.ndarray, n_classes: int) -> float:
    """Share of the most frequent class (label sets: the most frequent whole set) among ``truth``."""
    if truth.ndim == 2:
        return float(np.unique(truth, axis=0, return_counts=True)[1].max() / len(truth))
    return float(np.bincount(truth, minlength=n_classes).max() / len(truth))


def _positive_int(key: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise DataError(f"{key} must be a positive integer, got {v!r}")
    return int(v)


def make_real_scenario(name: str, seed: int = 0, *, fusion: FusionConfig | None = None,
                       train: TrainConfig | None = None, **params: Any) -> Scenario:
    """A real dataset as a benchmark scenario: ``emoji``, ``emoji_tags`` (label sets), ``mfeat`` or an own file
    (``mine.jsonl``, described by the ``own_data`` parameter), optionally ``+missing_{mcar,mnar}_<pct>``.

    - Features come through the on-disk feature cache (:func:`real_cache_dir`), so only the first
      build encodes anything; ``featurizers`` is ``"simple"`` (default; fast) or ``"pretrained"``.
    - The pool / val / test split is stratified and fixed per (dataset, seed): ``emoji`` and
      ``emoji+missing_mnar_30`` share it, so only the missingness differs. ``val_size`` / ``test_size``
      set the split (defaults in :data:`REAL_DATASETS`; own files: a tenth and a fifth, or the file's
      ``split`` column when it has one, then ``val_size`` / ``test_size`` do not apply), ``n_items``
      (when given) caps the pool with a stratified subsample; the other synthetic parameters (dims, n_test, noise, ...) do not apply and
      are ignored.
    - Missing modalities are injected into every split exactly as in the synthetic scenarios
      (``missing``, ``missing_rate``, ``missing_modalities``, ``mnar_strength``): each item keeps at
      least one modality; under MNAR the rate depends on the class (label sets: :func:`presence_strata`).
    - ``informativeness`` is *estimated* by :func:`estimate_informativeness` (a full-pool unimodal model
      of the same recipe), not ground truth; ``chance`` is the largest class share of the dataset (label
      sets: the share of the most frequent whole set; both are subset accuracies then).
    """
    base, over = parse_name(name)
    if not _is_real_base(base):
        raise DataError(f"'{name}' is not a real dataset; known: {', '.join(REAL_DATASETS)} or a data file")
    ss = _seed_sequence(name, seed)
    synthetic = set(DEFAULT_PARAMS) | {k for _, d, _ in _BASES.values() for k in d}
    unknown = set(params) - set(REAL_PARAMS) - synthetic
    if unknown:
        raise DataError(f"unknown scenario parameters {sorted(unknown)}; real datasets take "
                        f"{sorted(set(REAL_PARAMS) | set(_REAL_SHARED))}")
    own = _own_spec(base, params.get("own_data")) if base not in REAL_DATASETS else None
    spec = REAL_DATASETS[base] if own is None else {
        "description": f"own data {own['path']} ({own['n_items']} items, {len(own['classes'])} classes; "
                       + ", ".join(f"{c}: {k}" for c, k in own["modalities"].items()) + ")",
        "val_size": None, "test_size": None, "roles": {c: f"{k} column '{c}'" for c, k in own["modalities"].items()}}
    p: dict[str, Any] = {**REAL_PARAMS, **{k: DEFAULT_PARAMS[k] for k in _REAL_SHARED if k != "n_items"},
                         **over, **{k: v for k, v in params.items() if k in REAL_PARAMS or k in _REAL_SHARED}}
    if p["featurizers"] not in FEATURIZER_PRESETS:
        raise DataError(f"featurizers must be one of {FEATURIZER_PRESETS}, got {p['featurizers']!r}")
    if isinstance(p["views"], str) or not isinstance(p["views"], (list, tuple)):
        raise DataError(f"views must be a list of mfeat view names, got {p['views']!r}")
    p["views"] = tuple(str(v) for v in p["views"])
    cap = _positive_int("n_items", p["n_items"]) if p.get("n_items") is not None else None

    cache = real_cache_dir()
    if own is None:
        full = _load_real(base, str(p["featurizers"]), p["views"], str(p["label"]), str(cache / "features"))
    else:
        full = _load_own(json.dumps(own), str(p["featurizers"]), str(cache / "features"))
    names = full.modality_names
    c = full.n_classes
    # the split depends on (dataset, seed) only: every variant of the dataset shares it
    split_seed = _sub_seed("split", base, seed)
    from connectors.datasets import split_dataset

    if own is not None and own.get("split") == "column":
        pool, val, test = _split_by_column(full, split_seed)
        val_size, test_size = len(val), len(test)
    else:
        n_full = len(full)
        dv = spec["val_size"] or max(1, round(OWN_VAL_FRACTION * n_full))
        dt = spec["test_size"] or max(1, round(OWN_TEST_FRACTION * n_full))
        val_size = _positive_int("val_size", p["val_size"] if p["val_size"] is not None else dv)
        test_size = _positive_int("test_size", p["test_size"] if p["test_size"] is not None else dt)
        pool, val, test = split_dataset(full, n_val=val_size, n_test=test_size, seed=split_seed)
    if cap is not None and cap < len(pool):
        _, _, pool = split_dataset(pool, n_val=0, n_test=cap, seed=_sub_seed("cap", base, seed))
        pool.labels[:] = UNLABELED
    patterns, pattern_probs = _presence(p, names, c + 1 if full.multi_label else c)
    g_pool, g_val, g_test = (np.random.default_rng(s) for s in ss.spawn(3))
    if len(patterns) > 1:
        pool = _inject_missing(pool, patterns, pattern_probs, g_pool)
        val = _inject_missing(val, patterns, pattern_probs, g_val)
        test = _inject_missing(test, patterns, pattern_probs, g_test)
    for split, ds in (("pool", pool), ("val", val), ("test", test)):
        ds.meta.update({"scenario": name, "seed": int(seed), "split": split})

    f_def, t_def = default_recipe(base, c)
    fusion, train = fusion or f_def, train or t_def
    info, info_present = estimate_informativeness(name, seed, pool, test, fusion, train, cache)
    chance = _chance(full.true_labels, c)
    info = {**info, "chance": chance}

    params_out = {k: (list(v) if isinstance(v, tuple) else v) for k, v in p.items()}
    if base != "mfeat":
        params_out.pop("views")
    if base != "emoji":
        params_out.pop("label")
    if base == "mfeat":
        params_out.pop("featurizers")
    params_out.pop("own_data")
    if own is not None:  # which file, and which column became which modality (run.json records it)
        params_out.update(path=own["path"], sha256=own["sha256"], format=own["format"], columns=own["columns"],
                          split="from the file's split column" if own.get("split") == "column" else "stratified")
    params_out.update(base=base, dataset=base, seed=int(seed), val_size=val_size, test_size=test_size,
                      split_seed=split_seed, featurizer_identities=full.meta.get("featurizers", {}),
                      informativeness="estimated: the same recipe trained on the whole pool with only that modality, "
                                      "scored on the test split")
    desc = f"real: {spec['description']}"
    if base == "mfeat":
        desc += f"; views {', '.join(p['views'])}"
    elif full.meta.get("featurizers"):
        used = {k: str(v).split("@")[0] for k, v in (full.meta.get("featurizers") or {}).items()}
        desc += f"; {p['featurizers']} featurizers ({', '.join(f'{k}: {v}' for k, v in used.items())})"
    if len(patterns) > 1:
        which = p.get("missing_modalities") or names
        desc += f"; each of {list(which)} removed from {int(round(100 * p['missing_rate']))} % of items " \
                f"({'completely at random' if p['missing'] == 'mcar' else 'depending on the class'})"
    roles = dict(spec["roles"])
    if base == "mfeat":
        from connectors.datasets.mfeat import VIEWS

        roles = {v: VIEWS[v][1] for v in names}
    return Scenario(name=name, params=params_out, pool=pool, val=val, test=test, informativeness=info,
                    informativeness_present=info_present, chance=chance, fusion=fusion, train=train,
                    description=desc, roles=roles, truth={}, process=None, informativeness_kind="estimated")
