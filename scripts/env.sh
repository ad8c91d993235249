# Sourced by the other scripts: creates .venv on first use and installs liveagg into it.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
stamp=".venv/.liveagg-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  # What the installers print (setuptools' "Editable installation" notice, say) is shown
  # only if the install fails.
  echo "installing liveagg[${LIVEAGG_EXTRAS:-dev}] into .venv ..." >&2
  log=".venv/install.log"
  if ! { python -m pip install --quiet --upgrade pip &&
    python -m pip install --quiet -e ".[${LIVEAGG_EXTRAS:-dev}]"; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "installing liveagg failed; the log above is in $log" >&2
    exit 1
  fi
  touch "$stamp"
fi
