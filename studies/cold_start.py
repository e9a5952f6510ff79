"""The server's cold start: coverage order (backend.cold_start) against a random order, on emoji.

What an annotation team meets before the first training: the order of the first tasks. Per seed, a
project is a random 80 % of the 1,906 emojis (9 categories, pretrained EfficientNet-Lite0 + MiniLM
features, the server's defaults). Measured for the coverage order (``MMAL_COLD_START=coverage`` with
``k`` clusters) and for a seeded random order:

- the number of categories among the first 20 and the first 50 tasks;
- the accuracy on the rest of the project after the first training on the first 10 labels
  (``MMAL_MIN_ANNOTATIONS``) and after 20 and 50, trained exactly as the server trains (pool-standardised
  features, the server's default recipe, ``ml_server.training.build_version``'s calls).

``k`` is chosen on development seeds 100-104 and confirmed on seeds 0-9 (paired by seed, 95 % t-interval):

    .venv/bin/python -m studies.cold_start --dev       # choose k
    .venv/bin/python -m studies.cold_start --k 20      # confirm on seeds 0-9
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np


def _project(seed: int) -> tuple[Any, np.ndarray]:
    from connectors.datasets import load_featurized

    ds = load_featurized("emoji", featurizers="pretrained", cache_dir=str(Path.home() / ".cache/mmal/features"),
                         label="category")
    rng = np.random.default_rng(10_000 + seed)
    keep = np.sort(rng.choice(len(ds), int(0.8 * len(ds)), replace=False))
    return ds.subset(keep), ds.true_labels[keep]


def _accuracy(ds: Any, truth: np.ndarray, labelled: np.ndarray, seed: int) -> float:
    """Train like the server (ml_server.training.build_version) on ``labelled``; accuracy on the rest."""
    from backend.data import UNLABELED
    from backend.models.fusion import FusionConfig
    from backend.models.trainer import TrainConfig, train_model
    from ml_server.dataset import apply_scaling, feature_scaling
    from ml_server.settings import Settings
    from ml_server.training import training_recipe

    s = Settings()
    labels = np.full(len(ds), UNLABELED)
    labels[labelled] = truth[labelled]
    from dataclasses import replace

    d = apply_scaling(replace(ds, labels=labels), feature_scaling(ds))
    model = train_model(d, labelled, fusion=FusionConfig(kind=s.fusion),
                        train=TrainConfig(epochs=s.epochs, patience=s.patience, device="cpu",
                                          recipe=training_recipe(s.recipe, d)), seed=s.seed)
    rest = np.setdiff1d(np.arange(len(ds)), labelled)
    pred = model.predict(d, rest).probs.argmax(dim=1).cpu().numpy()
    return float((pred == truth[rest]).mean())


def run(seeds: list[int], ks: list[int], budgets: tuple[int, ...] = (10, 20, 50)) -> list[dict[str, Any]]:
    import torch

    from backend.cold_start import coverage_features, coverage_order

    torch.set_num_threads(1)
    rows = []
    for seed in seeds:
        ds, truth = _project(seed)
        x = coverage_features({m: ds.modalities[m] for m in ds.modality_names}, ds.masks)
        orders = {"random": np.random.default_rng(seed).permutation(len(ds))}
        for k in ks:
            orders[f"coverage_k{k}"] = coverage_order(x, k, seed=seed)
        for name, order in orders.items():
            row: dict[str, Any] = {"seed": seed, "order": name}
            for n in (20, 50):
                row[f"classes@{n}"] = int(np.unique(truth[order[:n]]).size)
            for b in budgets:
                row[f"acc@{b}"] = _accuracy(ds, truth, np.sort(order[:b]), seed)
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def summarise(rows: list[dict[str, Any]]) -> str:
    """Mean per order and, paired by seed, each coverage order minus random with a 95 % t-interval."""
    import pandas as pd
    from scipy import stats

    df = pd.DataFrame(rows)
    metrics = [c for c in df.columns if c not in ("seed", "order")]
    lines = ["| order | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
    for name, g in df.groupby("order", sort=False):
        lines.append(f"| {name} | " + " | ".join(f"{g[m].mean():.3f}" for m in metrics) + " |")
    base = df[df.order == "random"].set_index("seed")
    for name in df.order.unique():
        if name == "random":
            continue
        cur = df[df.order == name].set_index("seed")
        cells = []
        for m in metrics:
            d = (cur[m] - base[m]).to_numpy(dtype=float)
            half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else float("nan")
            cells.append(f"{d.mean():+.3f} [{d.mean() - half:+.3f}, {d.mean() + half:+.3f}] {int((d > 0).sum())}/{len(d)}")
        lines.append(f"| {name} - random | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dev", action="store_true", help="development seeds 100-104, k in 10, 20, 50")
    ap.add_argument("--k", type=int, default=20, help="clusters of the coverage order (confirmation run)")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    args = ap.parse_args()
    if args.dev:
        rows = run(list(range(100, 105)), [10, 20, 50])
    else:
        rows = run(list(range(args.seeds)), [args.k])
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=1))
    print(summarise(rows))


if __name__ == "__main__":
    main()
