#!/usr/bin/env bash
# Create a virtual environment (.venv, or $VENV) and install intent-router into it; then the Rasa
# environment the Rasa component is tested in (rasa_component/install.sh: .venv-rasa, Python 3.10,
# rasa==3.6.21; INTENT_ROUTER_SKIP_RASA=1 skips it, and the Rasa tests then fail saying so).
# The CPU build of PyTorch goes in first: anything that pulls torch in before it would fetch a
# multi-GB CUDA build. Set TORCH_SPEC to pick another torch (e.g. on a machine with a GPU). On Linux,
# PyPI's torch wheel is the CUDA build: TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu takes the
# CPU one from PyTorch's own index (machines with a local CPU wheel in pip's config need neither).
set -euo pipefail
cd "$(dirname "$0")"
VENV=${VENV:-.venv}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
TORCH_INDEX_URL=${TORCH_INDEX_URL:-}

if [ -n "${PYTHON:-}" ]; then
  python=$PYTHON
elif command -v python3.11 >/dev/null; then
  python=python3.11
else
  python=python3
fi
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || { echo "intent-router needs Python 3.11 or newer; set PYTHON=/path/to/python3.11" >&2; exit 1; }

[ -x "$VENV/bin/python" ] || "$python" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "$TORCH_SPEC"
"$VENV/bin/python" -m pip install --quiet -e ".[dev]"
echo "intent-router installed in $VENV: run $VENV/bin/intent-router --help"
[ "${INTENT_ROUTER_SKIP_RASA:-}" = 1 ] || rasa_component/install.sh
