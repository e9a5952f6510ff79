"""Data preparation for ``mmal benchmark run --dataset``: real datasets and a researcher's own data files
turned into scenario names (with each own file's spec), and the real-data caches warmed before a run.

Why a module of its own: :mod:`benchmark.cli` keeps only commands and flag parsing; this is what the
``--dataset`` / ``--missing-rate`` / ``--modalities`` flags lead to. Heavy modules are imported inside the
functions, so importing this one (as ``mmal --help`` does, through the CLI) stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

from mmal.usage import bad_value

RESERVED_HELP = "id, label, split"


def real_scenarios(datasets: Sequence[str], rates: Sequence[int], kind: str) -> list[str]:
    """Scenario names for ``--dataset`` values: each dataset at each missing rate (0 = as it is).

    A value may already carry a modifier (``emoji+missing_mnar_30``); it is then used as written.
    """
    return resolve_datasets(datasets, rates, kind)[0]


def _file_and_modifiers(value: str) -> tuple[Path, str] | None:
    """``mine.jsonl`` or ``mine.jsonl+missing_mcar_30`` -> (the existing file, the modifiers after it)."""
    parts = value.split("+")
    for k in range(len(parts), 0, -1):
        p = Path("+".join(parts[:k])).expanduser()
        if p.is_file():
            return p, "+".join(parts[k:])
    return None


def resolve_datasets(datasets: Sequence[str], rates: Sequence[int], kind: str,
                     modalities: Optional[dict[str, str]] = None,
                     ignore_columns: Sequence[str] = ()) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """Scenario names for ``--dataset`` values, and the spec of every own data file among them.

    A value is a registered dataset (``emoji``, ``mfeat``) or the path of a manifest / Label Studio
    export; its scenario is named after the file (``mine.jsonl``) and the spec (absolute path, sha256,
    columns) travels in the config's ``own_data`` parameter, so every worker loads the same data.
    Every bad value is a one-line usage error naming the flag.
    """
    from backend.data import DataError
    from benchmark.scenarios import REAL_DATASETS, parse_name
    from connectors.importers import ColumnError
    from connectors.own_data import OWN_DATA_SUFFIXES, describe_own_data

    if kind not in ("mcar", "mnar"):
        bad_value("--missing", kind, "must be 'mcar' (at random) or 'mnar' (depending on the class)")
    names: list[str] = []
    own: dict[str, dict[str, Any]] = {}
    for d in datasets:
        if d.split("+")[0].strip() in REAL_DATASETS:
            name = d
        else:
            found = _file_and_modifiers(d)
            if found is None:
                looks = d.split("+")[0].lower().endswith(OWN_DATA_SUFFIXES)
                bad_value("--dataset", d, ("no such file" if looks else "not a real dataset or a data file")
                          + f"; known: {', '.join(REAL_DATASETS)}, or the path of a "
                          f"{'/'.join(OWN_DATA_SUFFIXES)} manifest or Label Studio export")
            path, mods = found
            try:
                spec = describe_own_data(path, modalities, ignore_columns)
            except ColumnError as e:
                hint = ""
                if e.undeclared:
                    col = e.columns[0]
                    hint = (f"; declare it with --modalities {col}=image|text|vector (with the other modalities) "
                            f"or drop it with --ignore-columns {col}")
                bad_value("--dataset", d, f"{e.reason}{hint} (reserved columns: {RESERVED_HELP})")
            except DataError as e:
                bad_value("--dataset", d, str(e))
            prev = own.get(spec["name"])
            if prev is not None and prev["path"] != spec["path"]:
                bad_value("--dataset", d, f"another --dataset file is also named {spec['name']!r} "
                                          f"({prev['path']}); scenarios are named after files: rename one")
            own[spec["name"]] = spec
            name = spec["name"] + (f"+{mods}" if mods else "")
        try:
            _, over = parse_name(name)
        except DataError as e:
            bad_value("--dataset", d, str(e))
        variants = [name] if over else [name if pct == 0 else f"{name}+missing_{kind}_{pct}" for pct in rates]
        names += [v for v in variants if v not in names]
    if (modalities is not None or ignore_columns) and not own:
        bad_value("--modalities" if modalities is not None else "--ignore-columns",
                  ",".join(modalities or ignore_columns), "applies to --dataset data files only")
    return names, own


def _build_one(name: str, seed: int, params: dict[str, Any]) -> str:
    """Build one scenario in a worker process: fills the on-disk feature and informativeness caches."""
    from benchmark.scenarios import make_scenario

    make_scenario(name, seed, **params)
    return f"{name} s{seed}"


def prepare_real(names: Sequence[str], seeds: Sequence[int], params: dict[str, Any], workers: int) -> dict[str, int]:
    """Warm the real-data caches before a run: features once per dataset, then the per-seed
    informativeness estimates (a full-pool model per modality) in ``workers`` processes.
    Returns each dataset's pool size (so a flag the data cannot satisfy is named before any cell runs).

    Why: the driver builds every (scenario, seed) before dispatching cells, serially; with cold caches
    that is minutes of training that parallel workers do in a fraction of the time. Results are the
    same either way (estimates are computed with one torch thread and cached by content).
    """
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from benchmark.scenarios import make_scenario, parse_name

    pairs = [(n, s) for n in names for s in seeds]
    first: dict[str, tuple[str, int]] = {}
    for n, s in pairs:
        first.setdefault(parse_name(n)[0], (n, s))
    pools = {}
    for base, (n, s) in first.items():  # encodes each dataset once (in this process), before any parallel work
        pools[base] = len(make_scenario(n, s, **params).pool)
    rest = [pr for pr in pairs if pr not in first.values()]
    if workers > 1 and rest:
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as ex:
            list(ex.map(_build_one, [n for n, _ in rest], [s for _, s in rest], [params] * len(rest)))
    return pools
