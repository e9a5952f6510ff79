"""Query kernels side by side with scikit-activeml and small-text, on identical inputs, plus our
1M-item scoring from cached features. Prints wall time, peak memory, ours/peer ratios, agreement
and the issue's targets. Run through ``bash perf/run.sh`` (it builds .venv-perf with the peers).

How it measures:
- inputs: seeded cached model outputs (``perf.common.make_inputs``: z (N, 512) float32 embeddings,
  probs (N, 10) float32, L = 1000 labelled), written once per N to .npy files that every method loads;
- every (method, N) runs in a fresh subprocess: wall time is ``time.perf_counter`` around the query
  call alone (inputs already in memory, peers' imports done; min of up to 3 runs while under 2 s);
  peak memory is the process high-water mark (Linux VmHWM, reset via /proc/self/clear_refs just
  before the call): "extra" = peak minus the RSS right before the call, "total" = the whole process;
- "ours" is the registered strategy (``get_strategy(name).query``) over a model that serves the cached
  outputs (``perf.common.CachedPredictionsModel``): the strategy glue is timed with the kernel;
- threads: ``--threads`` (default 2) for torch, OpenMP and BLAS in every subprocess.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

KERNELS = ("coreset", "badge", "margin", "entropy")
PEERS = {
    "coreset": ("skactiveml", "small-text", "numpy"),
    "badge": ("skactiveml",),
    "margin": ("skactiveml", "small-text"),
    "entropy": ("skactiveml", "small-text"),
}
PEER_LABEL = {
    ("coreset", "skactiveml"): "scikit-activeml CoreSet",
    ("coreset", "small-text"): "small-text greedy_coreset",
    ("coreset", "numpy"): "plain NumPy k-center (float64)",
    ("badge", "skactiveml"): "scikit-activeml Badge",
    ("margin", "skactiveml"): "scikit-activeml UncertaintySampling(margin_sampling)",
    ("margin", "small-text"): "small-text BreakingTies",
    ("entropy", "skactiveml"): "scikit-activeml UncertaintySampling(entropy)",
    ("entropy", "small-text"): "small-text PredictionEntropy",
}
TARGETS = {
    "coreset_50k_ratio": "coreset at N=50k: at most 0.25x scikit-activeml's time",
    "badge_10k_ratio": "badge at N=10k: at most 0.15x scikit-activeml's time",
    "scoring_1m_s": "margin+entropy scoring of 1M items from cached features: under 2 s",
    "badge_100k_peak": "BADGE at N=100k, C=10, d=512: within 1.5 GB peak memory (whole process)",
}


# ==================================================================================================
# child side: one method on one input set


def _set_threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)


def _setup_ours(kernel: str, inputs, b: int) -> Callable[[], np.ndarray]:
    from backend.strategies import get_strategy
    from perf.common import cached_problem

    model, ds, pool = cached_problem(inputs, embeddings=kernel in ("coreset", "badge"))
    strategy = get_strategy(kernel)
    return lambda: strategy.query(model, ds, pool, b, seed=0).indices


def _skal_classifier(n_classes: int, emb_dim: int | None):
    """A scikit-activeml classifier that returns cached outputs stored in X itself (no lookup cost):
    X = probs, or X = [z | probs] when embeddings are asked for (BADGE)."""
    from skactiveml.base import SkactivemlClassifier

    class FixedOutputs(SkactivemlClassifier):
        def __init__(self, emb_dim=None, classes=None, missing_label=np.nan):
            super().__init__(classes=classes, missing_label=missing_label)
            self.emb_dim = emb_dim

        def fit(self, X, y, sample_weight=None):
            return self

        def predict_proba(self, X, return_embeddings=False):
            if self.emb_dim is None:
                return X
            p, e = X[:, self.emb_dim:], X[:, :self.emb_dim]
            return (p, e) if return_embeddings else p

    return FixedOutputs(emb_dim=emb_dim, classes=np.arange(n_classes))


def _setup_peer(kernel: str, peer: str, inputs, b: int) -> Callable[[], np.ndarray]:
    z, probs, lab = inputs.z, inputs.probs, inputs.labeled
    n, c = probs.shape
    unl = inputs.unlabeled
    if peer == "numpy":
        from perf.common import kcenter_reference

        return lambda: kcenter_reference(z, lab, b)
    if peer == "skactiveml":
        y = np.full(n, np.nan)
        y[lab] = probs[lab].argmax(axis=1)
        if kernel == "coreset":
            from skactiveml.pool import CoreSet

            return lambda: np.asarray(CoreSet(random_state=0).query(X=z, y=y, batch_size=b))
        if kernel == "badge":
            from skactiveml.pool import Badge

            x = np.ascontiguousarray(np.concatenate([z, probs], axis=1))
            clf = _skal_classifier(c, z.shape[1])
            qs = Badge(clf_embedding_flag_name="return_embeddings", random_state=0)
            return lambda: np.asarray(qs.query(X=x, y=y, clf=clf, fit_clf=False, batch_size=b))
        from skactiveml.pool import UncertaintySampling

        method = {"margin": "margin_sampling", "entropy": "entropy"}[kernel]
        clf = _skal_classifier(c, None)
        qs = UncertaintySampling(method=method, random_state=0)
        return lambda: np.asarray(qs.query(X=probs, y=y, clf=clf, fit_clf=False, batch_size=b))
    if peer == "small-text":
        if kernel == "coreset":
            from small_text.query_strategies.coresets import greedy_coreset

            # small-text's GreedyCoreset lays the embeddings out as [unlabelled | labelled] itself
            x = np.ascontiguousarray(z[np.concatenate([unl, lab])])
            iu, il = np.arange(unl.size), np.arange(unl.size, n)
            return lambda: unl[greedy_coreset(x, iu, il, b, distance_metric="euclidean")]
        from small_text.query_strategies import BreakingTies, PredictionEntropy

        class CachedProbs:
            def predict_proba(self, dataset):
                return dataset

        qs = BreakingTies() if kernel == "margin" else PredictionEntropy()
        y_lab = probs[lab].argmax(axis=1)
        return lambda: np.asarray(qs.query(CachedProbs(), probs, unl, lab, y_lab, n=b))
    raise ValueError(f"unknown peer {peer!r}")


def _scoring_child(n: int, b: int, seed: int) -> dict[str, Any]:
    """Margin + entropy over ``TrainedFusionModel.predict`` on an N-item featurized dataset
    (modalities d=384 and d=512, 10 % of the second missing, intermediate fusion), plus a breakdown."""
    import torch
    import torch.nn.functional as F

    from backend import heuristics
    from backend.data import UNLABELED, MultimodalDataset, Pool
    from backend.models.fusion import FusionConfig
    from backend.models.trainer import PREDICT_BATCH, TrainConfig, train_model
    from backend.strategies import get_strategy
    from perf.common import peak_rss_bytes, reset_peak_rss, rss_bytes, time_call

    rng = np.random.default_rng(seed)
    n_classes, dims = 10, {"text": 384, "image": 512}
    y = rng.integers(0, n_classes, n)
    mods = {}
    for name, d in dims.items():
        centers = rng.standard_normal((n_classes, d), dtype=np.float32)
        arr = np.empty((n, d), dtype=np.float32)
        for s in range(0, n, 65536):
            e = min(n, s + 65536)
            arr[s:e] = rng.standard_normal((e - s, d), dtype=np.float32) * 2.0 + 0.5 * centers[y[s:e]]
        mods[name] = arr
    masks = {"image": rng.random(n) >= 0.1}
    mods["image"][~masks["image"]] = 0.0
    labels = np.full(n, UNLABELED, dtype=np.int64)
    lab = np.sort(rng.choice(n, 1000, replace=False))
    labels[lab] = y[lab]
    ds = MultimodalDataset(mods, labels, [f"c{k}" for k in range(n_classes)], masks,
                           ids=np.arange(n).astype(str).astype(object))
    t0 = time.perf_counter()
    model = train_model(ds, lab, fusion=FusionConfig(kind="intermediate"),
                        train=TrainConfig(epochs=10, patience=5, device="cpu"), seed=seed)
    train_s = time.perf_counter() - t0
    all_idx = np.arange(n)

    def score_all() -> tuple:
        p = model.predict(ds, all_idx).probs
        return heuristics.margin(p), heuristics.entropy(p)

    gc.collect()
    reset_peak_rss()
    rss0 = rss_bytes()
    t0 = time.perf_counter()
    score_all()  # first call on this dataset: also builds the model's device feature view
    cold = time.perf_counter() - t0
    warm, _, warm_cpu = time_call(score_all, repeats=3, budget_s=30.0)
    peak = peak_rss_bytes()

    # where the time goes: the predict loop, step by step (as TrainedFusionModel.predict does it for a dense
    # index set: contiguous views of the cached features, outputs written into preallocated tensors)
    feats = model._device_features(ds)
    parts: dict[str, float] = {"slice": 0.0, "forward": 0.0}  # wall seconds
    parts_cpu: dict[str, float] = {"slice": 0.0, "forward": 0.0}  # process CPU seconds

    def add(key: str, t: float, c: float) -> None:
        parts[key] = parts.get(key, 0.0) + time.perf_counter() - t
        parts_cpu[key] = parts_cpu.get(key, 0.0) + time.process_time() - c

    pred = None
    with torch.no_grad():
        for s in range(0, n, PREDICT_BATCH):
            t, c = time.perf_counter(), time.process_time()
            x, m = feats.batch(slice(s, min(s + PREDICT_BATCH, n)))
            add("slice", t, c)
            t, c = time.perf_counter(), time.process_time()
            out = model.module(x, m)
            add("forward", t, c)
            t, c = time.perf_counter(), time.process_time()
            if pred is None:
                pred = model._empty_predictions(n, out, m)
            model._write(pred, s, out, m)
            add("write outputs (softmax into preallocated tensors)", t, c)
        t, c = time.perf_counter(), time.process_time()
        heuristics.margin(pred.probs), heuristics.entropy(pred.probs)
        add("margin + entropy", t, c)
        fp32_margin = heuristics.margin(pred.probs)

        # the same forward, fused probabilities only (what a probs-only predict would give); then the same
        # under bf16 autocast
        def sliced(bf16: bool) -> tuple[float, torch.Tensor, float]:
            t, c = time.perf_counter(), time.process_time()
            logits = []
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                for s in range(0, n, PREDICT_BATCH):
                    x = {k: v[s:s + PREDICT_BATCH] for k, v in feats.inputs.items()}
                    mm = {k: v[s:s + PREDICT_BATCH] for k, v in feats.masks.items()}
                    logits.append(model.module(x, mm).logits)
            probs = F.softmax(torch.cat(logits).float(), dim=1)
            mg = heuristics.margin(probs)
            heuristics.entropy(probs)
            return time.perf_counter() - t, mg, time.process_time() - c

        runs = [sliced(False) for _ in range(2)]
        sliced_probs_only, sliced_cpu = min(r[0] for r in runs), min(r[2] for r in runs)
        sliced(True)  # warm-up (oneDNN bf16 kernels)
        bf16_s, bf16_margin, bf16_cpu = sliced(True)
        top = lambda m: set(torch.topk(m, b).indices.tolist())  # noqa: E731
        bf16_shared = len(top(fp32_margin) & top(bf16_margin))
        bf16_max_abs = float((fp32_margin - bf16_margin).abs().max())
    del pred
    pool = Pool.from_labeled(n, lab)
    margin = get_strategy("margin")
    q_times, _, _ = time_call(lambda: margin.query(model, ds, pool, b, seed=0), repeats=2, budget_s=10.0)
    return {
        "n": n, "b": b, "dims": dims, "train_s": train_s, "cold_s": cold, "times": warm, "cpu_times": warm_cpu,
        "peak_total": peak, "peak_extra": peak - rss0, "rss_before": rss0,
        "breakdown_s": parts, "breakdown_cpu_s": parts_cpu, "sliced_probs_only_s": sliced_probs_only,
        "sliced_probs_only_cpu_s": sliced_cpu, "sliced_probs_only_bf16_s": bf16_s, "sliced_probs_only_bf16_cpu_s": bf16_cpu,
        "bf16_topb_shared": bf16_shared, "bf16_margin_max_abs_diff": bf16_max_abs,
        "cpu_bf16": bool(getattr(torch.backends.mkldnn, "is_available", lambda: False)())
        and bool(getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()),
        "strategy_margin_query_s": min(q_times), "predict_batch": PREDICT_BATCH,
        "torch_threads": torch.get_num_threads(),
    }


def child_main(args: argparse.Namespace) -> None:
    """Run one method in this (fresh) process and write its result JSON."""
    _set_threads(args.threads)
    load1 = os.getloadavg()[0]
    from perf.common import BenchInputs, peak_rss_bytes, reset_peak_rss, rss_bytes, time_call

    kernel, impl = args.child.split(":")
    if kernel == "scoring":
        result = _scoring_child(args.scoring_n, args.batch, args.seed)
    else:
        inputs = BenchInputs.load(args.data)
        fn = _setup_ours(kernel, inputs, args.batch) if impl == "ours" else _setup_peer(kernel, impl, inputs, args.batch)
        gc.collect()
        reset_peak_rss()
        rss0 = rss_bytes()
        times, picks, cpu = time_call(fn, repeats=args.repeats, budget_s=2.0)
        peak = peak_rss_bytes()
        result = {"times": times, "cpu_times": cpu, "peak_total": peak, "peak_extra": peak - rss0, "rss_before": rss0,
                  "picks": np.asarray(picks, dtype=np.int64).tolist()}
    result["loadavg_1min_at_start"] = load1
    Path(args.result).write_text(json.dumps(result))


# ==================================================================================================
# parent side: orchestration, agreement, report


def _peer_versions(python: str) -> dict[str, str | None]:
    code = ("import importlib.metadata as m, json\nout={}\n"
            "for p in ['scikit-activeml','small-text','scikit-learn','numpy','torch','scipy']:\n"
            "    try: out[p]=m.version(p)\n    except m.PackageNotFoundError: out[p]=None\nprint(json.dumps(out))")
    res = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(res.stdout)


def _machine() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return {"cpu": cpu, "logical_cpus": os.cpu_count(), "mem_gib": mem, "python": platform.python_version(),
            "platform": platform.platform()}


def _run_child(spec: str, args: argparse.Namespace, data: Path | None, workdir: Path, timeout: float) -> dict | None:
    result = workdir / f"result-{spec.replace(':', '-')}-{os.getpid()}-{time.monotonic_ns()}.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", spec, "--result", str(result),
           "--batch", str(args.batch), "--threads", str(args.threads), "--repeats", str(args.repeats),
           "--seed", str(args.seed), "--scoring-n", str(args.scoring_n)]
    if data is not None:
        cmd += ["--data", str(data)]
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(args.threads)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        print(f"    {spec}: timed out after {timeout:.0f} s", flush=True)
        return None
    if proc.returncode != 0:
        print(f"    {spec}: FAILED (exit {proc.returncode})\n{proc.stderr[-3000:]}", flush=True)
        return None
    out = json.loads(result.read_text())
    result.unlink()
    out["process_s"] = time.perf_counter() - t0
    return out


def _mb(nbytes: float) -> str:
    return f"{nbytes / 2**20:,.0f}"


def _coreset_agreement(picks: list[int], ref: list[int] | None, ours: list[int] | None, inputs) -> str:
    """Same picks in the same order? At a divergence, say whether it is a float32 near-tie: the two
    candidates' float64 distances to the shared centers (labelled + earlier picks) within 1e-5 relative."""
    notes = []
    for name, other in (("ours", ours), ("numpy-f64", ref)):
        if other is None or other is picks:
            continue
        if picks == other:
            notes.append(f"= {name}: same {len(picks)} picks, same order")
            continue
        k = next(i for i, (a, c) in enumerate(zip(picks, other)) if a != c)
        centers = np.concatenate([inputs.labeled, np.asarray(picks[:k], dtype=np.int64)])
        x = inputs.z[centers].astype(np.float64)
        d = [float(((x - inputs.z[j].astype(np.float64)) ** 2).sum(axis=1).min()) for j in (picks[k], other[k])]
        gap = abs(d[0] - d[1]) / max(d)
        kind = f"a float32 near-tie (rel. gap {gap:.1e})" if gap < 1e-5 else f"rel. gap {gap:.1e}: NOT a tie"
        notes.append(f"vs {name}: diverges at pick {k}, {kind}; {len(set(picks) & set(other))}/{len(picks)} shared")
    return "; ".join(notes)


