"""Featurizers by name, so configs, the CLI and the server can name them as strings.

Built-ins (``vector``, ``image_pixels``, ``text_tokens``) live in :mod:`backend.encoders.builtin`;
pretrained ones (MiniLM, EfficientNet) register the same way from :mod:`backend.encoders.pretrained`
when that module exists. Modules are imported lazily so that listing featurizers never loads torch.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from typing import Any, TypeVar

from backend.data import DataError
from backend.encoders.base import Featurizer

__all__ = ["register_featurizer", "get_featurizer", "list_featurizers", "featurizer_class"]

_REGISTRY: dict[str, type[Featurizer]] = {}
F = TypeVar("F", bound=type[Featurizer])

# modules whose import registers featurizers; the optional ones may be absent or fail to import
_BUILTIN = "backend.encoders.builtin"
_OPTIONAL = ("backend.encoders.pretrained",)
_loaded = False
log = logging.getLogger(__name__)


def register_featurizer(cls: F) -> F:
    """Class decorator: make a featurizer available by its ``name`` (unique) under its ``kind``."""
    if not cls.name or not cls.kind or not cls.description:
        raise TypeError(f"{cls.__name__} needs a name, a kind and a one-line description")
    other = _REGISTRY.get(cls.name)
    if other is not None and other.__qualname__ != cls.__qualname__:
        raise TypeError(f"featurizer name '{cls.name}' registered twice ({other.__qualname__}, {cls.__qualname__})")
    _REGISTRY[cls.name] = cls
    return cls


def _load_builtin() -> None:
    global _loaded
    if _loaded:
        return
    importlib.import_module(_BUILTIN)
    for mod in _OPTIONAL:
        if importlib.util.find_spec(mod) is None:
            continue
        try:
            importlib.import_module(mod)
        except ImportError as exc:  # e.g. an optional model package is not installed
            log.warning("featurizers in %s unavailable: %s", mod, exc)
    _loaded = True


def featurizer_class(name: str) -> type[Featurizer]:
    """The registered class for ``name``; unknown names list the known ones."""
    _load_builtin()
    if name not in _REGISTRY:
        raise DataError(f"unknown featurizer '{name}'; known: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def get_featurizer(name: str, **params: Any) -> Featurizer:
    """Instantiate a registered featurizer by name; bad parameters raise DataError naming the featurizer."""
    cls = featurizer_class(name)
    try:
        return cls(**params)
    except TypeError as exc:
        raise DataError(f"featurizer '{name}': bad parameters {sorted(params)}: {exc}") from exc


def list_featurizers(kind: str | None = None) -> dict[str, str]:
    """name -> "kind: description" of every registered featurizer (optionally only one modality kind)."""
    _load_builtin()
    return {k: f"{c.kind}: {c.description}" for k, c in sorted(_REGISTRY.items()) if kind is None or c.kind == kind}
