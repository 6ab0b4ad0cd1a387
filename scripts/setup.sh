#!/usr/bin/env bash
# Create .venv (once) and install iris_pipeline with the pinned dependencies (constraints.txt).
# torch: a machine whose python already has a CUDA build keeps it (the venv sees system packages);
# elsewhere, without a GPU, the CPU build torch==2.13.0 is installed.
# TensorRT: on a machine with an NVIDIA GPU the `tensorrt-cuNN` extra of the installed torch's CUDA
# major is added (pinned in constraints.txt). Where it cannot be installed, set-up says so once and
# goes on: the optimised profile then runs those stages with its per-stage fallback (`compile`).
# IRIS_OFFLINE=1: use only what is installed already: no index is asked and dependencies are not
# resolved (a GPU box without network registers the checkout over its preinstalled packages).
# IRIS_EXTRAS: extras to install (default: test; empty: none).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
EXTRAS=${IRIS_EXTRAS-test}
OFFLINE=${IRIS_OFFLINE:-0}
PIP_OFFLINE=()
[ "$OFFLINE" = 1 ] && PIP_OFFLINE=(--no-index --no-build-isolation --no-deps)

if [ ! -x .venv/bin/python ]; then
  if "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" >/dev/null 2>&1; then
    echo "setup: using the system's CUDA torch ($("$PY" -c 'import torch; print(torch.__version__)'))" >&2
    "$PY" -m venv --system-site-packages .venv
  else
    "$PY" -m venv .venv
  fi
fi

if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  if [ "$OFFLINE" = 1 ]; then
    echo "setup: torch is not installed and IRIS_OFFLINE=1 forbids fetching it" >&2
    exit 1
  fi
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    .venv/bin/pip install --quiet "torch>=2.2"          # a CUDA build from PyPI
  else
    .venv/bin/pip install --quiet "torch==2.13.0"       # the CPU build
  fi
fi

# The CUDA major of the torch in use ("" for a CPU build) picks the TensorRT wheel.
cuda_major=$(.venv/bin/python -c "import torch; print((torch.version.cuda or '').split('.')[0])")
trt_extra=""
if [ -n "$cuda_major" ] && command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 \
   && ! .venv/bin/python -c "import tensorrt" >/dev/null 2>&1; then
  if [ "$OFFLINE" = 1 ]; then
    echo "setup: TensorRT is not installed and IRIS_OFFLINE=1 forbids fetching it; the optimised profile falls back to compile for its TensorRT stages" >&2
  else
    trt_extra="tensorrt-cu$cuda_major"
  fi
fi

install() {  # install EXTRAS (comma-separated, may be empty) -> pip's status
  local target=.
  [ -n "${1#,}" ] && target=".[${1#,}]"
  .venv/bin/pip install --quiet "${PIP_OFFLINE[@]}" -c constraints.txt -e "$target"
}

# Reinstall only when the dependency declarations changed.
stamp=.venv/.iris-setup-stamp
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)-$EXTRAS-$trt_extra-$OFFLINE
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  if [ -n "$trt_extra" ]; then
    if ! install "$EXTRAS,$trt_extra" >.venv/.iris-tensorrt-install.log 2>&1; then
      echo "setup: TensorRT ($trt_extra) could not be installed ($(grep -m1 -i error .venv/.iris-tensorrt-install.log || echo 'see .venv/.iris-tensorrt-install.log')); the optimised profile falls back to compile for its TensorRT stages" >&2
      install "$EXTRAS"
    fi
  else
    install "$EXTRAS"
  fi
  echo "$want" > "$stamp"
fi
