"""The scenario name grammar (``base+modifier``) and the catalogue of named scenarios: synthetic bases
and real datasets. Names alone answer "real?" and "multi-label?", so a run can refuse unfit settings
before building anything.
"""

from __future__ import annotations

import re
from typing import Any

from backend.data import DataError
from benchmark.scenarios.structures import _BASES, MULTI_LABEL_BASES
from connectors.own_data import is_own_data_name

# real datasets, replayed with the simulated oracle (built by benchmark.scenarios.real)
REAL_DATASETS: dict[str, dict[str, Any]] = {
    "emoji": {
        "description": "1,906 emojis: image (Google 64-px PNG) + text (name and short names), 9 categories; "
                       "which modality is stronger depends on the featurizers and the labelled budget",
        "val_size": 200, "test_size": 400,
        "roles": {"image": "emoji picture", "text": "emoji name and short names"},
    },
    "emoji_tags": {
        "description": "the 1,906 emojis with label sets: the words of their category and subcategory names "
                       "that tag at least 30 emojis (32 tags, 1.93 per emoji, none empty; multi-label)",
        "val_size": 200, "test_size": 400, "multi_label": True,
        "roles": {"image": "emoji picture", "text": "emoji name and short names"},
    },
    "mfeat": {
        "description": "UCI Multiple Features: 2,000 handwritten digits, 10 classes, two feature views "
                       "(default fou, about 0.81 alone, + kar, about 0.95 alone: an imbalance case)",
        "val_size": 200, "test_size": 500,
        "roles": {},
    },
}


_MOD_MISSING = re.compile(r"^missing_(mcar|mnar)_(\d{1,2})$")
_MOD_NOISY = re.compile(r"^noisy(?:_modality)?(?:_(\d{1,2}))?$")


def parse_name(name: str) -> tuple[str, dict[str, Any]]:
    """``'difficulty+missing_mnar_30'`` -> (``'difficulty'``, {missing: mnar, missing_rate: 0.3}).

    Standalone modifiers use the ``balanced`` base: ``missing_mcar_30`` = ``balanced+missing_mcar_30``,
    ``noisy_modality`` = ``balanced+noisy_30``. A real dataset (``emoji``, ``mfeat``) is a base too and
    takes the ``missing_*`` modifiers only: ``mfeat+missing_mnar_30``.
    """
    if not isinstance(name, str) or not name.strip():
        raise DataError(f"scenario name must be a non-empty string, got {name!r}")
    parts = [s.strip() for s in name.split("+")]
    known = parts[0] in _BASES or _is_real_base(parts[0])
    base = parts[0] if known else "balanced"
    mods = parts[1:] if known else parts
    over: dict[str, Any] = {}
    for mod in mods:
        mm, mn = _MOD_MISSING.match(mod), _MOD_NOISY.match(mod)
        if mm:
            over.update(missing=mm.group(1), missing_rate=int(mm.group(2)) / 100.0)
        elif mn and not _is_real_base(base):
            over.update(corrupt_rate=int(mn.group(1) or 30) / 100.0)
        elif mn:
            raise DataError(f"scenario {name!r}: real datasets take only missing_mcar_<pct> / missing_mnar_<pct> "
                            f"modifiers, not {mod!r}")
        else:
            raise DataError(f"unknown scenario part {mod!r} in {name!r}; bases: {', '.join(_BASES)}; "
                            f"real datasets: {', '.join(REAL_DATASETS)}; "
                            "modifiers: missing_mcar_<pct>, missing_mnar_<pct>, noisy[_<pct>]")
    return base, over


def _is_real_base(base: str) -> bool:
    return base in REAL_DATASETS or is_own_data_name(base)


def is_real(name: str) -> bool:
    """True when the scenario ``name`` replays real data (``emoji``, ``mfeat+missing_mnar_30``, ``mine.jsonl``)."""
    return _is_real_base(parse_name(name)[0])


def is_multi_label(name: str) -> bool:
    """True when the scenario ``name`` labels items with sets of classes (``multilabel``, ``emoji_tags``, with
    any modifiers), known from the name alone so a run can refuse unfit strategies before building anything."""
    base = parse_name(name)[0]
    return base in MULTI_LABEL_BASES or bool(REAL_DATASETS.get(base, {}).get("multi_label"))


def list_scenarios(real: bool = False) -> dict[str, str]:
    """Named scenarios (combinations are built with '+', see :func:`parse_name`) -> description.

    Synthetic only by default (suites enumerate these); ``real=True`` adds the real datasets and
    their missing-modality variants, which need the dataset files (and, for ``featurizers="pretrained"``,
    the packaged encoders).
    """
    out = {k: v[2] for k, v in _BASES.items()}
    out["noisy_modality"] = "each modality is corrupted (heavy noise) on 30 % of the items, independently"
    for kind, what in (("mcar", "completely at random"), ("mnar", "depending on the class (not at random)")):
        for pct in (10, 30, 50):
            out[f"missing_{kind}_{pct}"] = f"balanced, each modality absent for {pct} % of items, {what}"
    out["difficulty+missing_mnar_30"] = "the imbalance trap with class-dependent missing modalities"
    out["difficulty+noisy"] = "the imbalance trap with 30 % corrupted copies per modality"
    out["synergy+missing_mcar_30"] = "XOR across modalities with 30 % of each modality missing"
    out["multilabel+missing_mnar_30"] = "multi-label tags with 30 % of each modality missing, depending on the tags"
    if real:
        for ds, spec in REAL_DATASETS.items():
            out[ds] = f"real: {spec['description']}"
            gone = f"real: {ds} with each modality removed from 30 % of items"
            out[f"{ds}+missing_mcar_30"] = f"{gone} at random"
            out[f"{ds}+missing_mnar_30"] = f"{gone}, depending on the class"
    return out
