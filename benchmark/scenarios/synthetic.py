"""Building a synthetic scenario from its name and seed: data, ground truth and recipe (a real dataset's
name is handed to :func:`benchmark.scenarios.real.make_real_scenario`)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from backend.data import UNLABELED, DataError, MultimodalDataset
from backend.models.fusion import FusionConfig
from backend.models.trainer import TrainConfig
from benchmark.scenarios.missingness import _presence, presence_strata
from benchmark.scenarios.names import _is_real_base, parse_name
from benchmark.scenarios.process import MODALITY_NAMES, ModalityProcess, Process, _rotation
from benchmark.scenarios.real import REAL_PARAMS, make_real_scenario
from benchmark.scenarios.scenario import DEFAULT_PARAMS, Scenario, _seed_sequence, default_recipe
from benchmark.scenarios.structures import _BASES


def make_scenario(name: str, seed: int = 0, *, fusion: FusionConfig | None = None, train: TrainConfig | None = None,
                  **params: Any) -> Scenario:
    """Build the named scenario (see :func:`list_scenarios`) for ``seed``.

    ``params`` override :data:`DEFAULT_PARAMS` and the base's own knobs (e.g. ``target_easy``).
    A real dataset's name dispatches to :func:`make_real_scenario`. Parameters that only real datasets
    take (:data:`REAL_PARAMS`) are ignored here, so one run can mix synthetic and real scenarios.
    """
    base, over = parse_name(name)
    if _is_real_base(base):
        return make_real_scenario(name, seed, fusion=fusion, train=train, **params)
    params = {k: v for k, v in params.items() if k not in REAL_PARAMS}
    builder, base_defaults, description = _BASES[base]
    unknown = set(params) - set(DEFAULT_PARAMS) - set(base_defaults)
    if unknown:
        raise DataError(f"unknown scenario parameters {sorted(unknown)}; known: "
                        f"{sorted(set(DEFAULT_PARAMS) | set(base_defaults) | set(REAL_PARAMS))}")
    p: dict[str, Any] = {**DEFAULT_PARAMS, **base_defaults, **over, **params}
    for key in ("n_items", "n_test", "n_val", "n_classes", "mc_samples"):
        if not isinstance(p[key], (int, np.integer)) or p[key] < (2 if key == "n_classes" else 1):
            raise DataError(f"{key} must be a positive integer (n_classes >= 2), got {p[key]!r}")
    if float(p["noise"]) <= 0:
        raise DataError(f"noise must be positive, got {p['noise']}")
    m = int(p["n_modalities"])
    names = list(MODALITY_NAMES[:m])
    dims = p["dims"]
    dims = [int(dims)] * m if isinstance(dims, (int, np.integer)) else [int(d) for d in dims]
    if len(dims) != m:
        raise DataError(f"dims has {len(dims)} entries for {m} modalities")
    c = int(p["n_classes"])

    ss = _seed_sequence(name, seed)
    g_geo, g_pool, g_val, g_test, g_mc = (np.random.default_rng(s) for s in ss.spawn(5))
    st = builder(p, g_geo)
    # label values: the classes, or (multi-label) the distinct label sets, each cell mapped to its value
    sets, value = None, st.cell_label
    if st.cell_label.ndim == 2:
        sets, value = np.unique(st.cell_label, axis=0, return_inverse=True)
        value = value.reshape(-1)
    n_values = c if sets is None else len(sets)
    noise = float(p["noise"])
    mods = [ModalityProcess(names[j], dims[j], st.means[j], st.sigmas[j] * noise, _rotation(dims[j], g_geo))
            for j in range(m)]
    crate = float(p["corrupt_rate"] or 0.0)
    if not 0.0 <= crate < 1.0:
        raise DataError(f"corrupt_rate must be in [0, 1), got {crate}")
    cmods = p.get("corrupt_modalities") or names
    if set(cmods) - set(names):
        raise DataError(f"corrupt_modalities {sorted(set(cmods) - set(names))} are not modalities ({names})")
    if sets is None:
        patterns, pattern_probs = _presence(p, names, c)
    else:  # MNAR on label sets: the rate follows the set's presence stratum (see presence_strata)
        patterns, pattern_probs = _presence(p, names, c + 1)
        pattern_probs = pattern_probs[presence_strata(sets)]
    proc = Process(n_values, st.cell_prior, value, mods, shared=st.shared * noise,
                   corrupt_rate=np.array([crate if k in cmods else 0.0 for k in names]),
                   corrupt_sigma=float(p["corrupt_sigma"]), patterns=patterns, pattern_probs=pattern_probs,
                   label_sets=sets)

    class_names = st.class_names or [f"class{i}" for i in range(c)]

    def build(n: int, rng: np.random.Generator, labelled: bool, prefix: str) -> tuple[MultimodalDataset, dict]:
        s = proc.sample(n, rng)
        truth = proc.labels_of(s["y"])
        labels = truth.copy() if labelled else np.full(truth.shape, UNLABELED, dtype=np.int64)
        ds = MultimodalDataset(s["features"], labels, class_names, s["masks"],
                               ids=np.array([f"{prefix}{i}" for i in range(n)], dtype=object),
                               true_labels=truth, meta={"scenario": name, "seed": int(seed)})
        return ds, s

    pool, s_pool = build(int(p["n_items"]), g_pool, False, "p")
    val, _ = build(int(p["n_val"]), g_val, True, "v")
    test, _ = build(int(p["n_test"]), g_test, True, "t")

    mc = proc.sample(int(p["mc_samples"]), g_mc)
    info: dict[str, float] = {}
    info_present: dict[str, float] = {}
    per_class: dict[str, list[float]] = {}  # multi-label: accuracy of each tag in the Bayes-optimal sets
    for k in [*names, "all"]:
        pred = proc.bayes_predict(mc["features"], mc["masks"], use=None if k == "all" else [k])
        hit = pred == mc["y"]  # one label value = one whole label set: subset accuracy for multi-label
        info[k] = float(hit.mean())
        if k != "all":
            info_present[k] = float(hit[mc["masks"][k]].mean()) if mc["masks"][k].any() else float("nan")
        if sets is not None:
            per_class[k] = [float(v) for v in (sets[pred] == sets[mc["y"]]).mean(axis=0)]
    value_prior = np.bincount(value, weights=st.cell_prior, minlength=n_values)
    chance = float(value_prior.max())  # the most probable class (multi-label: label set) for every item
    info["chance"] = chance

    f_def, t_def = default_recipe(base, c)
    params_out = {k: (list(v) if isinstance(v, tuple) else v) for k, v in p.items()}
    params_out["base"] = base
    params_out["seed"] = int(seed)
    params_out["sigmas"] = [float(md.sigma) for md in mods]
    params_out["shared_sigma"] = float(proc.shared)
    params_out["mc_stderr"] = float(math.sqrt(0.25 / int(p["mc_samples"])))
    if sets is not None:
        params_out["class_informativeness"] = {k: dict(zip(class_names, v)) for k, v in per_class.items()}
        params_out["class_rate"] = dict(zip(class_names, np.round(value_prior @ sets, 6).tolist()))
    desc = description
    if over.get("missing"):
        desc += f"; each of {p.get('missing_modalities') or names} absent for {int(round(100 * p['missing_rate']))} % " \
                f"of items ({'completely at random' if p['missing'] == 'mcar' else 'depending on the class'})"
    if crate > 0:
        desc += f"; {int(round(100 * crate))} % of items carry a corrupted copy of each of {cmods}"
    return Scenario(name=name, params=params_out, pool=pool, val=val, test=test, informativeness=info,
                    informativeness_present=info_present, chance=chance, fusion=fusion or f_def, train=train or t_def,
                    description=desc, roles=st.roles,
                    truth={"cell": s_pool["cell"], "corrupted": s_pool["corrupted"]}, process=proc)
