# Sourced by tools/demo and tools/test: make .venv with the project installed (again only when pyproject changes).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "mcp-gateway needs Python >= 3.11 (set PYTHON=/path/to/python3.11 or newer); found: $("$PYTHON" --version 2>&1)" >&2
  exit 2
fi
stamp=.venv/.installed
want=$(cat pyproject.toml worker/pyproject.toml | sha256sum | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "== installing mcp-gateway into .venv (first run takes a minute)" >&2
  "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip >&2
  # The gateway with its embedded servers and dev tools, then the worker SDK (worker/, a distribution of its own
  # that the gateway depends on) made editable too, so that a change to it is seen without reinstalling.
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[embedded,dev]' >&2
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -e ./worker >&2
  echo "$want" > "$stamp"
fi
