"""GPU check: the query kernels at 1M items and one training round on CUDA, with figures printed.

A short prepared script (well under 5 minutes on one H100) for when a GPU machine is lent; run it as
``bash perf/gpu_check.sh``. It needs only torch and numpy (the GPU image's python3 has both) and this
repository on PYTHONPATH. Timings are wall clock around each call with ``torch.cuda.synchronize()``
before and after, after one warm-up call on a small input (CUDA context, kernel loading);
GPU peak memory is ``torch.cuda.max_memory_allocated`` (reset before each step).

Steps: (1) greedy k-center (core-set) on 1M x 512 from 1,000 labelled centers, b = 100; (2) BADGE
k-means++ on factored gradient embeddings (C = 10); (3) margin + entropy + top-b on 1M probabilities;
(4) the same three through the registered strategies; (5) CPU-vs-GPU agreement of k-center picks on a
50k subset; (6) TrainedFusionModel.predict on a 1M-item featurized dataset (d = 384 + 512) + scoring;
(7) one training round (train_model on 5,000 labels).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from backend import heuristics  # noqa: E402
from backend.data import UNLABELED, MultimodalDataset, Pool  # noqa: E402
from backend.kernels import DenseEmbedding, FactoredEmbedding, greedy_k_center, kmeanspp_seeding  # noqa: E402
from backend.models.fusion import FusionConfig  # noqa: E402
from backend.models.trainer import TrainConfig, train_model  # noqa: E402
from backend.strategies import get_strategy  # noqa: E402
from perf.common import CachedPredictionsModel, make_inputs  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, fn: Callable[[], Any], repeats: int = 1) -> tuple[float, Any, float | None]:
    """(best wall seconds over ``repeats``, first result, peak GPU GB or None on CPU)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    best, first = float("inf"), None
    for r in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        out = fn()
        _sync(device)
        best = min(best, time.perf_counter() - t0)
        if r == 0:
            first = out
    peak = torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None
    return best, first, peak


