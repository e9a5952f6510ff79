"""Real datasets by name, with raw modalities, ready to featurize and split.

    from connectors.datasets import load_dataset, load_featurized, split_dataset
    ds = load_dataset("emoji")                                   # raw: PNG bytes + text, 9 classes
    ds = load_dataset("emoji", label="subcategory")              # 98 classes
    ds = load_dataset("emoji_tags")                              # label sets: 32 tags from the category names
    ds = load_dataset("mfeat", views=("fou", "kar"))             # vectors, any 2..6 of 6 views
    fz = load_featurized("emoji", featurizers="pretrained", cache_dir=".mmal-cache/features")
    pool, val, test = split_dataset(fz, n_val=200, n_test=400, seed=0)

Why a registry: the benchmark CLI (``--dataset emoji|mfeat``) and the server name datasets as strings.
Every loader returns a :class:`~backend.data.MultimodalDataset` whose ``labels`` are all UNLABELED and
whose ``true_labels`` hold the ground truth (the simulated oracle), plus ``meta["licenses"]``,
``meta["license_files"]`` and ``meta["modality_kinds"]`` (``image``/``text``/``vector`` per modality).
"""

from __future__ import annotations

import os
from typing import Any, Callable, Mapping

import numpy as np

from backend.data import UNLABELED, DataError, MultimodalDataset, label_strata
from connectors.datasets.emoji import load_emoji
from connectors.datasets.emoji_tags import load_emoji_tags
from connectors.datasets.mfeat import load_mfeat

__all__ = ["load_dataset", "list_datasets", "register_dataset", "load_featurized", "default_featurizers",
           "split_dataset", "load_emoji", "load_emoji_tags", "load_mfeat"]

_DATASETS: dict[str, tuple[Callable[..., MultimodalDataset], str]] = {}


def register_dataset(name: str, loader: Callable[..., MultimodalDataset], description: str) -> None:
    """Make ``loader(**params)`` available as ``load_dataset(name, **params)``."""
    if name in _DATASETS and _DATASETS[name][0] is not loader:
        raise ValueError(f"dataset '{name}' registered twice")
    _DATASETS[name] = (loader, description)


register_dataset("emoji", load_emoji, "1,906 emojis: 64-px Google PNG + name/short names; 9 categories "
                 "(label='subcategory': 98); MIT metadata, Apache-2.0 images")
register_dataset("emoji_tags", load_emoji_tags, "the 1,906 emojis with label sets: 32 tags from the words of their "
                 "category and subcategory names (words on >= 30 emojis; 1.93 tags per emoji)")
register_dataset("mfeat", load_mfeat, "UCI Multiple Features: 2,000 handwritten digits, 6 feature views "
                 "(choose 2..6 with views=), 10 classes; CC BY 4.0")


def list_datasets() -> dict[str, str]:
    """name -> one-line description of every registered dataset."""
    return {k: d for k, (_, d) in sorted(_DATASETS.items())}


def load_dataset(name: str, **params: Any) -> MultimodalDataset:
    """Load a registered dataset with raw modalities; unknown names and bad parameters raise DataError."""
    if name not in _DATASETS:
        raise DataError(f"unknown dataset '{name}'; known: {', '.join(sorted(_DATASETS))}")
    loader = _DATASETS[name][0]
    try:
        return loader(**params)
    except TypeError as exc:
        raise DataError(f"dataset '{name}': bad parameters {sorted(params)}: {exc}") from None


# featurizer per modality kind: "simple" needs no pretrained weights, "pretrained" uses the packaged models
_DEFAULTS = {
    "simple": {"image": "image_pixels", "text": "text_tokens", "vector": "vector"},
    "pretrained": {"image": "efficientnet_lite0", "text": "minilm", "vector": "vector"},
}


def default_featurizers(dataset: MultimodalDataset, preset: str = "simple") -> dict[str, str]:
    """Featurizer names for the raw modalities of ``dataset`` (from ``meta["modality_kinds"]``).

    ``preset`` is ``"simple"`` (``image_pixels`` / ``text_tokens``) or ``"pretrained"``
    (``efficientnet_lite0`` / ``minilm``). Numeric modalities need none and are left out.
    """
    if preset not in _DEFAULTS:
        raise DataError(f"featurizer preset must be one of {sorted(_DEFAULTS)}, got {preset!r}")
    kinds = dataset.meta.get("modality_kinds", {})
    out: dict[str, str] = {}
    for name, values in dataset.modalities.items():
        if isinstance(values, np.ndarray) and np.issubdtype(values.dtype, np.number):
            continue
        kind = kinds.get(name)
        if kind not in _DEFAULTS[preset]:
            raise DataError(f"modality '{name}' has unknown kind {kind!r}; pass its featurizer explicitly")
        out[name] = _DEFAULTS[preset][kind]
    return out