def _topb_agreement(kernel: str, picks: list[int], other: list[int], inputs, b: int, tol: float = 1e-6) -> str:
    from perf.common import entropy_reference, margin_reference, topb_reference

    if set(picks) == set(other):
        return f"same top-{b} set"
    unl = inputs.unlabeled
    ref = (margin_reference if kernel == "margin" else entropy_reference)(inputs.probs[unl])
    full = np.full(inputs.n, np.nan)
    full[unl] = ref
    boundary = full[topb_reference(ref, unl, b)[-1]]
    diff = np.array(sorted(set(picks) ^ set(other)))
    if np.all(np.abs(full[diff] - boundary) <= tol):
        return f"same top-{b} up to {diff.size // 2} tie(s) at the boundary"
    return f"DIFFERENT: {diff.size // 2} item(s) differ beyond ties"


def run_all(args: argparse.Namespace) -> dict[str, Any]:
    from perf.common import BenchInputs, badge_objective, entropy_reference, make_inputs, margin_reference, topb_reference

    workdir = Path(tempfile.mkdtemp(prefix="mmal-perf-", dir=args.workdir))
    started = time.perf_counter()
    versions = _peer_versions(sys.executable)
    have = {"skactiveml": versions.get("scikit-activeml") is not None,
            "small-text": versions.get("small-text") is not None, "numpy": True}
    report: dict[str, Any] = {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": args.command_line, "machine": _machine(), "threads": args.threads, "versions": versions,
        "params": {"d": args.d, "L": args.labeled, "b": args.batch, "C": args.classes, "seed": args.seed},
        "results": [], "scoring": None, "targets": {},
    }
    report["loadavg_start"] = os.getloadavg()
    if report["loadavg_start"][0] > 0.5 * (os.cpu_count() or 1):
        print(f"WARNING: 1-min load average {report['loadavg_start'][0]:.1f} on {os.cpu_count()} CPUs: "
              "other processes compete, timings will be inflated", flush=True)
    print(f"mmal kernel benchmark  d={args.d} L={args.labeled} b={args.batch} C={args.classes}  "
          f"threads={args.threads}  {report['machine']['cpu']}", flush=True)
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items() if v), flush=True)
    if not have["skactiveml"] or not have["small-text"]:
        print("note: peers missing in this interpreter; run through `bash perf/run.sh` to compare", flush=True)
    sizes = [(n, True) for n in args.sizes] + [(n, False) for n in args.ours_sizes]
    try:
        for n, with_peers in sizes:
            t_gen = time.perf_counter()
            inputs = make_inputs(n, args.d, args.classes, args.labeled, args.seed)
            data = workdir / f"n{n}"
            inputs.save(data)
            print(f"\n== N = {n:,}  (inputs generated in {time.perf_counter() - t_gen:.1f} s)", flush=True)
            for kernel in args.kernels:
                impls = ["ours"]
                if with_peers:
                    for peer in PEERS[kernel]:
                        if not have[peer]:
                            continue
                        if kernel == "coreset" and peer == "small-text" and n > args.small_text_max:
                            print(f"  (small-text greedy_coreset skipped at N={n:,}: above --small-text-max "
                                  f"{args.small_text_max:,}; it recomputes every distance each pick)", flush=True)
                            continue
                        if kernel == "coreset" and peer == "numpy" and n > args.numpy_ref_max:
                            continue
                        impls.append(peer)
                rows: dict[str, dict] = {}
                for impl in impls:
                    res = _run_child(f"{kernel}:{impl}", args, data, workdir, args.child_timeout)
                    if res is not None:
                        rows[impl] = res
                _report_kernel(kernel, n, rows, inputs, args, report,
                               badge_objective, margin_reference, entropy_reference, topb_reference)
            del inputs
            shutil.rmtree(data, ignore_errors=True)
        if args.scoring_n > 0:
            print(f"\n== scoring {args.scoring_n:,} items from cached features with TrainedFusionModel.predict "
                  "(text d=384 + image d=512, intermediate fusion)", flush=True)
            res = _run_child("scoring:ours", args, None, workdir, args.child_timeout)
            report["scoring"] = res
            if res is not None:
                _print_scoring(res)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    report["loadavg_end"] = os.getloadavg()
    _targets(report)
    report["total_s"] = time.perf_counter() - started
    print(f"\ntotal wall time {report['total_s']:.0f} s; load average (1/5/15 min) at start "
          f"{'/'.join(f'{x:.1f}' for x in report['loadavg_start'])}, at end "
          f"{'/'.join(f'{x:.1f}' for x in report['loadavg_end'])}", flush=True)
    return report


