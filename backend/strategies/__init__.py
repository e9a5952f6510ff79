"""Query strategies: the interface, the built-in strategies, the registry by name, specs and the pool ranking.

    from backend.strategies import StrategySpec, rank

    spec = StrategySpec.parse("reducible_margin(quota=0)")    # name -> spec (checked once)
    ranking = rank(spec.build(), model, dataset, pool)        # spec -> strategy -> the whole pool's order

Importing the package registers the built-in strategies (:mod:`backend.strategies.registry`).
"""

from backend.strategies import classic, diversity, modality_aware, multimodal  # noqa: F401  (register the built-ins)
from backend.strategies.base import QueryError, QueryResult, QueryStrategy, ScoringStrategy
from backend.strategies.ranking import Ranking, rank
from backend.strategies.registry import list_strategies, register, strategy_class
from backend.strategies.spec import StrategySpec, get_strategy

__all__ = ["QueryError", "QueryResult", "QueryStrategy", "Ranking", "ScoringStrategy", "StrategySpec", "get_strategy",
           "list_strategies", "rank", "register", "strategy_class"]
