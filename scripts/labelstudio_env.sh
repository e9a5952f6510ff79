#!/usr/bin/env bash
# Create .venv-ls with a real Label Studio 1.23.2 (for the end-to-end tests and local trials).
# Label Studio pins Django and many libraries, so it lives in its own virtual environment, never in .venv.
# Idempotent: does nothing (instantly) when .venv-ls already has the pinned version.
#   scripts/labelstudio_env.sh            create/verify .venv-ls
#   LS_VENV=/path scripts/labelstudio_env.sh   another location
set -euo pipefail
cd "$(dirname "$0")/.."
LS_VERSION="1.23.2"
venv="${LS_VENV:-.venv-ls}"
stamp="$venv/.label-studio-$LS_VERSION"
if [ -f "$stamp" ] && [ -x "$venv/bin/label-studio" ]; then
  exit 0
fi
py=${PYTHON:-$(command -v python3.11 || command -v python3)}
mkdir -p "$venv"
# one installer at a time (parallel test sessions may call this together)
exec 9>"$venv/.install-lock"
if command -v flock >/dev/null 2>&1; then flock 9; fi
if [ -f "$stamp" ] && [ -x "$venv/bin/label-studio" ]; then
  exit 0
fi
if [ ! -x "$venv/bin/python" ]; then
  echo "creating $venv with $py (Label Studio $LS_VERSION, about 1.5 min and 1 GB)"
  "$py" -m venv "$venv"
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1
"$venv/bin/pip" install -q "label-studio==$LS_VERSION" 2>&1 | grep -v "^WARNING: Location" || true
"$venv/bin/python" -c "import label_studio, label_studio_sdk; assert label_studio.__version__.startswith('$LS_VERSION'), label_studio.__version__"
touch "$stamp"
echo "$venv ready (label-studio $LS_VERSION)"
