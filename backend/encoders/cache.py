"""On-disk feature cache: each item is featurized once per featurizer, not once per round.

Layout::

    root/<identity-hash>/identity.json            # the featurizer identity and config, for humans
    root/<identity-hash>/<2 hex>/<item-hash>.feat  # one entry per item

``<item-hash>`` is blake2b of :meth:`Featurizer.content_key` (a file's bytes, not its path). An entry is
``MAGIC | u32 header length | JSON header | payload``; the header records the item hash, dtype, shape,
payload length and a blake2b checksum of the payload. Loading verifies all of them: a corrupted entry
(flipped byte, truncated file, foreign file) is logged as a warning and recomputed, never returned.
Writes go to a temp file in the same directory followed by ``os.replace``, so concurrent workers only
ever see complete entries (two workers computing the same miss both write the same bytes).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from backend.data import DataError
from backend.encoders.base import Featurizer, ItemError, stable_hash
from backend.files import write_atomic

__all__ = ["FeatureCache", "CacheStats", "compute_batched"]

log = logging.getLogger(__name__)

MAGIC = b"MMALFC1\n"
_LEN = struct.Struct("<I")
SUFFIX = ".feat"


@dataclass
class CacheStats:
    """Counters since creation (or :meth:`FeatureCache.reset_stats`): entries served, computed, repaired."""

    hits: int = 0
    misses: int = 0
    corrupted: int = 0
    writes: int = 0


def compute_batched(featurizer: Featurizer, items: list[Any], batch_size: int = 256,
                    on_progress: Callable[[int], None] | None = None) -> np.ndarray:
    """Featurize ``items`` in batches, checking each batch's shape and dtype (catches buggy featurizers).

    An :class:`ItemError` from a batch is re-raised with the item's position in ``items``.
    """
    if batch_size <= 0:
        raise DataError(f"batch_size must be positive, got {batch_size}")
    shape, dtype = tuple(featurizer.output_shape), np.dtype(featurizer.dtype)
    out = np.empty((len(items), *shape), dtype=dtype)
    for start in range(0, len(items), batch_size):
        batch = items[start:start + batch_size]
        try:
            feats = featurizer.featurize(batch)
        except ItemError as exc:
            raise ItemError(start + exc.index, exc.reason) from None
        feats = np.asarray(feats)
        if feats.shape != (len(batch), *shape):
            raise RuntimeError(f"featurizer {featurizer.name} returned shape {feats.shape}, "
                               f"expected {(len(batch), *shape)}")
        out[start:start + len(batch)] = feats.astype(dtype, copy=False)
        if on_progress is not None:
            on_progress(len(batch))
    return out


class FeatureCache:
    """Content-addressed store of featurizer outputs under ``root`` (created on first write)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.stats = CacheStats()

    def reset_stats(self) -> None:
        """Zero the hit/miss counters (e.g. between rounds, to report per-round figures)."""
        self.stats = CacheStats()

    # --- paths ---------------------------------------------------------------------------------
    def featurizer_dir(self, featurizer: Featurizer) -> Path:
        """Directory holding every entry of this featurizer identity."""
        return self.root / stable_hash(featurizer.identity.encode(), 16)

    def item_hash(self, featurizer: Featurizer, item: Any) -> str:
        """blake2b hex of the item's content key."""
        return hashlib.blake2b(featurizer.content_key(item), digest_size=20).hexdigest()

    def entry_path(self, featurizer: Featurizer, key: str) -> Path:
        """Where the entry of item hash ``key`` lives."""
        return self.featurizer_dir(featurizer) / key[:2] / f"{key}{SUFFIX}"

    # --- public API ----------------------------------------------------------------------------
    def get(self, featurizer: Featurizer, item: Any) -> np.ndarray:
        """Features of one item (computed and stored on a miss)."""
        return self.get_many(featurizer, [item], batch_size=1)[0]

    def get_many(self, featurizer: Featurizer, items: list[Any], batch_size: int = 256,
                 on_progress: Callable[[int], None] | None = None) -> np.ndarray:
        """``(len(items), *output_shape)`` features: hits are read from disk, only misses are computed
        (in batches of ``batch_size``, each distinct content once) and then stored.

        ``on_progress(k)`` is called as k more items are done. A bad item raises :class:`ItemError`
        with its position in ``items``. Featurizers with ``cacheable = False`` are computed directly.
        """
        items = list(items)
        if not featurizer.cacheable:
            return compute_batched(featurizer, items, batch_size, on_progress)
        shape, dtype = tuple(featurizer.output_shape), np.dtype(featurizer.dtype)
        out = np.empty((len(items), *shape), dtype=dtype)
        fdir = self.featurizer_dir(featurizer)
        keys: list[str] = []
        for i, item in enumerate(items):
            try:
                keys.append(self.item_hash(featurizer, item))
            except ItemError:
                raise
            except DataError as exc:
                raise ItemError(i, str(exc)) from None

        # read hits; group misses by content so duplicates are computed once
        missing: dict[str, list[int]] = {}
        hits = 0
        for i, key in enumerate(keys):
            if key in missing:
                missing[key].append(i)
                continue
            value = self._load(fdir / key[:2] / f"{key}{SUFFIX}", key, shape, dtype)
            if value is None:
                missing[key] = [i]
            else:
                out[i] = value
                hits += 1
        self.stats.hits += hits
        if on_progress is not None and hits:
            on_progress(hits)

        if missing:
            self._write_identity(fdir, featurizer)
            miss_keys = list(missing)
            first = [missing[k][0] for k in miss_keys]
            computed_done = 0

            def progress(k: int) -> None:
                nonlocal computed_done
                done_keys = miss_keys[computed_done:computed_done + k]
                computed_done += k
                if on_progress is not None:
                    on_progress(sum(len(missing[key]) for key in done_keys))

            try:
                feats = compute_batched(featurizer, [items[i] for i in first], batch_size, progress)
            except ItemError as exc:
                raise ItemError(first[exc.index], exc.reason) from None
            for j, key in enumerate(miss_keys):
                out[missing[key]] = feats[j]
                self._store(fdir / key[:2] / f"{key}{SUFFIX}", key, feats[j])
            self.stats.misses += sum(len(v) for v in missing.values())
        return out

    # --- entries -------------------------------------------------------------------------------
    def _load(self, path: Path, key: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray | None:
        """The verified payload of an entry, or None when absent or corrupted (the latter is logged)."""
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            return self._corrupt(path, f"unreadable ({exc})")
        if not blob.startswith(MAGIC) or len(blob) < len(MAGIC) + _LEN.size:
            return self._corrupt(path, "bad magic or truncated header")
        (hlen,) = _LEN.unpack_from(blob, len(MAGIC))
        start = len(MAGIC) + _LEN.size
        if start + hlen > len(blob):
            return self._corrupt(path, "truncated header")
        try:
            header = json.loads(blob[start:start + hlen].decode("utf-8"))
            payload = blob[start + hlen:]
            if header["key"] != key:
                return self._corrupt(path, "entry belongs to another item")
            if np.dtype(header["dtype"]) != dtype or tuple(header["shape"]) != shape:
                return self._corrupt(path, f"dtype/shape {header['dtype']}{header['shape']} != {dtype.str}{list(shape)}")
            if len(payload) != int(header["nbytes"]):
                return self._corrupt(path, f"payload has {len(payload)} bytes, header says {header['nbytes']}")
            if hashlib.blake2b(payload, digest_size=20).hexdigest() != header["checksum"]:
                return self._corrupt(path, "checksum mismatch")
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            return self._corrupt(path, f"unreadable header ({type(exc).__name__})")
        return np.frombuffer(payload, dtype=dtype).reshape(shape)

    def _corrupt(self, path: Path, why: str) -> None:
        self.stats.corrupted += 1
        log.warning("feature cache: corrupted entry %s (%s); recomputing", path, why)
        return None

    def _store(self, path: Path, key: str, value: np.ndarray) -> None:
        """Write an entry atomically: temp file in the same directory, then ``os.replace``."""
        payload = np.ascontiguousarray(value).tobytes()
        header = json.dumps({"key": key, "dtype": value.dtype.str, "shape": list(value.shape), "nbytes": len(payload),
                             "checksum": hashlib.blake2b(payload, digest_size=20).hexdigest()}).encode()
        write_atomic(path, MAGIC + _LEN.pack(len(header)) + header + payload, fsync=False)
        self.stats.writes += 1

    def _write_identity(self, fdir: Path, featurizer: Featurizer) -> None:
        path = fdir / "identity.json"
        if path.exists():
            return
        info = {"identity": featurizer.identity, "name": featurizer.name, "version": featurizer.version,
                "config": featurizer.config(), "output_shape": list(featurizer.output_shape),
                "dtype": np.dtype(featurizer.dtype).str}
        write_atomic(path, json.dumps(info, indent=2, default=str).encode(), fsync=False)