def _featurized(n: int, seed: int) -> tuple[MultimodalDataset, np.ndarray]:
    """N items, text d=384 + image d=512 float32 (10 % of images missing), 10 classes; 5,000 labelled."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n)
    mods = {}
    for name, d in (("text", 384), ("image", 512)):
        centers = rng.standard_normal((10, d), dtype=np.float32)
        arr = np.empty((n, d), dtype=np.float32)
        for s in range(0, n, 65536):
            e = min(n, s + 65536)
            arr[s:e] = rng.standard_normal((e - s, d), dtype=np.float32) * 2.0 + 0.5 * centers[y[s:e]]
        mods[name] = arr
    masks = {"image": rng.random(n) >= 0.1}
    mods["image"][~masks["image"]] = 0.0
    labels = np.full(n, UNLABELED, dtype=np.int64)
    lab = np.sort(rng.choice(n, min(5000, n // 2), replace=False))
    labels[lab] = y[lab]
    ds = MultimodalDataset(mods, labels, [f"c{k}" for k in range(10)], masks,
                           ids=np.arange(n).astype(str).astype(object))
    return ds, lab


def main(argv: list[str] | None = None) -> int:
    """Run every step, print one line per figure, write them as JSON."""
    p = argparse.ArgumentParser(description="kernels at 1M and one training round on CUDA")
    p.add_argument("--device", default="cuda")
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--d", type=int, default=512)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--labeled", type=int, default=1000)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--agree-n", type=int, default=50_000, help="items for the CPU-vs-GPU pick agreement")
    p.add_argument("--epochs", type=int, default=50, help="max epochs of the training round (early stopping)")
    p.add_argument("--skip-model", action="store_true", help="kernels only (no predict, no training)")
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device visible to torch; pass --device cpu to dry-run the script", file=sys.stderr)
        return 2
    dev = torch.device(a.device)
    t_start = time.perf_counter()
    fig: dict[str, Any] = {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join([os.path.relpath(sys.argv[0], ROOT), *(argv if argv is not None else sys.argv[1:])]),
        "torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version(),
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or "cpu",
        "n": a.n, "d": a.d, "C": a.classes, "L": a.labeled, "b": a.batch, "steps": {},
    }
    if dev.type == "cuda":
        fig["gpu_mem_gb"] = torch.cuda.get_device_properties(dev).total_memory / 1e9
        fig["tf32_matmul"] = torch.backends.cuda.matmul.allow_tf32
    print(f"gpu_check on {fig['device']}  torch {fig['torch']}  N={a.n:,} d={a.d} C={a.classes} L={a.labeled} b={a.batch}",
          flush=True)

    def record(name: str, seconds: float, peak: float | None, **extra: Any) -> None:
        fig["steps"][name] = {"s": seconds, "peak_gpu_gb": peak, **extra}
        mem = f"  peak GPU {peak:.2f} GB" if peak is not None else ""
        more = "  " + "  ".join(f"{k}={v}" for k, v in extra.items()) if extra else ""
        print(f"  {name:<52} {seconds:9.3f} s{mem}{more}", flush=True)

    # warm-up: CUDA context, cuBLAS handles, kernel loading
    warm = make_inputs(20_000, a.d, a.classes, 100, seed=1)
    wz, wp = torch.from_numpy(warm.z).to(dev), torch.from_numpy(warm.probs).to(dev)
    greedy_k_center(wz, torch.as_tensor(warm.labeled), 10)
    kmeanspp_seeding(FactoredEmbedding.badge(wp, [wz]), 10, torch.Generator(device=dev).manual_seed(0), first="max_norm")
    heuristics.margin(wp), heuristics.entropy(wp)
    _sync(dev)
    del warm, wz, wp

    t0 = time.perf_counter()
    inp = make_inputs(a.n, a.d, a.classes, a.labeled, seed=0)
    gen_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    z = torch.from_numpy(inp.z).to(dev)
    probs = torch.from_numpy(inp.probs).to(dev)
    lab = torch.as_tensor(inp.labeled, device=dev)
    _sync(dev)
    print(f"  inputs: generated on CPU in {gen_s:.1f} s, copied to {dev} in {time.perf_counter() - t0:.2f} s", flush=True)

    # (1)-(3) kernels
    s, picks, pk = timed(dev, lambda: greedy_k_center(DenseEmbedding(z), lab, a.batch), repeats=2)
    record(f"coreset k-center N={a.n:,}", s, pk)
    gen = torch.Generator(device=dev)
    s, _, pk = timed(dev, lambda: kmeanspp_seeding(FactoredEmbedding.badge(probs, [z]), a.batch,
                                                  gen.manual_seed(0), first="max_norm"), repeats=2)
    record(f"badge k-means++ N={a.n:,} C={a.classes}", s, pk)

    def score() -> torch.Tensor:
        m, e = heuristics.margin(probs), heuristics.entropy(probs)
        return torch.topk(m, a.batch).indices, torch.topk(e, a.batch).indices

    s, _, pk = timed(dev, score, repeats=3)
    record(f"margin+entropy+top-b N={a.n:,}", s, pk)

    # (4) the registered strategies over cached outputs on the device
    model = CachedPredictionsModel(probs, z)
    n = a.n
    placeholder = np.zeros((n, 1), dtype=np.float32)
    labels = np.full(n, UNLABELED, dtype=np.int64)
    labels[inp.labeled] = inp.probs[inp.labeled].argmax(axis=1)
    ds = MultimodalDataset({"a": placeholder, "b": placeholder}, labels, [f"c{k}" for k in range(a.classes)],
                           ids=np.arange(n).astype(str).astype(object))
    pool = Pool.from_labeled(n, inp.labeled)
    for name in ("coreset", "badge", "margin", "entropy"):
        strat = get_strategy(name)
        s, res, pk = timed(dev, lambda: strat.query(model, ds, pool, a.batch, seed=0), repeats=1)
        record(f"strategy '{name}' N={n:,}", s, pk)
        if name == "coreset":
            fig["steps"][f"strategy '{name}' N={n:,}"]["same_as_kernel"] = res.indices.tolist() == \
                picks.cpu().tolist()
    del model, ds

    # (5) CPU vs GPU k-center picks, same start, same float32 inputs
    m = min(a.agree_n, n)
    sub = torch.as_tensor(np.flatnonzero(np.isin(np.arange(m), inp.labeled)))
    gpu_p = greedy_k_center(z[:m], sub.to(dev), a.batch).cpu()
    cpu_p = greedy_k_center(torch.from_numpy(inp.z[:m]), sub, a.batch)
    same = int((gpu_p == cpu_p).sum())
    first_diff = next((i for i in range(a.batch) if gpu_p[i] != cpu_p[i]), None)
    fig["steps"]["cpu_gpu_kcenter_agreement"] = {"n": m, "same_position": same, "first_divergence": first_diff}
    print(f"  CPU vs GPU k-center picks on N={m:,}: {same}/{a.batch} identical"
          + ("" if first_diff is None else f" (first divergence at pick {first_diff})"), flush=True)
    del z, probs, inp

    if not a.skip_model:
        # (6) predict + score on a 1M-item featurized dataset
        t0 = time.perf_counter()
        fds, flab = _featurized(n, seed=0)
        print(f"  featurized dataset {n:,} x (384 + 512) generated in {time.perf_counter() - t0:.1f} s", flush=True)
        # (7) one training round (its model then serves the predict timing)
        cfg = TrainConfig(epochs=a.epochs, patience=10, device=a.device)
        s, fm, pk = timed(dev, lambda: train_model(fds, flab, fusion=FusionConfig(kind="intermediate"), train=cfg, seed=0))
        hist = fm.history
        record(f"train_model {flab.size:,} labels", s, pk, epochs=len(hist),
               val_acc=round(max((h.get("val_acc", 0.0) for h in hist), default=0.0), 3))
        idx = np.arange(n)

        def predict_score() -> None:
            pr = fm.predict(fds, idx).probs
            heuristics.margin(pr), heuristics.entropy(pr)

        s, _, pk = timed(dev, predict_score)
        record(f"predict+margin+entropy N={n:,} (first call)", s, pk)
        s, _, pk = timed(dev, predict_score, repeats=3)
        record(f"predict+margin+entropy N={n:,} (warm)", s, pk)
        fpool = Pool.from_labeled(n, flab)
        s, _, pk = timed(dev, lambda: get_strategy("margin").query(fm, fds, fpool, a.batch), repeats=2)
        record(f"strategy 'margin' with the trained model N={n:,}", s, pk)

    fig["total_s"] = time.perf_counter() - t_start
    print(f"total {fig['total_s']:.1f} s", flush=True)
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(fig, indent=1))
        print(f"figures written to {a.json}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