def _report_kernel(kernel: str, n: int, rows: dict[str, dict], inputs, args, report,
                   badge_objective, margin_reference, entropy_reference, topb_reference) -> None:
    b = args.batch
    ours = rows.get("ours")
    print(f"  {kernel}", flush=True)
    print(f"    {'implementation':<52} {'wall s':>8} {'ours/peer':>9} {'cpu s':>8} {'ours/peer':>9} "
          f"{'peak extra MB':>13} {'peak total MB':>13}  agreement", flush=True)
    extra: dict[str, Any] = {}
    if kernel == "badge":
        unl = inputs.unlabeled
        rand = np.random.default_rng(args.seed).choice(unl, b, replace=False)
        extra["random_objective"] = badge_objective(inputs.probs, inputs.z, unl, np.sort(rand))
    if kernel in ("margin", "entropy"):
        unl = inputs.unlabeled
        ref = (margin_reference if kernel == "margin" else entropy_reference)(inputs.probs[unl])
        extra["reference_topb"] = topb_reference(ref, unl, b).tolist()
    for impl, res in rows.items():
        t = min(res["times"])
        label = "ours (mmal strategy, torch)" if impl == "ours" else PEER_LABEL[(kernel, impl)]
        c = min(res["cpu_times"])
        ratio = "" if impl == "ours" or ours is None else f"{min(ours['times']) / t:.3f}x"
        cratio = "" if impl == "ours" or ours is None else f"{min(ours['cpu_times']) / c:.3f}x"
        picks = res["picks"]
        valid = len(set(picks)) == b and not set(picks) & set(inputs.labeled.tolist())
        if kernel == "coreset":
            agree = _coreset_agreement(picks, rows.get("numpy", {}).get("picks"), ours["picks"] if ours else None, inputs)
        elif kernel == "badge":
            obj = badge_objective(inputs.probs, inputs.z, inputs.unlabeled, np.array(sorted(picks)))
            res["objective"] = obj
            agree = f"objective {obj:.4g} (random batch {extra['random_objective']:.4g})"
        else:
            ref_set = extra["reference_topb"]
            agree = "= numpy-f64 top-b" if set(picks) == set(ref_set) else \
                _topb_agreement(kernel, picks, ref_set, inputs, b) + " vs numpy-f64"
            if impl != "ours" and ours is not None:
                agree += "; vs ours: " + _topb_agreement(kernel, picks, ours["picks"], inputs, b)
        if not valid:
            agree = "INVALID batch; " + agree
        print(f"    {label:<52} {t:8.3f} {ratio:>9} {c:8.3f} {cratio:>9} {_mb(res['peak_extra']):>13} {_mb(res['peak_total']):>13}  {agree}",
              flush=True)
        report["results"].append({"kernel": kernel, "n": n, "impl": impl, "label": label, "wall_s": t,
                                  "times": res["times"], "cpu_s": c, "cpu_times": res["cpu_times"],
                                  "cpu_ratio_ours_over_peer": None if impl == "ours" or ours is None else min(ours["cpu_times"]) / c,
                                  "loadavg_1min_at_start": res.get("loadavg_1min_at_start"), "peak_extra_bytes": res["peak_extra"],
                                  "peak_total_bytes": res["peak_total"], "rss_before_bytes": res["rss_before"],
                                  "ratio_ours_over_peer": None if impl == "ours" or ours is None else min(ours["times"]) / t,
                                  "agreement": agree, "valid": valid, "objective": res.get("objective")})
    if kernel == "badge" and ours is not None and "skactiveml" in rows:
        o, p = rows["ours"]["objective"], rows["skactiveml"]["objective"]
        print(f"    BADGE picks are random (D^2 sampling, different RNGs): compare objectives, ours/peer = {o / p:.3f} "
              f"(random batch {extra['random_objective'] / p:.3f})", flush=True)


