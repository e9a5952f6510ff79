"""Exploratory strategy variants (registered only when this module is imported; not product code)."""

from __future__ import annotations

from backend.strategies.base import register
from backend.strategies.modality_aware import ReducibleMargin


def _variant(name: str, base: type = ReducibleMargin, **params: object) -> type:
    cls = type(f"V_{name}", (base,), {"name": name, "description": f"study variant {params}",
                                      "__init__": lambda self, **kw: base.__init__(self, **{**params, **kw})})
    return register(cls)


_variant("rm_strat_only", outlier_z=None)
_variant("rm_outlier_only", stratify=False)
_variant("rm_absent", outliers="absent")
_variant("rm_quota25", quota=0.25)
_variant("rm_quota50", quota=0.5)
_variant("rm_z2", outlier_z=2.0)
_variant("rm_nostrat_q25", stratify=False, quota=0.25)


from backend.strategies.modality_aware import MissingAware  # noqa: E402


@register
class MissingAwareNoQuota(MissingAware):
    """study variant: missing-discounted fused margin only."""

    name = "ma_noquota"
    description = "study variant: missing_aware with q_max = 0"

    def __init__(self) -> None:
        super().__init__(q_min=0.0, q_max=0.0)
_variant("rm_noquota", quota=0.0)


from backend.strategies.modality_aware import ReducibleBadge  # noqa: E402

_variant("rb", ReducibleBadge, quota=0.0)  # BADGE with outlying copies last
_variant("rb_auto", ReducibleBadge, quota="auto")  # + reducible_margin's auto weak-modality quota
_variant("rb_q25", ReducibleBadge, quota=0.25)  # + a fixed 25 % weak-modality quota
