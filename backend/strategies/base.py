"""The query-strategy interface and the registry by name.

One typed method, in the spirit of small-text: given the trained model, the dataset and the pool,
return ``n`` indices into the *full* dataset, best first. Strategies that rank items by a score also
expose it (higher = query sooner) so the Label Studio server can order every task, not only a batch.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable, ClassVar, TypeVar

import numpy as np

from backend.data import DataError, MultimodalDataset, Pool
from backend.models.api import ActiveModel


class QueryError(DataError):
    """A query that cannot be answered (empty pool, n too large, unknown strategy)."""


@dataclass
class QueryResult:
    """``indices``: (n,) dataset indices, best first. ``scores``: (len(scored),) per-item priority of
    ``scored`` (dataset indices; higher = query sooner) or None when the strategy has no per-item score."""

    indices: np.ndarray
    scores: np.ndarray | None = None
    scored: np.ndarray | None = None


class QueryStrategy(ABC):
    """Selects items to label next. Subclasses set ``name`` and ``description`` and implement ``select``.

    ``multi_label``: the strategy has a defined form for multi-label models (per-class sigmoid
    probabilities, ``model.multi_label``); the others refuse such a model with a :class:`QueryError`
    naming the strategy instead of reading sigmoids as a distribution.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    multi_label: ClassVar[bool] = False

    def query(self, model: ActiveModel, dataset: MultimodalDataset, pool: Pool, n: int, *, seed: int = 0) -> QueryResult:
        """Validate the request, then delegate to :meth:`select`. Returns exactly ``n`` unique unlabelled indices."""
        if pool.size != len(dataset):
            raise QueryError(f"pool covers {pool.size} items but the dataset has {len(dataset)}")
        if n <= 0:
            raise QueryError(f"n must be positive, got {n}")
        if pool.unlabeled.size == 0:
            raise QueryError("the unlabelled pool is empty: nothing left to query")
        if n > pool.unlabeled.size:
            raise QueryError(f"asked for {n} items but only {pool.unlabeled.size} are unlabelled")
        check_multi_label(self, model)
        result = self.select(model, dataset, pool, n, seed=seed)
        idx = np.asarray(result.indices, dtype=np.int64)
        if idx.shape != (n,) or np.unique(idx).size != n or not np.isin(idx, pool.unlabeled).all():
            raise AssertionError(f"strategy {self.name} returned an invalid selection")  # a bug, not bad input
        result.indices = idx
        return result

    @abstractmethod
    def select(self, model: ActiveModel, dataset: MultimodalDataset, pool: Pool, n: int, *, seed: int) -> QueryResult:
        """Pick ``n`` items from ``pool.unlabeled`` (already validated: 0 < n <= len(pool.unlabeled))."""


def is_multi_label(model: ActiveModel) -> bool:
    """True for a model of label sets (per-class sigmoids)."""
    return bool(getattr(model, "multi_label", False))


def check_multi_label(strategy: QueryStrategy, model: ActiveModel) -> None:
    """Refuse a multi-label model for a strategy without a multi-label form (see :func:`require_multi_label`)."""
    if is_multi_label(model):
        require_multi_label(strategy)


def require_multi_label(strategy: QueryStrategy) -> None:
    """QueryError naming ``strategy`` (and those that have one) unless it has a multi-label form."""
    if not strategy.multi_label:
        _load_builtin()
        ok = sorted(k for k, cls in _REGISTRY.items() if cls.multi_label)
        raise QueryError(f"strategy '{strategy.name}' has no multi-label form (its formula reads one class per "
                         f"item); for multi-label projects use one of: {', '.join(ok)}")


class ScoringStrategy(QueryStrategy):
    """A strategy that ranks items independently by a score: top-``n`` with index tie-breaking."""

    @abstractmethod
    def score(self, model: ActiveModel, dataset: MultimodalDataset, pool: Pool, *, seed: int) -> np.ndarray:
        """(len(pool.unlabeled),) float64 priorities of ``pool.unlabeled`` (higher = query sooner)."""

    def select(self, model: ActiveModel, dataset: MultimodalDataset, pool: Pool, n: int, *, seed: int) -> QueryResult:
        scores = np.asarray(self.score(model, dataset, pool, seed=seed), dtype=np.float64)
        order = np.lexsort((pool.unlabeled, -scores))  # descending score, then ascending index
        return QueryResult(pool.unlabeled[order[:n]], scores, pool.unlabeled)


_REGISTRY: dict[str, type[QueryStrategy]] = {}
S = TypeVar("S", bound=type[QueryStrategy])


def register(cls: S) -> S:
    """Class decorator: make a strategy available by its ``name``."""
    if not cls.name or not cls.description:
        raise TypeError(f"{cls.__name__} needs a name and a one-line description")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise TypeError(f"strategy name '{cls.name}' registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def _load_builtin() -> None:
    # importing the modules registers their strategies
    from backend.strategies import classic, diversity, multimodal, modality_aware  # noqa: F401


def parse_strategy_spec(spec: str) -> tuple[str, dict[str, object]]:
    """``"name"`` or ``"name(key=value, ...)"`` -> (name, params): a strategy with settings as one string,
    so a benchmark can compare variants of one strategy (an ablation) by name.

    Values are read as JSON (``0.25``, ``null``, ``false``, ``"auto"``) or else taken as plain strings
    (``auto``). Keys must be identifiers and may not repeat.
    """
    import json

    spec = spec.strip()
    if "(" not in spec:
        return spec, {}
    name, _, rest = spec.partition("(")
    name = name.strip()
    if not rest.endswith(")") or not name:
        raise QueryError(f"strategy spec {spec!r}: expected name(key=value, ...)")
    params: dict[str, object] = {}
    body = rest[:-1].strip()
    for part in (body.split(",") if body else []):
        key, sep, raw = part.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise QueryError(f"strategy spec {spec!r}: {part.strip()!r} is not key=value")
        if key in params:
            raise QueryError(f"strategy spec {spec!r}: {key} given twice")
        try:
            params[key] = json.loads(raw)
        except ValueError:
            params[key] = raw.strip()
    return name, params


def get_strategy(name: str, **params: object) -> QueryStrategy:
    """Instantiate a registered strategy by name, or by a spec ``name(key=value, ...)``
    (:func:`parse_strategy_spec`; explicit ``params`` win); unknown names list the known ones."""
    _load_builtin()
    base, spec_params = parse_strategy_spec(name)
    if base not in _REGISTRY:
        raise QueryError(f"unknown strategy '{base}'; known: {', '.join(sorted(_REGISTRY))}")
    if not spec_params:
        return _REGISTRY[base](**params)
    try:
        return _REGISTRY[base](**{**spec_params, **params})
    except TypeError as e:
        raise QueryError(f"strategy spec {name!r}: {e}") from None


def strategy_class(name: str) -> type[QueryStrategy]:
    """The registered class of strategy ``name`` (its constructor says which settings a spec can set)."""
    _load_builtin()
    if name not in _REGISTRY:
        raise QueryError(f"unknown strategy '{name}'; known: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def list_strategies() -> dict[str, str]:
    """name -> one-line description of every registered strategy."""
    _load_builtin()
    return {k: _REGISTRY[k].description for k in sorted(_REGISTRY)}


StrategyFactory = Callable[..., QueryStrategy]
