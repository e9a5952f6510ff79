"""Featurizers (raw inputs -> fixed-size arrays), their registry, the on-disk feature cache and
``featurize(dataset, ...)``. Trainable per-modality encoders live in ``backend.models``."""

from backend.encoders.base import Featurizer, ItemError
from backend.encoders.cache import CacheStats, FeatureCache
from backend.encoders.featurize import featurize
from backend.encoders.registry import get_featurizer, list_featurizers, register_featurizer

__all__ = ["Featurizer", "ItemError", "FeatureCache", "CacheStats", "featurize",
           "get_featurizer", "list_featurizers", "register_featurizer"]
