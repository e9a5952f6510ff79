"""A researcher's own file as a benchmark dataset: a JSONL / CSV / TSV / JSON manifest or a Label Studio export.

    spec = describe_own_data("data/mine.jsonl", modalities={"photo": "image", "caption": "text"})
    ds = load_own_data(spec)          # raw modalities, labels as the simulated oracle's answers

Why a spec (a plain dict) and not the dataset: the benchmark config travels to worker processes and RQ
workers and decides whether a run folder can be resumed, so it must say *which* file (absolute path and
its sha256) and *how* it is read (format, column -> modality, ignored columns). A worker loading the
spec reads the same columns the driver resolved, and refuses a file that changed since (a resumed run
would otherwise mix two datasets). Columns are strict (:func:`connectors.importers.plan_columns`).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from backend.data import DataError, MultimodalDataset
from connectors.importers import load_label_studio_export, load_manifest

__all__ = ["OWN_DATA_SUFFIXES", "is_own_data_name", "detect_format", "describe_own_data", "load_own_data"]

OWN_DATA_SUFFIXES = (".jsonl", ".ndjson", ".json", ".csv", ".tsv")
FORMATS = ("manifest", "label_studio")


def is_own_data_name(name: str) -> bool:
    """True for a scenario base that names a data file (``mine.jsonl``): how own data is told from a
    registered dataset or a synthetic scenario without reading anything."""
    return isinstance(name, str) and name.lower().endswith(OWN_DATA_SUFFIXES) and len(Path(name).stem) > 0


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def detect_format(path: str | os.PathLike[str]) -> str:
    """``label_studio`` for a JSON list of tasks with a ``data`` object, else ``manifest``."""
    p = Path(path)
    if p.suffix.lower() != ".json":
        return "manifest"
    try:
        doc = json.loads(p.read_text(encoding="utf-8-sig"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{p}: not a readable JSON file ({exc})") from None
    first = doc[0] if isinstance(doc, list) and doc else doc
    return "label_studio" if isinstance(first, dict) and isinstance(first.get("data"), dict) else "manifest"


def _read(path: Path, fmt: str, modalities: Mapping[str, str] | None, ignore: Sequence[str]) -> MultimodalDataset:
    if fmt == "label_studio":
        return load_label_studio_export(path, modalities=modalities, ignore_fields=ignore, as_oracle=True)
    return load_manifest(path, modalities=modalities, ignore_fields=ignore, as_oracle=True)


def describe_own_data(path: str | os.PathLike[str], modalities: Mapping[str, str] | None = None,
                      ignore_columns: Sequence[str] = ()) -> dict[str, Any]:
    """Read and check ``path`` once (every row, image and vector) and return its JSON-safe spec.

    Keys: name (the file name: the scenario's name in tables), path (absolute), sha256, format,
    modalities (column -> kind, declared or inferred), ignore_columns, declared (whether the modalities
    were given), columns (what became what, as :func:`connectors.importers.load_manifest` records it),
    n_items, classes and split (``"column"`` when a split column fixes train / val / test, else
    ``"stratified"``). Errors are :class:`~backend.data.DataError` naming the file, row and column.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise DataError(f"{str(p)!r}: no such file")
    p = p.resolve()
    if not is_own_data_name(p.name):
        raise DataError(f"{p}: a data file must end in {', '.join(OWN_DATA_SUFFIXES)}")
    if "+" in p.name:
        raise DataError(f"{p}: the file name may not contain '+' (it separates scenario modifiers); rename it")
    fmt = detect_format(p)
    ds = _read(p, fmt, modalities, list(ignore_columns))
    return {"name": p.name, "path": str(p), "sha256": _sha256(p), "format": fmt,
            "modalities": dict(ds.meta["modality_kinds"]), "ignore_columns": list(ignore_columns),
            "declared": modalities is not None, "columns": ds.meta.get("columns", {}), "n_items": len(ds),
            "classes": list(ds.class_names), "split": "column" if ds.meta.get("split_of") else "stratified"}


def load_own_data(spec: Mapping[str, Any]) -> MultimodalDataset:
    """The dataset a spec describes: raw modalities, every label in ``true_labels`` (the oracle's answers).

    The file must still have the spec's sha256 (a changed file is an error, not a silent new dataset).
    """
    for key in ("path", "sha256", "format", "modalities"):
        if key not in spec:
            raise DataError(f"own-data spec lacks {key!r}: {dict(spec)}")
    p = Path(spec["path"])
    if spec["format"] not in FORMATS:
        raise DataError(f"own-data format must be one of {FORMATS}, got {spec['format']!r}")
    if not p.is_file():
        raise DataError(f"{p}: no such file (a worker on another machine needs the same path)")
    digest = _sha256(p)
    if digest != spec["sha256"]:
        raise DataError(f"{p} changed since the run was configured (sha256 {digest[:12]} != "
                        f"{str(spec['sha256'])[:12]}); "
                        "start a new --out folder to benchmark the new version")
    ds = _read(p, str(spec["format"]), dict(spec["modalities"]), list(spec.get("ignore_columns") or []))
    ds.meta["dataset"] = p.name
    return ds
