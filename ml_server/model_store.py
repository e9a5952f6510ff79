"""Model versions per project on disk, written atomically, with an in-memory cache for the server.

Layout under ``MODEL_DIR``::

    project-<id>/versions/<version>/model.pt       the TrainedFusionModel (weights_only safe format)
    project-<id>/versions/<version>/meta.json      featurizers, label config, strategy, diagnostics, ...
    project-<id>/versions/<version>/ranking.json   task id -> [label, score] as written to Label Studio
    project-<id>/versions/<version>/calibration.npy sorted pool priorities (maps a new task's priority to a score)
    project-<id>/current.json                       {"version": "..."}: the version that serves
    project-<id>/cold_start.json                    the order published before the first training
                                                    (version, task id -> score), no model
    project-<id>/task-cache.json                    the tasks as last read from Label Studio (data,
                                                    annotations; see ml_server.training.pull_project_tasks)

A version directory is assembled under a temporary name and renamed into place, and ``current.json`` is
replaced atomically, so a reader sees either the previous version or the new one, never a half-written
one; a training that fails before the switch leaves the previous version serving. The server keeps the
loaded model in memory and reloads it only when ``current.json`` names another version.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from backend.data import DataError
from backend.files import json_default, write_atomic

_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


PRIVATE = 0o600  # the project's state files (current.json, cold_start.json, task-cache.json): owner only


def _check_project(project_id: int) -> int:
    if isinstance(project_id, bool) or not isinstance(project_id, (int, np.integer)) or project_id < 0:
        raise DataError(f"project id must be a non-negative int, got {project_id!r}")
    return int(project_id)


def check_version(version: str) -> str:
    """A model version is used as a directory name: letters, digits, '.', '_' and '-' only."""
    if not isinstance(version, str) or not _VERSION_RE.match(version):
        raise DataError(f"invalid model version {version!r}: use letters, digits, '.', '_' and '-' (max 128)")
    return version


def version_name(n: int, tag: str = "") -> str:
    """``mmal-<n>-<tag>-<UTC timestamp>-<4 hex>`` (see :meth:`ModelStore.new_version`)."""
    slug = re.sub(r"[^A-Za-z0-9]+", "_", tag).strip("_")[:40]
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    return f"mmal-{int(n)}-{slug + '-' if slug else ''}{stamp}-{uuid.uuid4().hex[:4]}"


@dataclass
class ColdStart:
    """The order published before the first training: ``scores`` task id -> Label Studio score."""

    version: str
    scores: dict[int, float]
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class LoadedVersion:
    """A model version in memory: the model, its metadata, its task ranking and calibration."""

    project_id: int
    version: str
    model: Any  # TrainedFusionModel
    meta: dict[str, Any]
    ranking: dict[int, tuple[str, float]] = field(default_factory=dict)
    calibration: np.ndarray | None = None


class ModelStore:
    """Atomic save/load of model versions per project (see module docstring)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._cache: dict[int, LoadedVersion] = {}
        self._cold: dict[int, tuple[int, ColdStart]] = {}
        self._lock = threading.Lock()

    # --- paths -------------------------------------------------------------------------------------
    def project_dir(self, project_id: int) -> Path:
        return self.root / f"project-{_check_project(project_id)}"

    def version_dir(self, project_id: int, version: str) -> Path:
        return self.project_dir(project_id) / "versions" / check_version(version)

    # --- versions ----------------------------------------------------------------------------------
    def new_version(self, project_id: int, tag: str = "") -> str:
        """A fresh, unique, time-ordered version name: ``mmal-<n>-<tag>-<UTC timestamp>-<4 hex>``.

        ``tag`` names what made the order (the strategy, e.g. ``margin``; ``coverage`` for a cold start), so
        the team sees in Label Studio's model-version list what drives the queue; it is reduced to
        letters, digits and ``_``. A cold start is ``n = 0``: a model-free order, never a stored version.
        """
        seqs = [int(m.group(1)) for v in self.list_versions(project_id) if (m := re.match(r"^mmal-(\d+)-", v))]
        n = max(seqs, default=0) + 1
        return version_name(n, tag)

    def list_versions(self, project_id: int) -> list[str]:
        """Stored versions, oldest first (by the time they were saved)."""
        vdir = self.project_dir(project_id) / "versions"
        if not vdir.is_dir():
            return []
        entries = []
        for d in vdir.iterdir():
            if d.is_dir() and not d.name.startswith(".") and (d / "meta.json").is_file():
                try:
                    saved = json.loads((d / "meta.json").read_text()).get("saved_at", 0.0)
                except (OSError, ValueError):
                    continue
                entries.append((float(saved), d.name))
        return [name for _, name in sorted(entries)]

    def current_version(self, project_id: int) -> str | None:
        """The version that serves now, or None before the first successful training."""
        path = self.project_dir(project_id) / "current.json"
        try:
            version = json.loads(path.read_text()).get("version")
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return None
        return version if isinstance(version, str) and (self.project_dir(project_id) / "versions" / version).is_dir() else None

    def projects(self) -> list[int]:
        """Ids of projects that have a model directory."""
        if not self.root.is_dir():
            return []
        out = []
        for d in self.root.iterdir():
            m = re.match(r"^project-(\d+)$", d.name)
            if m and d.is_dir():
                out.append(int(m.group(1)))
        return sorted(out)

    # --- writing -----------------------------------------------------------------------------------
    def save(self, project_id: int, version: str, model: Any, meta: dict[str, Any],
             ranking: dict[int, tuple[str, float]] | None = None, calibration: np.ndarray | None = None) -> Path:
        """Write a complete version directory atomically (it does not serve until :meth:`set_current`)."""
        final = self.version_dir(project_id, version)
        if final.exists():
            raise DataError(f"model version {version!r} of project {project_id} already exists")
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{version}."))
        try:
            model.save(tmp / "model.pt")
            full_meta = dict(meta)
            full_meta.update({"version": version, "project_id": int(project_id), "saved_at": time.time()})
            (tmp / "meta.json").write_text(json.dumps(full_meta, indent=1, default=json_default))
            (tmp / "ranking.json").write_text(json.dumps({str(k): [v[0], float(v[1])] for k, v in (ranking or {}).items()}))
            if calibration is not None:
                with open(tmp / "calibration.npy", "wb") as fh:
                    np.save(fh, np.asarray(calibration, dtype=np.float64))
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return final

    def set_current(self, project_id: int, version: str) -> None:
        """Make ``version`` the serving one (atomic replace of ``current.json``)."""
        if not self.version_dir(project_id, version).is_dir():
            raise DataError(f"cannot serve unknown version {version!r} of project {project_id}")
        write_atomic(self.project_dir(project_id) / "current.json",
                     json.dumps({"version": version, "since": time.time()}), mode=PRIVATE)

    def discard(self, project_id: int, version: str) -> None:
        """Remove a version that never served (e.g. after a failed job); the current one is refused."""
        if version == self.current_version(project_id):
            raise DataError(f"version {version!r} is serving; it cannot be discarded")
        shutil.rmtree(self.version_dir(project_id, version), ignore_errors=True)

    def prune(self, project_id: int, keep: int) -> list[str]:
        """Delete all but the newest ``keep`` versions (never the current one); returns the deleted ones."""
        current = self.current_version(project_id)
        versions = self.list_versions(project_id)
        doomed = [v for v in versions[:-keep] if v != current] if keep > 0 else []
        for v in doomed:
            shutil.rmtree(self.version_dir(project_id, v), ignore_errors=True)
        # stale temporary directories of crashed saves
        vdir = self.project_dir(project_id) / "versions"
        if vdir.is_dir():
            for d in vdir.iterdir():
                if d.name.startswith(".") and d.is_dir() and time.time() - d.stat().st_mtime > 3600:
                    shutil.rmtree(d, ignore_errors=True)
        return doomed

    def save_cold_start(self, project_id: int, cold: ColdStart) -> None:
        """Record the published cold-start order (atomic replace; /predict answers from it until a training)."""
        check_version(cold.version)
        payload = {"version": cold.version, "scores": {str(k): float(v) for k, v in cold.scores.items()},
                   "meta": cold.meta, "saved_at": time.time()}
        write_atomic(self.project_dir(project_id) / "cold_start.json",
                     json.dumps(payload, default=json_default), mode=PRIVATE)

    def cold_start(self, project_id: int) -> ColdStart | None:
        """The published cold-start order, or None (none yet, or unreadable); cached by file time."""
        path = self.project_dir(project_id) / "cold_start.json"
        try:
            stamp = path.stat().st_mtime_ns
        except OSError:
            return None
        cached = self._cold.get(project_id)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        try:
            raw = json.loads(path.read_text())
            cold = ColdStart(str(raw["version"]), {int(k): float(v) for k, v in raw["scores"].items()},
                             dict(raw.get("meta") or {}))
        except (OSError, ValueError, KeyError, TypeError):
            return None
        self._cold[project_id] = (stamp, cold)
        return cold

    def save_task_cache(self, project_id: int, tasks: dict[int, dict[str, Any]]) -> None:
        """The project's tasks as last read from Label Studio (see ml_server.training.pull_project_tasks)."""
        write_atomic(self.project_dir(project_id) / "task-cache.json",
                     json.dumps({str(k): v for k, v in tasks.items()}), mode=PRIVATE)

    def load_task_cache(self, project_id: int) -> dict[int, dict[str, Any]]:
        """The cached tasks (empty when there is none or it cannot be read: everything is read again)."""
        try:
            raw = json.loads((self.project_dir(project_id) / "task-cache.json").read_text())
            return {int(k): v for k, v in raw.items()}
        except (OSError, ValueError, AttributeError):
            return {}

    # --- reading -----------------------------------------------------------------------------------
    def read_meta(self, project_id: int, version: str) -> dict[str, Any]:
        return json.loads((self.version_dir(project_id, version) / "meta.json").read_text())

    def load(self, project_id: int, version: str, device: str | None = None) -> LoadedVersion:
        """Read a version from disk (no caching)."""
        from backend.models.trainer import TrainedFusionModel

        vdir = self.version_dir(project_id, version)
        model = TrainedFusionModel.load(vdir / "model.pt", device=device)
        meta = json.loads((vdir / "meta.json").read_text())
        ranking: dict[int, tuple[str, float]] = {}
        rpath = vdir / "ranking.json"
        if rpath.is_file():
            ranking = {int(k): (v[0], float(v[1])) for k, v in json.loads(rpath.read_text()).items()}
        cpath = vdir / "calibration.npy"
        calibration = np.load(cpath, allow_pickle=False) if cpath.is_file() else None
        return LoadedVersion(int(project_id), version, model, meta, ranking, calibration)

    def get_current(self, project_id: int, device: str | None = "cpu") -> LoadedVersion | None:
        """The serving version, from memory unless ``current.json`` names another one since the last call."""
        version = self.current_version(project_id)
        if version is None:
            return None
        cached = self._cache.get(project_id)
        if cached is not None and cached.version == version:
            return cached
        with self._lock:
            cached = self._cache.get(project_id)
            if cached is not None and cached.version == version:
                return cached
            loaded = self.load(project_id, version, device=device)
            self._cache[project_id] = loaded
            return loaded
