"""The product's query strategies by name: one table, filled by :func:`register`.

The built-in strategy modules register their classes when ``backend.strategies`` is imported (its
``__init__`` imports them), so the table is complete whenever anything from the package is in use. This
module imports no strategy: the interface (:mod:`backend.strategies.base`) and the strategy modules
import it, never the other way round.

Each class says what it is: ``family`` (what it reads) and ``origin`` (where it comes from):

- family ``classic``: the fused prediction or the fused embedding only; ``multimodal``: what a multimodal
  model exposes beyond that (each modality's head, presence masks, reliance on each modality);
- origin ``baseline`` (random), ``literature`` (a published method, cited in the class docstring) or
  ``ours`` (this project's modality-aware strategies, docs/modality_aware.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

from backend.data import QueryError

if TYPE_CHECKING:
    from backend.strategies.base import QueryStrategy

FAMILIES: tuple[str, ...] = ("classic", "multimodal")
ORIGINS: tuple[str, ...] = ("baseline", "literature", "ours")

_REGISTRY: dict[str, type[QueryStrategy]] = {}
S = TypeVar("S", bound="type[QueryStrategy]")


def register(cls: S) -> S:
    """Class decorator: make a strategy available by its ``name`` (it needs a description, family and origin)."""
    if not cls.name or not cls.description:
        raise TypeError(f"{cls.__name__} needs a name and a one-line description")
    if cls.family not in FAMILIES or cls.origin not in ORIGINS:
        raise TypeError(f"{cls.__name__}: family must be one of {FAMILIES} and origin one of {ORIGINS}, "
                        f"got {cls.family!r} and {cls.origin!r}")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise TypeError(f"strategy name '{cls.name}' registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def strategy_class(name: str) -> type[QueryStrategy]:
    """The registered class of strategy ``name`` (its constructor says which settings a spec can set)."""
    if name not in _REGISTRY:
        raise QueryError(f"unknown strategy '{name}'; known: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def list_strategies() -> dict[str, str]:
    """name -> one-line description of every registered strategy."""
    return {k: _REGISTRY[k].description for k in sorted(_REGISTRY)}


def multi_label_strategies() -> list[str]:
    """The names of the registered strategies that have a multi-label form, sorted."""
    return sorted(k for k, cls in _REGISTRY.items() if cls.multi_label)
