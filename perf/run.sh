#!/usr/bin/env bash
# The one command of the performance harness:
#   bash perf/run.sh            peers at N=10k,50k; ours alone at 100k,1M; scoring 1M items (~10 min on 2 cores)
#   bash perf/run.sh --quick    fast subset (~2 min)
#   bash perf/run.sh --full     also small-text's core-set at N=50k
# Any other flag goes to perf/kernels_vs_peers.py (see --help). Builds .venv-perf on first use:
# torch==2.13.0 (CPU wheel on local disk) first, then this project (editable), then the pinned peers.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv-perf
py=${PYTHON:-$(command -v python3.11 || command -v python3)}
if [ ! -x "$venv/bin/python" ]; then
  echo "creating $venv with $py"
  "$py" -m venv "$venv"
fi
stamp="$venv/.mmal-perf-installed"
want=$(cat pyproject.toml perf/requirements-perf.txt perf/run.sh | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  export PIP_DISABLE_PIP_VERSION_CHECK=1
  # torch first and pinned: an unpinned torch would pull a multi-GB CUDA build
  "$venv/bin/pip" install -q torch==2.13.0 2>&1 | grep -v "^WARNING: Location" || true
  "$venv/bin/pip" install -q -e . 2>&1 | grep -v "^WARNING: Location" || true
  "$venv/bin/pip" install -q -r perf/requirements-perf.txt 2>&1 | grep -v "^WARNING: Location" || true
  "$venv/bin/python" -c "import torch, backend, skactiveml, small_text"
  echo "$want" > "$stamp"
fi
export PYTHONUNBUFFERED=1
exec "$venv/bin/python" perf/kernels_vs_peers.py "$@"
