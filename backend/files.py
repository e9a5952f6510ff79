"""Files written whole or not at all, and JSON that knows numpy: the helpers every writer uses.

A reader (another worker, a resumed run, the server reading what a training wrote) never sees a partial
file: everything is written to a temporary file beside the target and then renamed over it
(``os.replace``, atomic on one file system). A failed write leaves the old file and no temporary one.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from pathlib import Path
from typing import Any, Iterator

import numpy as np

__all__ = ["replacing", "write_atomic", "write_json_atomic", "json_default", "json_default_str"]


@contextlib.contextmanager
def replacing(path: str | os.PathLike[str], *, mode: int | None = None) -> Iterator[Path]:
    """A temporary path beside ``path`` to write (a writer that takes a path: pandas, numpy, torch); when the
    block ends it replaces ``path`` at once, when it fails it is removed. ``mode``: the file's permissions
    (default: a new file's, from the umask)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        yield tmp
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: str | os.PathLike[str], data: bytes | str, *, fsync: bool = True,
                 mode: int | None = None) -> None:
    """Write ``data`` (text as UTF-8) to ``path`` atomically. ``fsync``: on disk before the rename (records a
    crash must not lose); caches that can recompute an entry skip it. ``mode`` as in :func:`replacing`."""
    payload = data.encode() if isinstance(data, str) else data
    with replacing(path, mode=mode) as tmp:
        with open(tmp, "xb") as fh:
            fh.write(payload)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())


def write_json_atomic(path: str | os.PathLike[str], obj: Any, *, mode: int | None = None, **dumps: Any) -> None:
    """``obj`` as JSON (numpy values and paths via :func:`json_default`; ``dumps``: json.dumps options),
    written atomically and durably."""
    write_atomic(path, json.dumps(obj, default=json_default, **dumps), mode=mode)


def json_default(o: Any) -> Any:
    """``json.dumps(default=...)`` for numpy scalars and arrays and paths; anything else is a TypeError."""
    if isinstance(o, np.bool_):
        return bool(o)
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def json_default_str(o: Any) -> Any:
    """Like :func:`json_default`, but anything else becomes its ``str()`` (status records must always write)."""
    try:
        return json_default(o)
    except TypeError:
        return str(o)
