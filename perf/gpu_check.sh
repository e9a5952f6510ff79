#!/usr/bin/env bash
# GPU check (< 5 min on one H100): query kernels at 1M items and one training round on CUDA.
#   bash perf/gpu_check.sh                 figures printed, and written to $OUT (or runs/perf)
#   bash perf/gpu_check.sh --device cpu --n 20000   dry run without a GPU
# Uses .venv's python when it sees CUDA, else python3 when it has torch (the GPU image's python3 has torch and numpy);
# needs nothing installed beyond torch and numpy.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-}
if [ -z "$py" ]; then
  if [ -x .venv/bin/python ] && .venv/bin/python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    py=.venv/bin/python
  elif python3 -c "import torch" 2>/dev/null || [ ! -x .venv/bin/python ]; then
    py=python3
  else
    py=.venv/bin/python  # no GPU anywhere: a CPU dry run (--device cpu)
  fi
fi
out=${OUT:-runs/perf}
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
set -o pipefail
timeout "${GPU_CHECK_TIMEOUT:-290}" "$py" perf/gpu_check.py --json "$out/gpu_check.json" "$@" 2>&1 | tee "$out/gpu_check.log"
