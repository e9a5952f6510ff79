"""Emoji (image + text, real): 1,906 base emojis, 64-px Google PNG + "name: short names", 9 categories.

Why this dataset: a real image+text problem small enough for CPU, with a strong modality imbalance
(text alone gets about 0.84 accuracy, 16x16 pixels about 0.63), i.e. exactly the "one modality
dominates" pitfall. The repository ships a prepared copy in ``data/emoji/`` (made by
``scripts/prepare_emoji.py`` from ``emoji-datasource-google@16.0.0``), so loading needs no network.
Metadata is MIT, images Apache-2.0; both notices sit beside the data and are listed in ``meta``.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from backend.data import DataError, MultimodalDataset

__all__ = ["load_emoji", "emoji_dir", "LABEL_KINDS"]

LABEL_KINDS = ("category", "subcategory")
_LICENSE_FILES = {"metadata": "LICENSE-metadata-MIT.txt", "images": "LICENSE-images-Apache-2.0.txt"}


def emoji_dir(root: str | os.PathLike[str] | None = None) -> Path:
    """Folder of the prepared copy: ``root``, else ``$MMAL_DATA_DIR/emoji``, else the repository's ``data/emoji``."""
    if root is not None:
        return Path(root)
    env = os.environ.get("MMAL_DATA_DIR")
    base = Path(env) if env else Path(__file__).resolve().parents[2] / "data"
    return base / "emoji"


@lru_cache(maxsize=4)
def _read_images(zip_path: str, mtime_ns: int, size: int) -> dict[str, bytes]:
    """All PNG bytes of the archive (6 MB), memoised per file version so repeated loads are instant."""
    with zipfile.ZipFile(zip_path) as zf:
        return {info.filename: zf.read(info) for info in zf.infolist() if not info.is_dir()}


def load_emoji(label: str = "category", root: str | os.PathLike[str] | None = None,
               verify: bool = False) -> MultimodalDataset:
    """The emoji dataset with raw modalities: ``image`` = PNG bytes, ``text`` = ``"name: short names"``.

    ``label`` is ``"category"`` (9 classes) or ``"subcategory"`` (98 classes, a harder variant).
    Every item is labelled in ``true_labels`` (the oracle's answers); ``labels`` start all UNLABELED,
    as in active learning. ``ids`` are the unified code points (e.g. ``"1F600"``). ``verify=True``
    also checks the image archive's sha256 against the one recorded when the copy was prepared.
    Featurize with e.g. ``{"image": "image_pixels", "text": "text_tokens"}`` or the pretrained
    ``efficientnet_lite0`` / ``minilm`` (see :func:`connectors.datasets.load_featurized`).
    """
    if label not in LABEL_KINDS:
        raise DataError(f"emoji: label must be one of {LABEL_KINDS}, got {label!r}")
    folder = emoji_dir(root)
    meta_path = folder / "emoji.json"
    if not meta_path.is_file():
        raise DataError(f"emoji: {meta_path} not found; run `python scripts/prepare_emoji.py` "
                        f"(needs npm) or set MMAL_DATA_DIR to a folder holding emoji/")
    doc = json.loads(meta_path.read_text(encoding="utf-8"))
    licenses = {}
    for kind, fname in _LICENSE_FILES.items():
        p = folder / fname
        if not p.is_file():
            raise DataError(f"emoji: licence notice {p} is missing; the data may not be used without it")
        licenses[kind] = str(p)
    zip_path = folder / doc["images"]["file"]
    if not zip_path.is_file():
        raise DataError(f"emoji: image archive {zip_path} not found")
    if verify:
        digest = hashlib.sha256(zip_path.read_bytes()).hexdigest()
        if digest != doc["images"]["sha256"]:
            raise DataError(f"emoji: {zip_path} sha256 {digest} differs from the recorded {doc['images']['sha256']}")
    st = zip_path.stat()
    images = _read_images(str(zip_path.resolve()), st.st_mtime_ns, st.st_size)

    entries = doc["emojis"]
    image_list: list[bytes] = []
    texts: list[str] = []
    for e in entries:
        png = images.get(e["image"])
        if png is None:
            raise DataError(f"emoji {e['unified']}: image {e['image']!r} is missing from {zip_path.name}")
        image_list.append(png)
        texts.append(emoji_text(e))
    values = [e[label] for e in entries]
    class_names = sorted(set(values))
    index = {c: i for i, c in enumerate(class_names)}
    y = np.array([index[v] for v in values], dtype=np.int64)
    meta: dict[str, Any] = {
        "dataset": "emoji",
        "label": label,
        "source": doc["source"]["package"],
        "licenses": {"metadata": "MIT", "images": "Apache-2.0"},
        "license_files": licenses,
        "modality_kinds": {"image": "image", "text": "text"},
        # keyed by item id (not by position) so they stay right after subset() / splits
        "category_of": {e["unified"]: e["category"] for e in entries},
        "subcategory_of": {e["unified"]: e["subcategory"] for e in entries},
    }
    return MultimodalDataset(
        modalities={"image": image_list, "text": texts},
        labels=np.full(len(entries), -1, dtype=np.int64),
        class_names=class_names,
        ids=np.array([e["unified"] for e in entries], dtype=object),
        true_labels=y,
        meta=meta,
    )


def emoji_text(entry: dict[str, Any]) -> str:
    """The text of one emoji: its lower-cased name, then its short names with ``_`` as spaces."""
    shorts = ", ".join(s.replace("_", " ") for s in entry["short_names"])
    return f"{entry['name'].lower()}: {shorts}"
