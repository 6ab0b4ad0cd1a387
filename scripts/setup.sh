#!/usr/bin/env bash
# Create .venv (once) and install iris_pipeline with the pinned dependencies (constraints.txt).
# torch: a machine whose python already has a CUDA build keeps it (the venv sees system packages);
# elsewhere, without a GPU, the CPU build torch==2.13.0 is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
EXTRAS=${IRIS_EXTRAS:-test}

if [ ! -x .venv/bin/python ]; then
  if "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" >/dev/null 2>&1; then
    echo "setup: using the system's CUDA torch ($("$PY" -c 'import torch; print(torch.__version__)'))" >&2
    "$PY" -m venv --system-site-packages .venv
  else
    "$PY" -m venv .venv
  fi
fi

if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    .venv/bin/pip install --quiet "torch>=2.2"          # a CUDA build from PyPI
  else
    .venv/bin/pip install --quiet "torch==2.13.0"       # the CPU build
  fi
fi

# Reinstall only when the dependency declarations changed.
stamp=.venv/.iris-setup-stamp
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)-$EXTRAS
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/pip install --quiet -c constraints.txt -e ".[$EXTRAS]"
  echo "$want" > "$stamp"
fi
