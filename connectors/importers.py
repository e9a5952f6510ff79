"""Import your own multimodal data: a JSONL / CSV / JSON manifest, or a Label Studio JSON export.

Both return a :class:`~backend.data.MultimodalDataset` with *raw* modalities (image references, texts,
feature vectors) and presence masks, ready for :func:`backend.encoders.featurize`:

- ``image`` modalities hold a local file path (``str``), fetched bytes, or a ``data:`` URL; local
  files are checked to exist (and, by default, to be readable images) at import time;
- ``text`` modalities hold strings;
- ``vector`` modalities are a float32 ``(N, d)`` array, read from inline numbers or a ``.npy`` /
  ``.txt`` / ``.csv`` file per item.

An empty / null / absent value means "this item lacks that modality" (mask False), never an error;
everything else that is wrong stops the import with a :class:`RowError` naming the file, the row (line
number, or task position and id) and the field. Nothing is dropped silently: every row becomes an item
(``meta["row_of"]`` maps each item id back to its row).

Columns are strict (:func:`plan_columns`): the reserved columns ``id``, ``label`` and ``split`` (train / val
/ test, kept in ``meta["split_of"]``) are never modalities; every other column is a declared modality
(``modalities=``), an ignored one (``ignore_fields=``), or, without ``modalities=``, an inferred modality;
an undeclared extra column next to declared modalities, or an inferred "modality" that looks like
metadata (a handful of repeated values, or only numbers in a text column), raises :class:`ColumnError`
naming it. ``meta["columns"]`` records which column became which modality and which were ignored.

Why strict: active learning spends human labels; a silently skipped row or a misread label would
corrupt the pool without anyone noticing.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from backend.data import UNLABELED, DataError, MultimodalDataset
from connectors.label_config import read_label_config

__all__ = ["load_manifest", "load_label_studio_export", "choices_from_label_config", "RowError", "ColumnError",
           "plan_columns", "MODALITY_KINDS", "IMAGE_EXTENSIONS", "SPLIT_VALUES"]

MODALITY_KINDS = ("image", "text", "vector")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff")
VECTOR_EXTENSIONS = (".npy", ".txt", ".csv")
_REMOTE = re.compile(r"^[a-z][a-z0-9+.-]*://", re.I)
SPLIT_VALUES = ("train", "val", "test")
# an inferred text "modality" with at most this many distinct values (and few per row) is metadata
_CATEGORICAL_MAX = 10
_CATEGORICAL_MIN_ROWS = 20


class RowError(DataError):
    """A bad row of an imported file; ``row`` names it (e.g. ``"line 7"``) and ``field`` the field."""

    def __init__(self, source: str, row: str, field: str | None, reason: str) -> None:
        self.source, self.row, self.field, self.reason = source, row, field, reason
        where = f"{source}: {row}" + (f", field '{field}'" if field else "")
        super().__init__(f"{where}: {reason}")


class ColumnError(DataError):
    """A column that is neither reserved, a declared modality nor ignored (``columns`` names them).

    ``undeclared`` is True when the fix is to declare the column as a modality or to ignore it.
    """

    def __init__(self, source: str, columns: Sequence[str], reason: str, undeclared: bool = False) -> None:
        self.source, self.columns, self.reason, self.undeclared = source, list(columns), reason, undeclared
        hint = "; declare it in modalities= or list it in ignore_fields=" if undeclared else ""
        super().__init__(f"{source}: {reason}{hint}")


# --------------------------------------------------------------------------------------------- values
@dataclass
class _Resolver:
    """Turns raw field values into modality values (shared by both importers)."""

    source: str
    base_dir: Path
    url_map: Mapping[str, str]
    fetch_urls: bool
    fetch_headers: Mapping[str, str]
    fetch_timeout: float
    verify_images: bool
    _client: Any = None

    def err(self, row: str, fld: str | None, reason: str) -> RowError:
        return RowError(self.source, row, fld, reason)

    def map_url(self, value: str) -> str:
        """Apply the longest matching ``url_map`` prefix (e.g. Label Studio's ``/data/upload/``)."""
        best = max((p for p in self.url_map if value.startswith(p)), key=len, default=None)
        if best is None:
            return value
        rest = value[len(best):]
        target = self.url_map[best]
        if not _REMOTE.match(target):
            rest = urllib.parse.unquote(rest)
        return target + rest

    def local_path(self, value: str) -> Path:
        if value.lower().startswith("file://"):
            value = urllib.parse.unquote(urllib.parse.urlparse(value).path)
        p = Path(value).expanduser()
        return p if p.is_absolute() else self.base_dir / p

    def fetch(self, url: str, row: str, fld: str) -> bytes:
        import httpx

        if self._client is None:
            self._client = httpx.Client(timeout=self.fetch_timeout, headers=dict(self.fetch_headers),
                                        follow_redirects=True)
        try:
            resp = self._client.get(url)
        except httpx.HTTPError as exc:
            raise self.err(row, fld, f"cannot fetch {url!r}: {type(exc).__name__}: {exc}") from None
        if resp.status_code != 200:
            raise self.err(row, fld, f"fetching {url!r} answered HTTP {resp.status_code}")
        if not resp.content:
            raise self.err(row, fld, f"fetching {url!r} returned no bytes")
        return resp.content

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def image(self, value: Any, row: str, fld: str) -> str | bytes:
        """A local path (checked), fetched bytes, or a data: URL (checked)."""
        if not isinstance(value, str):
            raise self.err(row, fld, f"an image must be a path or URL string, got {type(value).__name__}")
        value = self.map_url(value.strip())
        if value.startswith("data:"):
            from backend.encoders.builtin import decode_data_url

            try:
                data = decode_data_url(value)
            except DataError as exc:
                raise self.err(row, fld, str(exc)) from None
            self._check_image(data, row, fld, "data: URL")
            return value
        if _REMOTE.match(value) and not value.lower().startswith("file://"):
            if not self.fetch_urls:
                raise self.err(row, fld, f"remote image URL {value[:100]!r}: pass fetch_urls=True to download "
                                         f"it, or url_map={{prefix: local folder}} to read it from disk")
            data = self.fetch(value, row, fld)
            self._check_image(data, row, fld, value)
            return data
        path = self.local_path(value)
        if not path.is_file():
            hint = " (a Label Studio URL? map it with url_map=)" if value.startswith("/data/") else ""
            raise self.err(row, fld, f"image file not found: {str(path)!r}{hint}")
        if self.verify_images:
            self._check_image(path, row, fld, str(path))
        return str(path)

    def _check_image(self, data: bytes | Path, row: str, fld: str, what: str) -> None:
        if not self.verify_images:
            return
        from PIL import Image

        try:
            with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as im:
                im.size  # header parsed: a real image
        except Exception as exc:  # Pillow raises many types
            raise self.err(row, fld, f"{what} is not a readable image ({type(exc).__name__})") from None

    def text(self, value: Any, row: str, fld: str) -> str:
        if not isinstance(value, str):
            raise self.err(row, fld, f"text must be a string, got {type(value).__name__} {value!r:.60}")
        return value

    def vector(self, value: Any, row: str, fld: str) -> np.ndarray:
        """Inline numbers (a JSON list, or a string like ``"0.1 0.2"`` / ``"[0.1, 0.2]"``) or a vector file."""
        if isinstance(value, str):
            s = value.strip()
            if s.lower().endswith(VECTOR_EXTENSIONS):
                arr = self._vector_file(s, row, fld)
            else:
                parts = [p for p in re.split(r"[\s,;]+", s.strip("[]() ")) if p]
                try:
                    arr = np.array([float(p) for p in parts], dtype=np.float64)
                except ValueError:
                    raise self.err(row, fld, f"not a vector: {s[:60]!r} (numbers, or a .npy/.txt/.csv file)") from None
        elif isinstance(value, list):
            try:
                arr = np.asarray(value, dtype=np.float64)
            except (ValueError, TypeError):
                raise self.err(row, fld, "vector list holds non-numbers") from None
        else:
            raise self.err(row, fld, f"a vector must be a list of numbers or a file path, got {type(value).__name__}")
        if arr.ndim != 1 or arr.size == 0:
            raise self.err(row, fld, f"a vector must be one non-empty row of numbers, got shape {arr.shape}")
        if not np.isfinite(arr).all() or np.abs(arr).max() > np.finfo(np.float32).max:
            raise self.err(row, fld, "vector has non-finite values (NaN, inf or beyond float32)")
        return arr.astype(np.float32)

    def _vector_file(self, value: str, row: str, fld: str) -> np.ndarray:
        path = self.local_path(value)
        if not path.is_file():
            raise self.err(row, fld, f"vector file not found: {str(path)!r}")
        try:
            if path.suffix.lower() == ".npy":
                arr = np.load(path, allow_pickle=False)
            else:
                arr = np.loadtxt(path, delimiter="," if path.suffix.lower() == ".csv" else None, dtype=np.float64, ndmin=1)
        except (ValueError, OSError) as exc:
            raise self.err(row, fld, f"cannot read vector file {str(path)!r}: {exc}") from None
        if arr.ndim == 2 and 1 in arr.shape:
            arr = arr.ravel()
        if not np.issubdtype(arr.dtype, np.number):
            raise self.err(row, fld, f"vector file {str(path)!r} holds {arr.dtype}, not numbers")
        return np.asarray(arr, dtype=np.float64)


def _is_absent(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip() == "") or (isinstance(value, list) and not value)


def _looks_like_image(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    v = value.strip()
    if v.startswith("data:image/"):
        return True
    path = urllib.parse.urlparse(v).path if _REMOTE.match(v) else v.split("?")[0]
    if v.startswith("/data/local-files/"):
        path = urllib.parse.parse_qs(urllib.parse.urlparse(v).query).get("d", [path])[0]
    return path.lower().endswith(IMAGE_EXTENSIONS)


_NUMBER = r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?"


def _looks_like_vector(value: Any) -> bool:
    """A list, a vector-file path, or inline numbers as CSV cells hold them (``"0.1 0.2"``, ``"[1, 2]"``)."""
    if isinstance(value, list):
        return True
    if not isinstance(value, str):
        return False
    v = value.strip()
    parts = [p for p in re.split(r"[\s,;]+", v.strip("[]() ")) if p]
    return v.lower().endswith(VECTOR_EXTENSIONS) or (len(parts) >= 2 and all(re.fullmatch(_NUMBER, p) for p in parts))


def _infer_kinds(rows: list[tuple[str, dict[str, Any]]], fields: list[str], source: str) -> dict[str, str]:
    """Kind of each field from its present values: all image references -> image, all lists or .npy
    vector-file paths (.npy/.txt/.csv) -> vector, strings -> text. Mixed or non-string scalars ask for an explicit ``modalities=``."""
    kinds: dict[str, str] = {}
    for f in fields:
        values = [(r, row[f]) for r, row in rows if f in row and not _is_absent(row[f])]
        if not values:
            raise DataError(f"{source}: field '{f}' is empty in every row; drop it or declare modalities=")
        img = [_looks_like_image(v) for _, v in values]
        vec = [_looks_like_vector(v) for _, v in values]
        if all(img):
            kinds[f] = "image"
        elif all(vec):
            kinds[f] = "vector"
        elif any(img) or any(vec):
            r = values[img.index(False) if any(img) else vec.index(False)][0]
            raise RowError(source, r, f, "the field mixes image/vector references with other values; "
                                         "declare its kind with modalities={field: 'image'|'text'|'vector'}")
        else:
            bad = next(((r, v) for r, v in values if not isinstance(v, str)), None)
            if bad is not None:
                raise RowError(source, bad[0], f, f"holds a {type(bad[1]).__name__} ({bad[1]!r:.40}); not text, "
                                                  "an image or a vector: declare modalities= to choose the fields")
            kinds[f] = "text"
    return kinds


def _check_kinds(modalities: Mapping[str, str]) -> dict[str, str]:
    out = dict(modalities)
    if len(out) < 2:
        raise DataError(f"a multimodal import needs at least 2 modalities, got {sorted(out)}")
    for name, kind in out.items():
        if kind not in MODALITY_KINDS:
            raise DataError(f"modality '{name}' has kind {kind!r}; expected one of {MODALITY_KINDS}")
    return out


def _metadata_like(rows: list[tuple[str, dict[str, Any]]], f: str) -> str | None:
    """Why an inferred text column ``f`` looks like metadata rather than a modality (None: it does not)."""
    values = [str(row[f]).strip() for _, row in rows if f in row and not _is_absent(row[f])]
    if values and all(re.fullmatch(_NUMBER, v) for v in values):
        return "holds one number per row (a numeric column, not text)"
    distinct = len(set(values))
    if len(values) >= _CATEGORICAL_MIN_ROWS and distinct <= min(_CATEGORICAL_MAX, 0.2 * len(values)):
        return f"holds only {distinct} distinct values over {len(values)} rows (a category, not text)"
    return None


def plan_columns(rows: list[tuple[str, dict[str, Any]]], fields: Sequence[str], source: str, *,
                 modalities: Mapping[str, str] | None, reserved: Sequence[str],
                 ignore_fields: Sequence[str] = ()) -> dict[str, str]:
    """Modality name -> kind from the file's ``fields``, strictly (see the module docstring).

    Why strict: a forgotten ``split`` or ``source`` column silently became a text modality, was encoded
    and fed to the model; an extra column must be a decision (declare it or ignore it), never a default.
    """
    ignore = list(dict.fromkeys(ignore_fields))
    clash = [f for f in ignore if f in reserved or (modalities and f in modalities)]
    if clash:
        raise ColumnError(source, clash, f"column {clash[0]!r} cannot be ignored: it is "
                                         f"{'reserved' if clash[0] in reserved else 'a declared modality'}")
    unknown = [f for f in ignore if f not in fields]
    if unknown:
        raise ColumnError(source, unknown, f"ignored column {unknown[0]!r} appears in no row; "
                                           f"columns are {list(fields)}")
    if modalities is not None:
        kinds = _check_kinds(modalities)
        bad = [m for m in kinds if m in reserved]
        if bad:
            raise ColumnError(source, bad, f"column {bad[0]!r} is reserved ({', '.join(reserved)}), not a modality")
        absent = [m for m in kinds if m not in fields]
        if absent:
            raise DataError(f"{source}: modality fields {absent} appear in no row; fields are {list(fields)}")
        extra = [f for f in fields if f not in kinds and f not in reserved and f not in ignore]
        if extra:
            raise ColumnError(source, extra, f"column {extra[0]!r} is neither a declared modality, reserved "
                                             f"({', '.join(reserved)}) nor ignored", undeclared=True)
        return kinds
    candidates = [f for f in fields if f not in reserved and f not in ignore]
    kinds = _infer_kinds(rows, candidates, source)
    for f, kind in kinds.items():
        why = _metadata_like(rows, f) if kind == "text" else None
        if why:
            raise ColumnError(source, [f], f"column {f!r} {why}", undeclared=True)
    return _check_kinds(kinds)


def _split_of(items: list["_Item"], splits: Mapping[str, Any], source: str, split_field: str) -> dict[str, str]:
    """item id -> train / val / test from the split column (every row needs one when the column exists)."""
    out: dict[str, str] = {}
    for it in items:
        raw = splits.get(it.row)
        value = raw.strip().lower() if isinstance(raw, str) else raw
        if value not in SPLIT_VALUES:
            raise RowError(source, it.row, split_field, f"split {raw!r} is not one of {', '.join(SPLIT_VALUES)} "
                                                        "(with a split column every row needs one)")
        out[it.item_id] = str(value)
    return out


# --------------------------------------------------------------------------------------------- assembly
@dataclass
class _Item:
    row: str
    item_id: str
    fields: dict[str, Any]
    label: str | None
    label_field: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _label_text(value: Any, source: str, row: str, fld: str) -> str | None:
    if _is_absent(value):
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise RowError(source, row, fld, f"a label must be a class name (string) or an integer, got {type(value).__name__}")
    return str(value).strip()


def _sort_classes(names: set[str]) -> list[str]:
    if names and all(re.fullmatch(r"-?\d+", n) for n in names):
        return sorted(names, key=int)
    return sorted(names)


def _assemble(items: list[_Item], kinds: dict[str, str], res: _Resolver, class_names: Sequence[str] | None,
              as_oracle: bool, meta: dict[str, Any]) -> MultimodalDataset:
    source = res.source
    if not items:
        raise DataError(f"{source}: no items")
    seen: dict[str, str] = {}
    for it in items:
        if it.item_id in seen:
            raise RowError(source, it.row, "id", f"duplicate id {it.item_id!r} (first in {seen[it.item_id]})")
        seen[it.item_id] = it.row

    if class_names is None:
        names = _sort_classes({it.label for it in items if it.label is not None})
    else:
        names = [str(c) for c in class_names]
        if len(set(names)) != len(names):
            raise DataError(f"{source}: class_names has duplicates: {names}")
    index = {c: i for i, c in enumerate(names)}
    labels = np.full(len(items), UNLABELED, dtype=np.int64)
    for i, it in enumerate(items):
        if it.label is not None:
            if it.label not in index:
                raise RowError(source, it.row, it.label_field, f"label {it.label!r} is not one of the classes {names}")
            labels[i] = index[it.label]
    if len(names) < 1:
        raise DataError(f"{source}: no class names (no labels in the file and no class_names= given)")

    mods: dict[str, Any] = {}
    masks: dict[str, np.ndarray] = {}
    try:
        for name, kind in kinds.items():
            mask = np.zeros(len(items), dtype=bool)
            values: list[Any] = [None] * len(items)
            for i, it in enumerate(items):
                raw = it.fields.get(name)
                if _is_absent(raw):
                    continue
                if kind == "image":
                    values[i] = res.image(raw, it.row, name)
                elif kind == "text":
                    values[i] = res.text(raw, it.row, name)
                else:
                    values[i] = res.vector(raw, it.row, name)
                mask[i] = True
            if not mask.any():
                raise DataError(f"{source}: modality '{name}' is empty in every row")
            if kind == "vector":
                dims = {v.shape[0] for v in values if v is not None}
                if len(dims) > 1:
                    first = next(v.shape[0] for v in values if v is not None)
                    i = next(i for i, v in enumerate(values) if v is not None and v.shape[0] != first)
                    raise RowError(source, items[i].row, name, f"vector has {values[i].shape[0]} values, "
                                                               f"earlier rows have {first}")
                d = dims.pop()
                arr = np.zeros((len(items), d), dtype=np.float32)
                for i, v in enumerate(values):
                    if v is not None:
                        arr[i] = v
                mods[name] = arr
            else:
                mods[name] = values
            masks[name] = mask
    finally:
        res.close()
    none = np.flatnonzero(~np.stack([masks[k] for k in kinds], axis=1).any(axis=1))
    if none.size:
        raise RowError(source, items[none[0]].row, None, f"item {items[none[0]].item_id!r} has none of the modalities {list(kinds)}")

    meta = {**meta, "source": source, "modality_kinds": dict(kinds), "row_of": {it.item_id: it.row for it in items}}
    ids = np.array([it.item_id for it in items], dtype=object)
    if as_oracle:
        missing = np.flatnonzero(labels == UNLABELED)
        if missing.size:
            raise RowError(source, items[missing[0]].row, items[missing[0]].label_field,
                           "every item needs a label here (as_oracle=True: the labels are the simulated "
                           "oracle's answers); this one has none")
        return MultimodalDataset(mods, np.full(len(items), UNLABELED, dtype=np.int64), names, masks, ids,
                                 true_labels=labels, meta=meta)
    return MultimodalDataset(mods, labels, names, masks, ids, meta=meta)


def _resolver(source: str, base_dir: Any, default_dir: Path, url_map: Mapping[str, str] | None, fetch_urls: bool,
              fetch_headers: Mapping[str, str] | None, fetch_timeout: float, verify_images: bool) -> _Resolver:
    return _Resolver(source, Path(base_dir) if base_dir is not None else default_dir, dict(url_map or {}),
                     bool(fetch_urls), dict(fetch_headers or {}), float(fetch_timeout), bool(verify_images))


# --------------------------------------------------------------------------------------------- manifest
def _manifest_format(p: Path, format: str | None) -> str:
    suffixes = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv"}
    fmt = format or suffixes.get(p.suffix.lower())
    if fmt not in ("jsonl", "json", "csv", "tsv"):
        raise DataError(f"{p}: unknown manifest format {p.suffix!r}; use .jsonl, .json, .csv or .tsv (or format=)")
    return fmt


def _manifest_rows(path: Path, fmt: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(row name, dict) per item of a JSONL, JSON (array) or CSV/TSV manifest."""
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"manifest not found: {source!r}") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{source}: not UTF-8 text ({exc})") from None
    if fmt == "jsonl":
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise RowError(source, f"line {n}", None, f"invalid JSON ({exc.msg} at column {exc.colno})") from None
            if not isinstance(obj, dict):
                raise RowError(source, f"line {n}", None, f"expected a JSON object, got {type(obj).__name__}")
            yield f"line {n}", obj
    elif fmt == "json":
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{source}: invalid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
        if not isinstance(obj, list):
            raise DataError(f"{source}: a JSON manifest must be an array of objects, got {type(obj).__name__}")
        for k, row in enumerate(obj, start=1):
            if not isinstance(row, dict):
                raise RowError(source, f"item {k}", None, f"expected a JSON object, got {type(row).__name__}")
            yield f"item {k}", row
    else:
        reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t" if fmt == "tsv" else ",")
        try:
            header = next(reader)
        except StopIteration:
            raise DataError(f"{source}: empty CSV (no header row)") from None
        except csv.Error as exc:
            raise DataError(f"{source}: malformed CSV header ({exc})") from None
        header = [h.strip() for h in header]
        dup = {h for h in header if header.count(h) > 1}
        if dup or "" in header:
            raise DataError(f"{source}: the header has {'duplicate columns ' + str(sorted(dup)) if dup else 'an empty column name'}")
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                raise RowError(source, f"line {reader.line_num}", None, f"malformed CSV ({exc})") from None
            if not cells or all(not c.strip() for c in cells):
                continue
            if len(cells) != len(header):
                raise RowError(source, f"line {reader.line_num}", None,
                               f"has {len(cells)} fields, the header has {len(header)}")
            yield f"line {reader.line_num}", dict(zip(header, cells))


def load_manifest(path: str | os.PathLike[str], *, modalities: Mapping[str, str] | None = None, id_field: str = "id",
                  label_field: str = "label", class_names: Sequence[str] | None = None,
                  base_dir: str | os.PathLike[str] | None = None, url_map: Mapping[str, str] | None = None,
                  fetch_urls: bool = False, fetch_headers: Mapping[str, str] | None = None, fetch_timeout: float = 30.0,
                  verify_images: bool = True, as_oracle: bool = False, format: str | None = None,
                  split_field: str | None = "split", ignore_fields: Sequence[str] = ()) -> MultimodalDataset:
    """Read a manifest: one item per row with an id, an optional label and one field per modality.

    Formats: ``.jsonl``/``.ndjson`` (one JSON object per line), ``.json`` (an array of objects, e.g. a
    Label Studio JSON-MIN export), ``.csv``/``.tsv`` (a header row); or force one with ``format=``.
    ``modalities`` maps field -> ``"image"``/``"text"``/``"vector"``; without it every field except the
    reserved ones (id, label, ``split_field``) and ``ignore_fields`` is a modality and its kind is inferred
    (image file/URL extensions, lists or ``.npy``/``.txt``/``.csv`` paths for vectors, else text); any other
    column raises :class:`ColumnError` (:func:`plan_columns`). A ``split_field`` column (default ``split``)
    fixes each item's split: ``meta["split_of"]`` maps item id -> train / val / test. Relative paths are
    relative to ``base_dir`` (default: the
    manifest's folder). Remote image URLs need ``url_map`` (prefix -> local folder or other URL) or
    ``fetch_urls=True``. Empty labels are UNLABELED; ``class_names`` fixes the classes and their order
    (default: sorted labels seen). ``as_oracle=True`` puts the labels into ``true_labels`` and leaves
    ``labels`` UNLABELED (a fully labelled file used as a simulated oracle in the benchmark).
    """
    p = Path(path)
    fmt = _manifest_format(p, format)
    source = str(p)
    rows = list(_manifest_rows(p, fmt))
    if not rows:
        raise DataError(f"{source}: no rows")
    fields: list[str] = []
    for _, row in rows:
        fields.extend(k for k in row if k not in fields)
    if id_field not in fields:
        raise DataError(f"{source}: no '{id_field}' field (set id_field= to the field holding item ids)")
    reserved = [id_field, label_field] + ([split_field] if split_field else [])
    kinds = plan_columns(rows, fields, source, modalities=modalities, reserved=reserved, ignore_fields=ignore_fields)
    items = []
    for row_name, row in rows:
        raw_id = row.get(id_field)
        if _is_absent(raw_id) or isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)):
            raise RowError(source, row_name, id_field, f"missing or invalid id {raw_id!r}")
        label = _label_text(row.get(label_field), source, row_name, label_field)
        items.append(_Item(row_name, str(raw_id).strip(), {k: row.get(k) for k in kinds}, label, label_field))
    res = _resolver(source, base_dir, p.parent, url_map, fetch_urls, fetch_headers, fetch_timeout, verify_images)
    ignored = [f for f in fields if f in ignore_fields]
    has_split = bool(split_field) and split_field in fields
    meta: dict[str, Any] = {"importer": "manifest", "format": fmt, "ignored_fields": ignored,
                            "columns": _columns_meta(kinds, id_field, label_field, split_field if has_split else None,
                                                     ignored)}
    if has_split:
        meta["split_of"] = _split_of(items, {r: row.get(split_field) for r, row in rows}, source, str(split_field))
    return _assemble(items, kinds, res, class_names, as_oracle, meta)


def _columns_meta(kinds: Mapping[str, str], id_field: str, label_field: str, split_field: str | None,
                  ignored: Sequence[str]) -> dict[str, Any]:
    """What run.json records: which column became which modality, which are reserved and which ignored."""
    reserved = {"id": id_field, "label": label_field, **({"split": split_field} if split_field else {})}
    return {"modalities": dict(kinds), "reserved": reserved, "ignored": list(ignored)}


# --------------------------------------------------------------------------------------------- Label Studio
def choices_from_label_config(label_config: str, name: str | None = None) -> dict[str, list[str]] | list[str]:
    """The ``<Choices>`` of a Label Studio labelling config: ``{control name: [choice values]}``, or the
    values of control ``name`` when given (the class names, in the config's order; a choice's ``alias`` when
    it has one, as annotations store it), as :func:`connectors.label_config.read_label_config` reads them."""
    out = {control.name: list(control.choices) for control in read_label_config(label_config)[1]}
    if name is None:
        return out
    if name not in out:
        raise DataError(f"label config has no <Choices name='{name}'>; it has {sorted(out)}")
    return out[name]


def _choices_of(result: list[Any]) -> dict[str, list[str]]:
    """from_name -> chosen values of the ``choices`` results of one annotation."""
    out: dict[str, list[str]] = {}
    for r in result or []:
        if isinstance(r, dict) and r.get("type") == "choices":
            vals = (r.get("value") or {}).get("choices") or []
            out.setdefault(str(r.get("from_name")), []).extend(str(v) for v in vals)
    return out


def load_label_studio_export(source: str | os.PathLike[str] | list[dict[str, Any]], *,
                             modalities: Mapping[str, str] | None = None, from_name: str | None = None,
                             class_names: Sequence[str] | None = None, label_config: str | None = None,
                             on_conflict: str = "latest", base_dir: str | os.PathLike[str] | None = None,
                             url_map: Mapping[str, str] | None = None, fetch_urls: bool = False,
                             fetch_headers: Mapping[str, str] | None = None, fetch_timeout: float = 30.0,
                             verify_images: bool = True, as_oracle: bool = False, split_field: str | None = "split",
                             ignore_fields: Sequence[str] = ()) -> MultimodalDataset:
    """Read a Label Studio JSON export (a list of tasks with ``data``, ``annotations``, ``predictions``).

    Modalities come from each task's ``data`` (``modalities`` maps key -> kind, else every key is one,
    kind inferred as in :func:`load_manifest`; the reserved keys ``id``, ``label`` and ``split_field`` are
    never modalities, other keys are declared, in ``ignore_fields`` or a :class:`ColumnError`). The label is
    the ``choices`` result of control
    ``from_name`` (default: the only choices control used in the export): the ground-truth annotation
    if one is marked, else the most recently updated non-cancelled one. Annotations that disagree are
    listed in ``meta["label_conflicts"]`` (``on_conflict="error"`` makes them an error). Tasks without
    a usable annotation are UNLABELED; predictions are never used as labels. Classes: ``class_names``,
    else the control's ``<Choice>`` values from ``label_config``, else the sorted choices seen.
    Media URLs such as ``/data/upload/...`` or ``/data/local-files/?d=...`` are resolved with
    ``url_map`` (prefix -> local folder, or -> the server URL with ``fetch_urls=True`` and an
    ``Authorization`` header in ``fetch_headers``). Item ids are the task ids.
    """
    if on_conflict not in ("latest", "error"):
        raise DataError(f"on_conflict must be 'latest' or 'error', got {on_conflict!r}")
    if isinstance(source, list):
        tasks, name, default_dir = source, "<label studio export>", Path.cwd()
    else:
        p = Path(source)
        name, default_dir = str(p), p.parent
        try:
            tasks = json.loads(p.read_text(encoding="utf-8-sig"))
        except FileNotFoundError:
            raise DataError(f"Label Studio export not found: {name!r}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError(f"{name}: not a JSON file ({exc})") from None
    if isinstance(tasks, dict):
        tasks = [tasks]
    if not isinstance(tasks, list) or not tasks:
        raise DataError(f"{name}: a Label Studio JSON export is a non-empty list of tasks")

    rows: list[tuple[str, dict[str, Any]]] = []
    for k, task in enumerate(tasks, start=1):
        tid = task.get("id") if isinstance(task, dict) else None
        row = f"task {k}" + (f" (id {tid})" if tid is not None else "")
        if not isinstance(task, dict):
            raise RowError(name, row, None, f"expected a task object, got {type(task).__name__}")
        if not isinstance(task.get("data"), dict):
            raise RowError(name, row, "data", "no 'data' object (a JSON-MIN export? read it with load_manifest)")
        if tid is None or isinstance(tid, bool) or not isinstance(tid, (int, str)):
            raise RowError(name, row, "id", f"missing or invalid task id {tid!r}")
        if not isinstance(task.get("annotations", []), list):
            raise RowError(name, row, "annotations", "must be a list")
        rows.append((row, task))

    used = sorted({fn for _, t in rows for a in t.get("annotations", []) if isinstance(a, dict)
                   for fn in _choices_of(a.get("result", []))})
    if from_name is None:
        if len(used) > 1:
            raise DataError(f"{name}: annotations use several choices controls {used}; pick one with from_name=")
        from_name = used[0] if used else None
    if class_names is None and label_config is not None and from_name is not None:
        class_names = choices_from_label_config(label_config, from_name)  # type: ignore[assignment]

    data_rows = [(r, t["data"]) for r, t in rows]
    fields: list[str] = []
    for _, d in data_rows:
        fields.extend(k for k in d if k not in fields)
    reserved = ["id", "label"] + ([split_field] if split_field else [])
    kinds = plan_columns(data_rows, fields, name, modalities=modalities, reserved=reserved, ignore_fields=ignore_fields)

    items: list[_Item] = []
    conflicts: list[str] = []
    n_cancelled = 0
    for row, task in rows:
        label, label_fld = None, f"annotations/{from_name}"
        candidates = []
        for j, ann in enumerate(task.get("annotations", [])):
            if not isinstance(ann, dict):
                raise RowError(name, row, "annotations", f"annotation {j + 1} is not an object")
            if ann.get("was_cancelled"):
                n_cancelled += 1
                continue
            chosen = _choices_of(ann.get("result", [])).get(str(from_name), [])
            if not chosen:
                continue
            if len(chosen) > 1:
                raise RowError(name, row, label_fld, f"annotation {ann.get('id', j + 1)} has {len(chosen)} choices "
                                                     f"{chosen}; multi-label annotations are not supported")
            candidates.append((bool(ann.get("ground_truth")), str(ann.get("updated_at") or ann.get("created_at") or ""),
                               j, chosen[0]))
        if candidates:
            if len({c[3] for c in candidates}) > 1:
                conflicts.append(str(task["id"]))
                if on_conflict == "error":
                    raise RowError(name, row, label_fld, f"annotations disagree: {sorted({c[3] for c in candidates})}")
            label = max(candidates)[3]  # ground truth first, then latest update, then list order
        items.append(_Item(row, str(task["id"]), {k: task["data"].get(k) for k in kinds}, label, label_fld))
    res = _resolver(name, base_dir, default_dir, url_map, fetch_urls, fetch_headers, fetch_timeout, verify_images)
    ignored = [f for f in fields if f in ignore_fields]
    has_split = bool(split_field) and split_field in fields
    meta: dict[str, Any] = {"importer": "label_studio", "from_name": from_name, "label_conflicts": conflicts,
                            "cancelled_annotations": n_cancelled, "ignored_fields": ignored,
                            "columns": _columns_meta(kinds, "id", f"annotations/{from_name}",
                                                     split_field if has_split else None, ignored)}
    if has_split:
        meta["split_of"] = _split_of(items, {r: d.get(split_field) for r, d in data_rows}, name, str(split_field))
    return _assemble(items, kinds, res, class_names, as_oracle, meta)