def _print_scoring(res: dict) -> None:
    print(f"    model trained in {res['train_s']:.1f} s (1000 labels, early stopping); predict batch {res['predict_batch']}, "
          f"torch threads {res['torch_threads']}", flush=True)
    print(f"    predict(all {res['n']:,}) + margin + entropy: {min(res['times']):.3f} s warm, cpu {min(res['cpu_times']):.3f} s "
          f"(runs: {', '.join(f'{t:.2f}' for t in res['times'])}), {res['cold_s']:.3f} s first call", flush=True)
    print(f"    peak memory: {_mb(res['peak_extra'])} MB extra over the loaded features, {_mb(res['peak_total'])} MB total",
          flush=True)
    print("    where the time goes (one warm pass, wall/cpu): " + ", ".join(
        f"{k} {v:.3f}/{res['breakdown_cpu_s'][k]:.3f} s" for k, v in res["breakdown_s"].items()), flush=True)
    print(f"    same forward, fused probs only (no per-modality outputs): "
          f"{res['sliced_probs_only_s']:.3f} s wall, {res['sliced_probs_only_cpu_s']:.3f} s cpu", flush=True)
    print(f"    same under CPU bf16 autocast: {res['sliced_probs_only_bf16_s']:.3f} s wall, "
          f"{res['sliced_probs_only_bf16_cpu_s']:.3f} s cpu (CPU has native bf16: {res['cpu_bf16']}); "
          f"its margin top-{res['b']} shares {res['bf16_topb_shared']} items with fp32's (max |margin diff| "
          f"{res['bf16_margin_max_abs_diff']:.3g})", flush=True)
    print(f"    get_strategy('margin').query over the {res['n'] - 1000:,} unlabelled items: "
          f"{res['strategy_margin_query_s']:.3f} s", flush=True)


