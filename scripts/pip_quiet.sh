# Sourced by scripts/bootstrap.sh. `pip_quiet CMD...` runs CMD with pip's "WARNING: Location" noise (the
# local wheel store) filtered out, and returns CMD's own exit status: the pipeline's status is pip's
# (pipefail), and the filter itself never fails (grep exits 1 when it prints nothing, which only means pip
# was quiet). So under `set -e` the first pip error stops the caller, pip's message on screen.
pip_quiet() {
  local status=0
  set -o pipefail
  "$@" 2>&1 | { grep -v "^WARNING: Location" || true; } || status=$?
  if [ "$status" -ne 0 ]; then
    echo "FAILED (exit $status): $*" >&2
  fi
  return "$status"
}
