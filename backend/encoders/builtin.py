"""Built-in featurizers that need no pretrained weights.

- ``vector``: validated float32 vectors of a fixed dimension (tabular / precomputed features).
- ``image_pixels``: RGB pixels resized to ``size x size``, float32 (3, H, W) in [-1, 1], for a small CNN.
- ``text_tokens``: hashed word-token ids, int64 (max_len,), 0 = padding, for a bag-of-embeddings encoder.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import re
import urllib.parse
from typing import Any

import numpy as np

from backend.data import DataError
from backend.encoders.base import Featurizer, ItemError, _read_file, array_key, stable_hash, undecodable_image
from backend.encoders.registry import register_featurizer

__all__ = ["VectorFeaturizer", "ImagePixels", "TextTokens", "decode_data_url", "tokenize"]


# --------------------------------------------------------------------------------------------- vector
@register_featurizer
class VectorFeaturizer(Featurizer):
    """Identity on fixed-length numeric vectors: checks the length and finiteness, casts to float32."""

    name = "vector"
    kind = "vector"
    description = "fixed-length numeric vectors, validated (length, finite) and cast to float32"
    cacheable = False  # cheaper than a disk read

    def __init__(self, *, dim: int | None = None) -> None:
        if dim is not None and (not isinstance(dim, (int, np.integer)) or dim <= 0):
            raise DataError(f"vector: dim must be a positive int, got {dim!r}")
        self.dim = None if dim is None else int(dim)

    def config(self) -> dict[str, Any]:
        return {"dim": self.dim}

    @property
    def output_shape(self) -> tuple[int, ...]:
        if self.dim is None:
            raise DataError("vector: dim is unknown; pass dim= or bind() the featurizer to data first")
        return (self.dim,)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.float32)

    def bind(self, items: list[Any]) -> "VectorFeaturizer":
        """With ``dim=None``, take the dimension from the first item (the others are checked against it)."""
        if self.dim is not None or not items:
            return self
        first = np.asarray(items[0])
        if first.ndim != 1 or first.shape[0] == 0:
            raise ItemError(0, f"expected a non-empty 1-d vector, got shape {first.shape}")
        return VectorFeaturizer(dim=first.shape[0])

    def featurize(self, items: list[Any]) -> np.ndarray:
        (d,) = self.output_shape
        with np.errstate(over="ignore", invalid="ignore"):  # overflow shows up as inf, reported below
            try:  # fast path: a well-formed batch converts in one go
                out = np.asarray(items, dtype=np.float32)
                ok = out.shape == (len(items), d)
            except (ValueError, TypeError):
                ok = False
            if not ok:
                out = np.empty((len(items), d), dtype=np.float32)
                for i, item in enumerate(items):
                    try:
                        row = np.asarray(item, dtype=np.float32)
                    except (ValueError, TypeError) as exc:
                        raise ItemError(i, f"not a numeric vector ({exc})") from None
                    if row.shape != (d,):
                        raise ItemError(i, f"expected a vector of length {d}, got shape {row.shape}")
                    out[i] = row
        finite = np.isfinite(out).all(axis=1)
        if not finite.all():
            i = int(np.flatnonzero(~finite)[0])
            raise ItemError(i, "has non-finite values (NaN or inf, or too large for float32)")
        return out


# --------------------------------------------------------------------------------------------- images
def decode_data_url(url: str) -> bytes:
    """The payload of a ``data:[<mediatype>][;base64],<data>`` URL (base64 or percent-encoded)."""
    head, sep, data = url.partition(",")
    if not sep or not head.startswith("data:"):
        raise DataError("malformed data: URL (no comma)")
    if head.endswith(";base64"):
        try:
            return base64.b64decode("".join(data.split()), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise DataError(f"data: URL has invalid base64 ({exc})") from None
    return urllib.parse.unquote_to_bytes(data)


@register_featurizer
class ImagePixels(Featurizer):
    """Decode any image input with Pillow, composite transparency on a background, resize, scale to [-1, 1].

    Accepts a file path (``str`` or ``Path``), encoded bytes, a ``data:`` URL (base64), a PIL image,
    or a uint8 array of shape (H, W), (H, W, 3) or (H, W, 4).
    """

    name = "image_pixels"
    kind = "image"
    description = "RGB pixels resized to size x size, float32 (3, H, W) in [-1, 1] (for a small CNN)"

    def __init__(self, *, size: int = 32, background: tuple[int, int, int] | list[int] = (255, 255, 255)) -> None:
        if not isinstance(size, (int, np.integer)) or not 1 <= size <= 4096:
            raise DataError(f"image_pixels: size must be an int in 1..4096, got {size!r}")
        bg = tuple(int(c) for c in background)
        if len(bg) != 3 or not all(0 <= c <= 255 for c in bg):
            raise DataError(f"image_pixels: background must be 3 ints in 0..255, got {background!r}")
        self.size = int(size)
        self.background = bg

    def config(self) -> dict[str, Any]:
        import PIL

        # Pillow's version is part of the output: its resampling code can change between releases
        return {"size": self.size, "background": list(self.background), "resample": "bilinear",
                "pillow": PIL.__version__}

    @property
    def output_shape(self) -> tuple[int, ...]:
        return (3, self.size, self.size)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.float32)

    def _encoded_bytes(self, item: Any) -> bytes | None:
        """The encoded file bytes behind a path / bytes / data: URL item; None for in-memory images."""
        if isinstance(item, (bytes, bytearray, memoryview)):
            return bytes(item)
        if isinstance(item, str):
            if item.startswith("data:"):
                return decode_data_url(item)
            if re.match(r"^[a-z][a-z0-9+.-]*://", item, flags=re.I) and not item.lower().startswith("file://"):
                raise DataError(f"remote URL {item[:80]!r} is not supported here; download it first")
            if item.lower().startswith("file://"):
                item = urllib.parse.unquote(urllib.parse.urlparse(item).path)
            return _read_file(item)
        if isinstance(item, os.PathLike):
            return _read_file(item)
        return None

    def content_key(self, item: Any) -> bytes:
        """Encoded inputs (path, bytes, data: URL) are keyed by the file bytes, so all three share an entry."""
        data = self._encoded_bytes(item)
        if data is not None:
            return b"encoded:" + data
        from PIL import Image

        if isinstance(item, Image.Image):
            return b"pil:" + item.mode.encode() + repr(item.size).encode() + b":" + item.tobytes()
        if isinstance(item, np.ndarray):
            return array_key(item)
        raise DataError(f"image_pixels: cannot read an image from a {type(item).__name__}")

    def _to_pil(self, item: Any) -> Any:
        from PIL import Image

        if isinstance(item, Image.Image):
            return item
        if isinstance(item, np.ndarray):
            if item.dtype != np.uint8:
                raise DataError(f"image arrays must be uint8 (H, W[, 3|4]), got dtype {item.dtype}")
            if item.ndim == 2 or (item.ndim == 3 and item.shape[2] in (3, 4)):
                return Image.fromarray(np.ascontiguousarray(item))
            raise DataError(f"image arrays must have shape (H, W), (H, W, 3) or (H, W, 4), got {item.shape}")
        data = self._encoded_bytes(item)
        if data is None:
            raise DataError(f"cannot read an image from a {type(item).__name__}")
        try:
            img = Image.open(io.BytesIO(data))
            img.draft("RGB", (self.size, self.size))  # JPEG: decode at reduced scale, much faster
            img.load()
        except Image.DecompressionBombError as exc:
            raise DataError(f"image too large ({exc})") from None
        except Exception as exc:  # Pillow raises many types for undecodable data
            raise undecodable_image(data, exc) from None
        return img

    def _pixels(self, img: Any) -> np.ndarray:
        from PIL import Image

        if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
            rgba = img.convert("RGBA")
            canvas = Image.new("RGBA", rgba.size, self.background + (255,))
            img = Image.alpha_composite(canvas, rgba)
        img = img.convert("RGB")
        if img.size != (self.size, self.size):
            img = img.resize((self.size, self.size), Image.Resampling.BILINEAR)
        arr = np.asarray(img, dtype=np.float32)  # (H, W, 3) in 0..255
        return arr.transpose(2, 0, 1) / np.float32(127.5) - np.float32(1.0)

    def featurize(self, items: list[Any]) -> np.ndarray:
        out = np.empty((len(items), *self.output_shape), dtype=np.float32)
        for i, item in enumerate(items):
            try:
                out[i] = self._pixels(self._to_pil(item))
            except ItemError:
                raise
            except DataError as exc:
                raise ItemError(i, str(exc)) from None
        return out


# --------------------------------------------------------------------------------------------- text
_TOKEN_RE = re.compile(r"\w+|[^\w\s]")


def tokenize(text: str, lowercase: bool = True) -> list[str]:
    """Word tokens (unicode ``\\w+``) plus single symbols (punctuation, emoji), optionally lowercased."""
    return _TOKEN_RE.findall(text.lower() if lowercase else text)


@register_featurizer
class TextTokens(Featurizer):
    """Hash each token into ``vocab_size - 1`` buckets (ids 1..vocab_size-1; 0 = padding) with blake2b.

    A stable hash (not Python's salted ``hash()``) keeps ids identical across processes and machines,
    so cached features and trained embedding tables stay valid. Texts are truncated to ``max_len``
    tokens and right-padded with 0.
    """

    name = "text_tokens"
    kind = "text"
    description = "hashed word-token ids, int64 (max_len,), 0 = padding (for a bag-of-embeddings encoder)"
    cacheable = False  # hashing (~5 us/item) is cheaper than reading a cache entry (~15 us/item)

    def __init__(self, *, vocab_size: int = 2**15, max_len: int = 32, lowercase: bool = True) -> None:
        if not isinstance(vocab_size, (int, np.integer)) or vocab_size < 2:
            raise DataError(f"text_tokens: vocab_size must be an int >= 2, got {vocab_size!r}")
        if not isinstance(max_len, (int, np.integer)) or max_len < 1:
            raise DataError(f"text_tokens: max_len must be a positive int, got {max_len!r}")
        self._vocab_size = int(vocab_size)
        self.max_len = int(max_len)
        self.lowercase = bool(lowercase)
        self._memo: dict[str, int] = {}

    def config(self) -> dict[str, Any]:
        return {"vocab_size": self._vocab_size, "max_len": self.max_len, "lowercase": self.lowercase,
                "token_re": _TOKEN_RE.pattern, "hash": "blake2b-8"}

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    @property
    def output_shape(self) -> tuple[int, ...]:
        return (self.max_len,)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.int64)

    def token_id(self, token: str) -> int:
        """Stable id in 1..vocab_size-1 of one token."""
        tid = self._memo.get(token)
        if tid is None:
            h = int(stable_hash(token.encode("utf-8"), 8), 16)
            tid = 1 + h % (self._vocab_size - 1)
            if len(self._memo) < 1_000_000:
                self._memo[token] = tid
        return tid

    def content_key(self, item: Any) -> bytes:
        if not isinstance(item, str):
            raise DataError(f"text_tokens: expected a str, got {type(item).__name__}")
        return b"text:" + item.encode("utf-8")

    def featurize(self, items: list[Any]) -> np.ndarray:
        out = np.zeros((len(items), self.max_len), dtype=np.int64)
        for i, item in enumerate(items):
            if not isinstance(item, str):
                raise ItemError(i, f"expected a str, got {type(item).__name__}")
            ids = [self.token_id(t) for t in tokenize(item, self.lowercase)[: self.max_len]]
            out[i, : len(ids)] = ids
        return out

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_memo"] = {}  # keep pickles (rq jobs) small
        return state

