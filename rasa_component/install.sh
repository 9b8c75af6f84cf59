#!/usr/bin/env bash
# Build the Rasa environment the component is tested in: .venv-rasa (or $RASA_VENV) with open-source
# Rasa 3.6.21, which installs only on Python 3.8-3.10 ($RASA_PYTHON; default: python3.10, pyenv's
# 3.10.13 where pyenv is used), and this component (editable). An existing environment is reused;
# delete it to rebuild from scratch.
set -euo pipefail
cd "$(dirname "$0")/.."
RASA_VENV=${RASA_VENV:-.venv-rasa}
RASA_SPEC=${RASA_SPEC:-rasa==3.6.21}
export PYENV_VERSION=${PYENV_VERSION:-3.10.13}  # only read by pyenv's shims
python=${RASA_PYTHON:-python3.10}

"$python" -c 'import sys; sys.exit(not (3, 8) <= sys.version_info[:2] <= (3, 10))' \
  || { echo "open-source Rasa needs Python 3.8-3.10; set RASA_PYTHON=/path/to/python3.10" >&2; exit 1; }
[ -x "$RASA_VENV/bin/python" ] || "$python" -m venv "$RASA_VENV"
if [ ! -x "$RASA_VENV/bin/rasa" ]; then
  "$RASA_VENV/bin/python" -m pip install --quiet --upgrade pip
  "$RASA_VENV/bin/python" -m pip install --quiet "$RASA_SPEC"  # TensorFlow 2.12 comes with it: ~600 MB
fi
"$RASA_VENV/bin/python" -m pip install --quiet -e rasa_component
"$RASA_VENV/bin/python" -c 'import rasa_component, rasa; print("rasa", rasa.__version__, "and the component installed in '"$RASA_VENV"'")'
