"""scripts/bootstrap.sh fails loudly: the first pip error stops it with pip's message (the "WARNING:
Location" filter keeps pip's exit status), and the stamp that makes a re-run a no-op is not written.

The whole script runs in a temporary copy of the repository with its own fresh .venv (never the shared
one) and no package index but an empty wheel store, so its first pip step fails as a real install would.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BOOTSTRAP = REPO / "scripts" / "bootstrap.sh"


def bash(script: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", script], cwd=str(REPO), capture_output=True, text=True, timeout=120,
                          env=env)


def test_the_filter_keeps_pips_failure_and_its_message():
    result = bash("set -euo pipefail\nsource scripts/pip_quiet.sh\n"
                  f"pip_quiet {sys.executable} -m pip install --no-index --no-deps mmal-no-such-package==0.0.0\n"
                  "echo AFTER")
    assert result.returncode != 0, result
    assert "AFTER" not in result.stdout
    assert re.search(r"No matching distribution found for mmal-no-such-package", result.stdout + result.stderr)
    assert "FAILED (exit 1)" in result.stderr and "mmal-no-such-package" in result.stderr
    # what the script used to do: the same failure, status swallowed
    old = bash(f"set -euo pipefail\n{sys.executable} -m pip install --no-index mmal-no-such-package==0.0.0 2>&1 "
               "| grep -v '^WARNING: Location' || true\necho AFTER")
    assert old.returncode == 0 and "AFTER" in old.stdout


def test_the_filter_drops_only_the_location_noise_and_lets_quiet_success_pass():
    result = bash("set -euo pipefail\nsource scripts/pip_quiet.sh\n"
                  "pip_quiet sh -c 'echo \"WARNING: Location /opt/wheels is ignored\"; echo kept; echo err >&2'\n"
                  "pip_quiet true\necho AFTER")  # `true` prints nothing: grep exits 1, which is no failure
    assert result.returncode == 0, result
    assert "kept" in result.stdout and "err" in result.stdout and "AFTER" in result.stdout
    assert "WARNING: Location" not in result.stdout + result.stderr


def test_every_pip_call_of_the_script_goes_through_the_filter():
    text = BOOTSTRAP.read_text()
    assert "set -euo pipefail" in text and "source scripts/pip_quiet.sh" in text
    pip_lines = [ln for ln in text.splitlines() if "pip install" in ln and not ln.lstrip().startswith("#")]
    assert len(pip_lines) == 3 and all(ln.startswith("pip_quiet .venv/bin/pip install") for ln in pip_lines)
    assert "|| true" not in text


@pytest.mark.skipif(shutil.which("python3.11") is None and shutil.which("python3") is None, reason="no python3")
def test_the_script_stops_at_the_first_pip_error(tmp_path):
    copy = tmp_path / "repo"
    (copy / "scripts").mkdir(parents=True)
    for name in ("scripts/bootstrap.sh", "scripts/pip_quiet.sh", "pyproject.toml"):
        shutil.copy(REPO / name, copy / name)
    empty_store = tmp_path / "wheels"
    empty_store.mkdir()
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(empty_store), "PIP_EXTRA_INDEX_URL": ""}
    env.pop("VIRTUAL_ENV", None)
    result = subprocess.run(["bash", str(copy / "scripts" / "bootstrap.sh")], cwd=str(tmp_path), env=env,
                            capture_output=True, text=True, timeout=300)
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    assert "creating .venv" in out and (copy / ".venv" / "bin" / "python").exists()
    assert re.search(r"^ERROR: .*torch==2\.13\.0", out, re.M), out  # pip's own message, on screen
    assert "FAILED (exit 1): .venv/bin/pip install -q torch==2.13.0" in result.stderr
    assert "bootstrap.sh: stopped (exit 1)" in result.stderr
    assert ".venv ready" not in out and not list((copy / ".venv").glob(".mmal-installed*"))
