"""A query strategy by name with its settings, parsed and checked once: :class:`StrategySpec`.

Every way in takes the same grammar and the same checks: ``MMAL_STRATEGY`` / ``MMAL_STRATEGY_PARAMS``
and a project's extra params (``ml_server.settings``), ``mmal benchmark run --strategies`` and the named
suites (``benchmark.suites``). ``"name"`` or ``"name(key=value, ...)"``: a strategy with settings as one
string, so a benchmark can compare variants of one strategy (an ablation) by name. Values are read as
JSON (``0.25``, ``null``, ``false``, ``"auto"``) or else taken as plain strings (``auto``); keys must be
identifiers and may not repeat. The name must be registered (:mod:`backend.strategies.registry`) and
the settings must be accepted by its constructor: a spec is checked by building the strategy once.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from backend.data import QueryError
from backend.strategies.base import QueryStrategy
from backend.strategies.registry import strategy_class


def split_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``"name(key=value, ...)"`` -> (name, params), the grammar alone (no registry look-up)."""
    spec = spec.strip()
    if "(" not in spec:
        return spec, {}
    name, _, rest = spec.partition("(")
    name = name.strip()
    if not rest.endswith(")") or not name:
        raise QueryError(f"strategy spec {spec!r}: expected name(key=value, ...)")
    params: dict[str, Any] = {}
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


def _build(name: str, params: dict[str, Any], text: str | None) -> QueryStrategy:
    """An instance of registered strategy ``name``; a constructor's refusal of settings written in the spec
    ``text`` is a QueryError naming the spec (settings given apart from a spec keep their TypeError)."""
    cls = strategy_class(name)
    if text is None:
        return cls(**params)
    try:
        return cls(**params)
    except TypeError as e:
        raise QueryError(f"strategy spec {text!r}: {e}") from None


class StrategySpec(BaseModel):
    """A registered strategy's ``name`` and the ``params`` its constructor gets, checked on creation.

    ``StrategySpec.parse("reducible_margin(quota=0)")`` or, inside a pydantic model, a plain string
    field value; :meth:`build` makes a fresh strategy object (strategies keep per-query ``info``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, value: Any) -> Any:
        if isinstance(value, str):
            name, params = split_spec(value)
            return {"name": name, "params": params}
        return value

    @model_validator(mode="after")
    def _check(self) -> "StrategySpec":
        _build(self.name, dict(self.params), str(self) if self.params else None)
        return self

    @classmethod
    def parse(cls, spec: "str | StrategySpec", **params: Any) -> "StrategySpec":
        """The spec written as ``spec`` (``name`` or ``name(key=value, ...)``) with ``params`` on top (they win).

        Raises :class:`QueryError` naming the problem (unknown name, bad grammar, settings the strategy
        refuses); a setting given in ``params`` that the constructor does not take stays a ``TypeError``.
        """
        if isinstance(spec, StrategySpec):
            name, written, text = spec.name, dict(spec.params), str(spec)
        else:
            name, written = split_spec(spec)
            text = spec
        merged = {**written, **params}
        _build(name, merged, text if written else None)
        return cls.model_construct(name=name, params=merged)

    @property
    def strategy_class(self) -> type[QueryStrategy]:
        return strategy_class(self.name)

    def build(self) -> QueryStrategy:
        """A fresh strategy object with these settings."""
        return _build(self.name, dict(self.params), None)

    def __str__(self) -> str:
        if not self.params:
            return self.name
        settings = ", ".join(f"{k}={json.dumps(v, default=str)}" for k, v in sorted(self.params.items()))
        return f"{self.name}({settings})"


def get_strategy(name: str, **params: Any) -> QueryStrategy:
    """Instantiate a registered strategy by name, or by a spec ``name(key=value, ...)`` (explicit ``params``
    win); unknown names list the known ones. Shorthand for ``StrategySpec.parse(name, **params).build()``."""
    return StrategySpec.parse(name, **params).build()
