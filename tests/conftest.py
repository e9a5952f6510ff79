"""Shared fixtures: small real problems with real trained torch fusion models (fast on CPU)."""

from __future__ import annotations

import numpy as np
import pytest
import redis

from backend.data import UNLABELED, MultimodalDataset, Pool
from backend.models.fusion import FusionConfig
from backend.models.trainer import TrainConfig, train_model


def make_toy_dataset(n: int = 300, n_modalities: int = 2, n_classes: int = 3, missing_rate: float = 0.2,
                     seed: int = 0) -> MultimodalDataset:
    """Gaussian class clusters seen through each modality with different noise; the last modality is
    missing completely at random for ``missing_rate`` of the items."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    names = ["a", "b", "c", "d"][:n_modalities]
    dims = [8, 6, 5, 4][:n_modalities]
    mods, masks = {}, {}
    for j, (name, d) in enumerate(zip(names, dims)):
        centers = rng.normal(0, 1.5, (n_classes, d))
        mods[name] = (centers[y] + rng.normal(0, 1.0 + 0.5 * j, (n, d))).astype(np.float32)
    masks[names[-1]] = rng.random(n) >= missing_rate
    labels = np.full(n, UNLABELED)
    return MultimodalDataset(mods, labels, [f"class{c}" for c in range(n_classes)], masks, true_labels=y)


def make_toy_multilabel_dataset(n: int = 300, n_modalities: int = 2, n_classes: int = 4, missing_rate: float = 0.2,
                                seed: int = 0) -> MultimodalDataset:
    """Label sets: each class in an item's set with probability 0.35 (empty sets occur); each modality
    sees the sum of its set's class centres plus noise; the last modality is missing MCAR."""
    rng = np.random.default_rng(seed)
    y = (rng.random((n, n_classes)) < 0.35).astype(np.int64)
    names = ["a", "b", "c", "d"][:n_modalities]
    dims = [8, 6, 5, 4][:n_modalities]
    mods, masks = {}, {}
    for j, (name, d) in enumerate(zip(names, dims)):
        centers = rng.normal(0, 1.5, (n_classes, d))
        mods[name] = (y @ centers + rng.normal(0, 0.7 + 0.3 * j, (n, d))).astype(np.float32)
    masks[names[-1]] = rng.random(n) >= missing_rate
    labels = np.full((n, n_classes), UNLABELED)
    return MultimodalDataset(mods, labels, [f"tag{c}" for c in range(n_classes)], masks, true_labels=y)


def make_problem(n_modalities: int, kind: str = "intermediate", seed: int = 0, recipe: str = "sgd",
                 multi_label: bool = False):
    make = make_toy_multilabel_dataset if multi_label else make_toy_dataset
    ds = make(n_modalities=n_modalities, seed=seed)
    rng = np.random.default_rng(seed)
    labeled = rng.choice(len(ds), 40, replace=False)
    ds.labels[labeled] = ds.true_labels[labeled]
    model = train_model(ds, labeled, fusion=FusionConfig(kind=kind, hidden=32, embed_dim=16),
                        train=TrainConfig(epochs=30, patience=5, batch_size=32, recipe=recipe), seed=seed)
    return model, ds, Pool.from_labeled(len(ds), labeled)


@pytest.fixture(scope="session")
def problem():
    """(model, dataset, pool): 2 vector modalities 'a', 'b' with ~20 % of 'b' missing, 40 labelled."""
    return make_problem(2)


@pytest.fixture(scope="session")
def problem3():
    """(model, dataset, pool): 3 vector modalities 'a', 'b', 'c' with ~20 % of 'c' missing."""
    return make_problem(3)


@pytest.fixture(scope="session")
def problem_probe():
    """(model, dataset, pool): as ``problem3``, trained with recipe 'probe' (linear heads, product of experts)."""
    return make_problem(3, recipe="probe")


@pytest.fixture(scope="session")
def problem_multilabel():
    """(model, dataset, pool): label sets over 4 classes, 2 vector modalities (20 % of 'b' missing), recipe 'sgd'."""
    return make_problem(2, multi_label=True)


@pytest.fixture(scope="session")
def problem_multilabel_probe():
    """(model, dataset, pool): label sets over 4 classes, 3 vector modalities, recipe 'probe'."""
    return make_problem(3, recipe="probe", multi_label=True)


@pytest.fixture(scope="module")
def labelstudio():
    """A real Label Studio 1.23.2 (own venv, template data dir) for the module's tests."""
    from ml_server.ls_process import start_label_studio

    ls = start_label_studio()
    yield ls
    ls.stop()


@pytest.fixture(scope="module")
def lsc(labelstudio):
    """The SDK connector to that Label Studio."""
    from connectors.labelstudio import LabelStudioConnector

    c = LabelStudioConnector(labelstudio.url, labelstudio.token)
    yield c
    c.close()


@pytest.fixture()
def rconn(request):
    """The real Redis database named by the test module's ``REDIS_URL``, flushed before and after."""
    conn = redis.Redis.from_url(request.module.REDIS_URL)
    conn.flushdb()
    yield conn
    conn.flushdb()


def settings_from_env(env: dict[str, str]):
    """``ml_server.settings.Settings`` as a process whose environment is exactly ``env`` reads them."""
    import os

    from ml_server.settings import Settings

    old = dict(os.environ)
    try:
        os.environ.clear()
        os.environ.update(env)
        return Settings()
    finally:
        os.environ.clear()
        os.environ.update(old)


def wait_for(predicate, timeout: float = 120, interval: float = 0.05, what: str = "condition"):
    """Poll ``predicate`` until it returns something truthy (returned), else fail naming ``what``."""
    from perf.server_harness import wait_until

    return wait_until(predicate, timeout, interval, what, error=AssertionError)


def annotate(lsc, project, task_ids) -> None:
    """Label ``task_ids`` of a demo project with their true class through the Label Studio API."""
    from ml_server.demo import choice_annotation

    for tid in task_ids:
        lsc.create_annotation(tid, choice_annotation(project.control, project.to_name, project.truth[tid]))