def _targets(report: dict) -> None:
    def find(kernel: str, n: int, impl: str) -> dict | None:
        return next((r for r in report["results"] if r["kernel"] == kernel and r["n"] == n and r["impl"] == impl), None)

    t = report["targets"]
    r = find("coreset", 50_000, "skactiveml")
    if r:
        t["coreset_50k_ratio"] = {"value": r["ratio_ours_over_peer"], "limit": 0.25, "ok": r["ratio_ours_over_peer"] <= 0.25,
                                  "cpu_ratio": r["cpu_ratio_ours_over_peer"]}
    r = find("badge", 10_000, "skactiveml")
    if r:
        t["badge_10k_ratio"] = {"value": r["ratio_ours_over_peer"], "limit": 0.15, "ok": r["ratio_ours_over_peer"] <= 0.15,
                                "cpu_ratio": r["cpu_ratio_ours_over_peer"]}
    s = report.get("scoring")
    if s and s["n"] >= 1_000_000:
        v = min(s["times"])
        t["scoring_1m_s"] = {"value": v, "limit": 2.0, "ok": v < 2.0, "cpu_s": min(s["cpu_times"])}
    r = find("badge", 100_000, "ours")
    if r:
        v = r["peak_total_bytes"] / 1e9
        t["badge_100k_peak"] = {"value": v, "limit": 1.5, "ok": v <= 1.5, "extra_gb": r["peak_extra_bytes"] / 1e9}
    print("\ntargets (CPU):", flush=True)
    for key, text in TARGETS.items():
        if key not in t:
            print(f"  [ -- ] {text}: not measured in this run", flush=True)
            continue
        v = t[key]
        unit = {"coreset_50k_ratio": "x", "badge_10k_ratio": "x", "scoring_1m_s": " s", "badge_100k_peak": " GB"}[key]
        more = f" (cpu-time ratio {v['cpu_ratio']:.3f}x)" if v.get("cpu_ratio") is not None else ""
        more += f" (cpu time {v['cpu_s']:.2f} s over {report['threads']} threads)" if "cpu_s" in v else ""
        more += f" ({v['extra_gb']:.3f} GB above the loaded inputs)" if "extra_gb" in v else ""
        print(f"  [{'PASS' if v['ok'] else 'MISS'}] {text}: {v['value']:.3f}{unit}{more}", flush=True)


