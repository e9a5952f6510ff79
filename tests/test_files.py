"""backend.files: atomic writes (whole or not at all, no temporary left) and JSON for numpy values."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import numpy as np
import pytest

from backend.files import json_default, json_default_str, replacing, write_atomic, write_json_atomic


def test_write_atomic_replaces_whole_files_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "state.json"
    write_atomic(target, "first")
    write_atomic(target, b"second", fsync=False, mode=0o600)
    assert target.read_bytes() == b"second" and stat.S_IMODE(target.stat().st_mode) == 0o600
    with pytest.raises(RuntimeError):
        with replacing(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("the writer died")
    assert target.read_bytes() == b"second" and sorted(p.name for p in target.parent.iterdir()) == ["state.json"]


def test_json_default_knows_numpy_and_paths(tmp_path: Path) -> None:
    obj = {"i": np.int64(3), "f": np.float32(0.5), "b": np.bool_(True), "a": np.arange(3), "p": Path("/x")}
    write_json_atomic(tmp_path / "r.json", obj, mode=0o644, indent=1)
    assert json.loads((tmp_path / "r.json").read_text()) == {"i": 3, "f": 0.5, "b": True, "a": [0, 1, 2], "p": "/x"}
    with pytest.raises(TypeError, match="not JSON serialisable: object"):
        json_default(object())
    assert json_default_str({1}) == "{1}"
