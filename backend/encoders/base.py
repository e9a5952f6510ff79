"""The featurizer interface: raw inputs of one modality -> fixed-size numeric arrays.

A featurizer is the *frozen* first stage of encoding (pixels, token ids, pretrained embeddings);
its output is cached on disk per item (see :mod:`backend.encoders.cache`), so it runs once per item
per featurizer instead of once per active-learning round. The trainable per-modality encoders live
inside the fusion model and consume these arrays.

Two properties make the cache safe: :attr:`Featurizer.identity` changes whenever the output could
change (name, version, every output-affecting parameter, and the weights for pretrained models),
and :meth:`Featurizer.content_key` identifies the item by its *content* (a file's bytes, not its
path), so a renamed file is still a hit and an edited file is a miss.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from backend.data import DataError

__all__ = ["Featurizer", "ItemError", "array_key", "file_digest", "stable_hash"]


class ItemError(DataError):
    """One bad item in a batch; ``index`` is its position in the list the featurizer was given.

    Callers that know more (the dataset id, the modality) re-raise it with that context, so the final
    message always names the item.
    """

    def __init__(self, index: int, reason: str) -> None:
        self.index = int(index)
        self.reason = reason
        super().__init__(f"item {self.index}: {reason}")


def undecodable_image(data: bytes, exc: Exception) -> DataError:
    """The error for bytes Pillow cannot open: their size and first bytes (which tell what they are, e.g.
    ``b'%PDF-1.4'``), not Pillow's message, which names an in-memory buffer object."""
    from PIL import UnidentifiedImageError

    why = "unknown image format" if isinstance(exc, UnidentifiedImageError) else f"{type(exc).__name__}: {exc}"
    return DataError(f"not a decodable image ({len(data)} bytes starting {bytes(data[:12])!r}; {why})")


def stable_hash(data: bytes, digest_size: int = 20) -> str:
    """Hex blake2b of ``data``: stable across processes and machines (unlike Python's ``hash()``)."""
    return hashlib.blake2b(data, digest_size=digest_size).hexdigest()


def array_key(arr: np.ndarray) -> bytes:
    """Content bytes of an array: dtype + shape + raw data, so equal arrays (and only they) share a key."""
    a = np.ascontiguousarray(arr)
    if a.dtype == object:
        raise DataError("an object array has no stable content bytes")
    return b"array:" + a.dtype.str.encode() + b":" + repr(tuple(a.shape)).encode() + b":" + a.tobytes()


_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_digest(path: str | os.PathLike[str]) -> str:
    """blake2b of a file's bytes (memoised by path, size and mtime): the weights hash of pretrained featurizers."""
    p = Path(path)
    st = p.stat()
    memo = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if memo not in _DIGESTS:
        h = hashlib.blake2b(digest_size=20)
        with p.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        _DIGESTS[memo] = h.hexdigest()
    return _DIGESTS[memo]


class Featurizer(ABC):
    """Turns a batch of raw items of one modality into an array of shape ``(n, *output_shape)``.

    Subclasses set ``name`` (registry name), ``kind`` (modality kind: ``vector``, ``image``, ``text``),
    ``version`` (bump it whenever the algorithm changes) and ``description``, and implement
    :meth:`config`, :attr:`output_shape`, :attr:`dtype` and :meth:`featurize`. Pretrained featurizers
    also override :meth:`weights_hash` (see :func:`file_digest`).
    """

    name: ClassVar[str] = ""
    kind: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    description: ClassVar[str] = ""
    cacheable: ClassVar[bool] = True
    """False for featurizers cheaper than a disk read (e.g. ``vector``): the cache then computes directly."""

    # --- what subclasses provide -------------------------------------------------------------
    @abstractmethod
    def config(self) -> dict[str, Any]:
        """Every parameter that can change the output (JSON-serialisable); part of :attr:`identity`."""

    @property
    @abstractmethod
    def output_shape(self) -> tuple[int, ...]:
        """Shape of one item's features (without the batch axis)."""

    @property
    @abstractmethod
    def dtype(self) -> np.dtype:
        """dtype of the features (float32 for vectors and images, int64 for token ids)."""

    @abstractmethod
    def featurize(self, items: list[Any]) -> np.ndarray:
        """Encode a batch: ``(len(items), *output_shape)`` of :attr:`dtype`.

        A bad item raises :class:`ItemError` with its position in ``items``.
        """

    # --- defaults ----------------------------------------------------------------------------
    def weights_hash(self) -> str | None:
        """Hash of the model weights for pretrained featurizers (None when there are none)."""
        return None

    @property
    def vocab_size(self) -> int | None:
        """Number of token ids (0 = padding) for token featurizers; None for dense features."""
        return None

    def content_key(self, item: Any) -> bytes:
        """Bytes whose hash identifies the item's content (arrays: dtype+shape+data; text: utf-8;
        ``bytes``: themselves; ``pathlib.Path``: the file's bytes). Raises DataError when it has none."""
        if isinstance(item, np.ndarray):
            return array_key(item)
        if isinstance(item, (bytes, bytearray, memoryview)):
            return b"bytes:" + bytes(item)
        if isinstance(item, str):
            return b"text:" + item.encode("utf-8")
        if isinstance(item, Path):
            return b"bytes:" + _read_file(item)
        if isinstance(item, (list, tuple)) or np.isscalar(item):
            try:
                return array_key(np.asarray(item))
            except (DataError, ValueError) as exc:
                raise DataError(f"no content key for a {type(item).__name__}: {exc}") from exc
        raise DataError(f"{self.name}: cannot identify the content of a {type(item).__name__}")

    def is_absent(self, item: Any) -> bool:
        """True for values that mean "this modality is missing": None, NaN, empty or blank strings,
        empty bytes and empty arrays. Absent items are never encoded; their mask is set False."""
        if item is None:
            return True
        if isinstance(item, float) and math.isnan(item):
            return True
        if isinstance(item, str):
            return item.strip() == ""
        if isinstance(item, (bytes, bytearray, memoryview)):
            return len(item) == 0
        if isinstance(item, (np.ndarray, list, tuple)):
            return len(item) == 0
        return False

    def bind(self, items: list[Any]) -> "Featurizer":
        """Resolve data-dependent parameters (e.g. an inferred dimension) before :attr:`identity` is used.

        Returns a featurizer whose config is complete; the default has nothing to resolve.
        """
        return self

    # --- derived -----------------------------------------------------------------------------
    @property
    def identity(self) -> str:
        """Stable string naming exactly this output: ``name@version:config-hash[:w=weights-hash]``."""
        cfg = json.dumps(self.config(), sort_keys=True, separators=(",", ":"), default=str)
        ident = f"{self.name}@{self.version}:{stable_hash(cfg.encode(), 8)}"
        weights = self.weights_hash()
        return ident if weights is None else f"{ident}:w={weights[:16]}"

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({params})"


def _read_file(path: str | os.PathLike[str]) -> bytes:
    """A file's bytes, or a DataError that names the path."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise DataError(f"file not found: {str(path)!r}") from None
    except IsADirectoryError:
        raise DataError(f"path is a directory, not a file: {str(path)!r}") from None
    except OSError as exc:
        raise DataError(f"cannot read {str(path)!r}: {exc}") from exc