def _ints(text: str) -> list[int]:
    return [int(float(x)) for x in text.split(",") if x.strip()] if text else []


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fast subset: peers at N=10k (no small-text core-set), "
                   "ours alone at 100k, scoring at 100k")
    p.add_argument("--full", action="store_true", help="also run small-text's core-set at N=50k (minutes)")
    p.add_argument("--sizes", default=None, help="N compared with peers (default 10000,50000)")
    p.add_argument("--ours-sizes", default=None, help="N for ours alone (default 100000,1000000)")
    p.add_argument("--kernels", default=",".join(KERNELS), help="subset of coreset,badge,margin,entropy")
    p.add_argument("--scoring-n", type=int, default=None, help="items for the predict+scoring run (0 = skip; default 1M)")
    p.add_argument("--d", type=int, default=512)
    p.add_argument("--labeled", type=int, default=1000)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="torch/OpenMP/BLAS threads per method (target: 2 cores)")
    p.add_argument("--repeats", type=int, default=3, help="runs per method while under 2 s; the minimum is reported")
    p.add_argument("--small-text-max", type=int, default=None, help="largest N for small-text's core-set")
    p.add_argument("--numpy-ref-max", type=int, default=50_000, help="largest N for the NumPy k-center reference")
    p.add_argument("--child-timeout", type=float, default=900.0)
    p.add_argument("--workdir", default=None, help="where the .npy inputs go (default: system temp)")
    p.add_argument("--json", default=str(ROOT / "runs" / "perf" / "kernels.json"), help="write all figures here")
    # internal: one method in a fresh process
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--data", default=None, help=argparse.SUPPRESS)
    p.add_argument("--result", default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    a.sizes = _ints(a.sizes) if a.sizes is not None else ([10_000] if a.quick else [10_000, 50_000])
    a.ours_sizes = _ints(a.ours_sizes) if a.ours_sizes is not None else ([100_000] if a.quick else [100_000, 1_000_000])
    if a.scoring_n is None:
        a.scoring_n = 100_000 if a.quick else 1_000_000
    if a.small_text_max is None:
        a.small_text_max = 50_000 if a.full else (0 if a.quick else 10_000)
    a.kernels = [k for k in a.kernels.split(",") if k]
    bad = set(a.kernels) - set(KERNELS)
    if bad:
        p.error(f"unknown kernels {sorted(bad)}; choose from {', '.join(KERNELS)}")
    a.command_line = " ".join(shlex.quote(x) for x in [os.path.relpath(sys.argv[0], ROOT), *(argv if argv is not None else sys.argv[1:])])
    return a


def main(argv: list[str] | None = None) -> int:
    """Entry point: the whole harness, or (internally) one method in a fresh process."""
    args = parse_args(argv)
    if args.child:
        child_main(args)
        return 0
    report = run_all(args)
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=1))
        print(f"figures written to {os.path.relpath(out, Path.cwd())}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
