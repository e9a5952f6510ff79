"""Goal 4 of issue 7: does the strategy ordering hold on the two real datasets, with and without
injected missingness? The protocol of ``benchmark.protocol.run_cell`` at the time (shared random initial
set and round-0 model per seed, same recipe for every strategy, retrain per round, held-out test set),
written out here because the benchmark runner then only knew synthetic scenarios. Kept as it was run for
docs/modality_aware.md; new work on real data uses ``mmal benchmark run --dataset mfeat,emoji`` (the
benchmark's protocol and recipe, with the linear-probe anchor).

Datasets: mfeat (UCI handwritten digits, views ``pix`` (240 pixel averages, strong) and ``mor``
(6 morphological features, weak): a real imbalance) and emoji (64-px Google images as 32-px pixels +
name tokens, 9 categories; text dominates). ``+mnar30``: each item loses one modality with
probability 0.3 (1 +/- 0.8) depending on the class parity (the benchmark's MNAR pattern model).

    .venv/bin/python -m studies.real_data --seeds 0-3 --workers 2 --out runs/real
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

STRATEGIES = ("random", "entropy", "margin", "bald", "badge", "coreset", "bmmal", "reducible_margin")
DATASETS = ("mfeat", "mfeat+mnar30", "emoji", "emoji+mnar30")


def load_split(name: str, seed: int):
    """(pool, test) for ``name`` (see module docstring); the split and the missingness follow ``seed``."""
    from connectors.datasets import load_featurized, split_dataset
    from benchmark.protocol import derive_seed

    base, _, mod = name.partition("+")
    if base == "mfeat":
        ds = load_featurized("mfeat", views=("pix", "mor"), cache_dir=None)
    else:
        ds = load_featurized("emoji", featurizers="simple", cache_dir=".mmal-cache/features")
    if mod:
        rate = int(mod.replace("mnar", "")) / 100.0
        rng = np.random.default_rng(derive_seed("missing", name, seed))
        y = ds.true_labels
        names = ds.modality_names
        sign = np.where(y % 2 == 0, 1.0, -1.0)
        u = rng.random(len(ds))
        p0 = rate * (1 + 0.8 * sign)  # modality 0 absent
        p1 = rate * (1 - 0.8 * sign)  # modality 1 absent
        drop0 = u < p0
        drop1 = (u >= p0) & (u < p0 + p1)
        masks = {names[0]: ~drop0, names[1]: ~drop1}
        ds = ds.with_masks(masks)
        for k, d in zip(names, (drop0, drop1)):
            ds.modalities[k][d] = 0
    pool, _, test = split_dataset(ds, n_val=0, n_test=0.3, seed=derive_seed("split", name, seed))
    return pool, test


def run_cell(name: str, strategy: str, seed: int, n_initial: int, batch: int, rounds: int, cache: str) -> list[dict]:
    """One (dataset, strategy, seed) run; the round-0 model is trained once per (dataset, seed) and cached."""
    import torch

    from backend.data import Pool
    from backend.models.fusion import FusionConfig
    from backend.models.trainer import TrainConfig, TrainedFusionModel, train_model
    from backend.strategies import get_strategy
    from benchmark.protocol import derive_seed

    torch.set_num_threads(1)
    pool_ds, test = load_split(name, seed)
    fusion = FusionConfig(kind="intermediate", hidden=64, embed_dim=32, dropout=0.1)
    train = TrainConfig(epochs=60, lr=3e-3, weight_decay=1e-4, batch_size=64, patience=10, device="cpu", amp=False)
    ds = pool_ds.with_masks({})
    rng = np.random.default_rng(derive_seed("initial", name, seed))
    labeled = np.sort(rng.choice(len(ds), n_initial, replace=False))
    ds.labels[labeled] = ds.true_labels[labeled]
    pool = Pool.from_labeled(len(ds), labeled)
    path = Path(cache) / f"{name.replace('+', '_')}__s{seed}__round0.pt"
    if not path.exists():
        train_model(ds, labeled, fusion=fusion, train=train, seed=derive_seed("train", name, seed, 0)).save(path)
    model = TrainedFusionModel.load(path, device="cpu")
    idx = np.arange(len(test))

    def acc(m) -> float:
        return float((m.predict(test, idx).probs.argmax(1).cpu().numpy() == test.true_labels).mean())

    rows = [{"dataset": name, "strategy": strategy, "seed": seed, "round": 0, "cost": float(pool.labeled.size),
             "n_labeled": int(pool.labeled.size), "accuracy": acc(model)}]
    strat = get_strategy(strategy)
    for rnd in range(1, rounds + 1):
        picked = strat.query(model, ds, pool, batch, seed=derive_seed("query", name, seed, rnd)).indices
        ds.labels[picked] = ds.true_labels[picked]
        pool = pool.add(picked)
        model = train_model(ds, pool.labeled, fusion=fusion, train=train, seed=derive_seed("train", name, seed, rnd))
        rows.append({"dataset": name, "strategy": strategy, "seed": seed, "round": rnd, "cost": float(pool.labeled.size),
                     "n_labeled": int(pool.labeled.size), "accuracy": acc(model)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="runs/real")
    ap.add_argument("--seeds", default="0-3")
    ap.add_argument("--datasets", default=",".join(DATASETS))
    ap.add_argument("--strategies", default=",".join(STRATEGIES))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--initial", type=int, default=60)
    ap.add_argument("--batch", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=6)
    a = ap.parse_args()
    lo, _, hi = a.seeds.partition("-")
    seeds = list(range(int(lo), int(hi or lo) + 1))
    out = Path(a.out)
    (out / "cells").mkdir(parents=True, exist_ok=True)
    (out / "cache").mkdir(exist_ok=True)
    todo = [(d, s, seed) for d in a.datasets.split(",") for seed in seeds for s in a.strategies.split(",")
            if not (out / "cells" / f"{d.replace('+', '_')}__{s}__s{seed}.json").exists()]
    # round-0 models first (one per dataset and seed) so parallel cells never train the same one twice
    first = {(d, seed): (d, s, seed) for d, s, seed in todo}
    t0 = time.time()
    with ProcessPoolExecutor(max_workers=a.workers, mp_context=get_context("spawn")) as ex:
        for batch_cells in (list(first.values()), [c for c in todo if c not in first.values()]):
            futs = {ex.submit(run_cell, d, s, seed, a.initial, a.batch, a.rounds, str(out / "cache")): (d, s, seed)
                    for d, s, seed in batch_cells}
            for i, f in enumerate(as_completed(futs), 1):
                d, s, seed = futs[f]
                (out / "cells" / f"{d.replace('+', '_')}__{s}__s{seed}.json").write_text(json.dumps(f.result()))
                if i % 10 == 0:
                    print(f"{i}/{len(batch_cells)} {time.time() - t0:.0f} s", flush=True)
    show(out)


def show(out: Path) -> pd.DataFrame:
    """Mean AUBC per (dataset, strategy), the ranking, and the paired table against the best baseline."""
    from benchmark.metrics import aubc_table, paired_vs_best_baseline, summarize

    rows: list[dict[str, Any]] = []
    for f in sorted((out / "cells").glob("*.json")):
        rows.extend(json.loads(f.read_text()))
    df = pd.DataFrame(rows)
    a = summarize(aubc_table(df), "aubc")
    piv = (a.pivot(index="strategy", columns="dataset", values="mean") * 100).round(2)
    print(piv.to_string())
    print("rank (1 = best):")
    print(piv.rank(ascending=False).to_string())
    p = paired_vs_best_baseline(df)
    for c in ("mean_diff", "low", "high"):
        p[c] = (p[c] * 100).round(2)
    print(p.to_string(index=False))
    return df


if __name__ == "__main__":
    main()