def load_featurized(name: str | MultimodalDataset, featurizers: str | Mapping[str, Any] = "simple",
                    cache_dir: str | os.PathLike[str] | None = ".mmal-cache/features", progress: bool = False,
                    batch_size: int = 256, **params: Any) -> MultimodalDataset:
    """A dataset ready for training: loaded (by name, or given) and featurized through the on-disk cache.

    ``featurizers`` is a preset (``"simple"`` or ``"pretrained"``, see :func:`default_featurizers`) or a
    mapping modality -> featurizer name / instance (e.g. ``{"image": "image_pixels", "text": "minilm"}``).
    With ``cache_dir`` (default ``.mmal-cache/features``; None disables caching) a second call on the
    same data encodes nothing. ``progress`` shows a progress bar per modality.
    """
    from backend.encoders import FeatureCache, featurize

    ds = name if isinstance(name, MultimodalDataset) else load_dataset(name, **params)
    if isinstance(featurizers, str):
        featurizers = default_featurizers(ds, featurizers)
    cache = FeatureCache(cache_dir) if cache_dir is not None else None
    return featurize(ds, dict(featurizers), cache=cache, batch_size=batch_size, progress=progress)


def split_dataset(dataset: MultimodalDataset, n_val: int | float = 0.1, n_test: int | float = 0.2,
                  seed: int = 0) -> tuple[MultimodalDataset, MultimodalDataset, MultimodalDataset]:
    """Stratified (pool, val, test) split of a dataset with ``true_labels``.

    Sizes are counts or fractions of the dataset. The pool keeps every label UNLABELED (the oracle answers
    from ``true_labels``); val and test are labelled. Deterministic under ``seed``; each class is split in
    proportion (largest remainders), so small classes still appear in the pool. Label sets are stratified
    by the rarest class of each set (:func:`backend.data.label_strata`).
    """
    if dataset.true_labels is None:
        raise DataError("split_dataset needs true_labels (the ground truth)")
    n = len(dataset)
    sizes = []
    for key, v in (("n_val", n_val), ("n_test", n_test)):
        k = int(round(v * n)) if isinstance(v, float) else int(v)
        if k < 0:
            raise DataError(f"{key} must be non-negative, got {v!r}")
        sizes.append(k)
    if sizes[0] + sizes[1] >= n:
        raise DataError(f"n_val + n_test = {sizes[0] + sizes[1]} leaves no pool out of {n} items")
    rng = np.random.default_rng(seed)
    y = label_strata(dataset.true_labels)
    # per-class quotas by largest remainders, then a random permutation inside each class
    parts: dict[str, list[np.ndarray]] = {"val": [], "test": [], "pool": []}
    classes = np.unique(y)
    counts = np.array([(y == c).sum() for c in classes])
    quotas = []
    for total in sizes:
        raw = counts * total / n
        q = np.floor(raw).astype(int)
        rest = total - q.sum()
        order = np.argsort(-(raw - q), kind="stable")
        q[order[:rest]] += 1
        quotas.append(q)
    for j, c in enumerate(classes):
        idx = rng.permutation(np.flatnonzero(y == c))
        kv, kt = int(quotas[0][j]), int(quotas[1][j])
        kv, kt = min(kv, len(idx)), min(kt, max(len(idx) - kv, 0))
        parts["val"].append(idx[:kv])
        parts["test"].append(idx[kv:kv + kt])
        parts["pool"].append(idx[kv + kt:])
    out = []
    for key in ("pool", "val", "test"):
        idx = np.sort(np.concatenate(parts[key]))
        sub = dataset.subset(idx)
        sub.labels = np.full(sub.labels.shape, UNLABELED, dtype=np.int64) if key == "pool" else sub.true_labels.copy()
        out.append(sub)
    return out[0], out[1], out[2]
