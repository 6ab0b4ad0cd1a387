#!/usr/bin/env bash
# scripts/gpu-check.sh OUTDIR — the GPU check that fits a short slot (8 minutes by default) on one
# GPU with PyTorch preinstalled, no TensorRT and no network:
#   1. set-up from what is installed (IRIS_OFFLINE=1: the system torch is reused, nothing is fetched);
#   2. the GPU unit tests (`pytest tests/unit -m gpu`);
#   3. `pytest -m gpu tests/perf` on a quick setting (one 5 s clip, 3 runs, 1 warm-up);
#   4. `iris bench` at full size with the default (optimised) profile and eager beside it, one clip
#      length per minute of the budget left (5, 10, 30 s in that order; 120 s stays opt-in), 3 runs
#      and 1 warm-up each, no throughput phases. bench writes its files at the end: a bench cut at
#      its limit leaves none, which the summary says.
# Every step runs under a hard time limit taken from what is left of the budget, so the whole check
# ends in time even when a step does not (the summary then says which step was cut).
# OUTDIR receives bench.csv / bench.json / summary.json / speedup.csv (iris bench), pytest-perf/
# (the perf session's files), junit XML of the test steps, context.txt, gpu-check-summary.txt and
# gpu-check.log, ready to commit under benchmarks/results/<gpu>/<date>/.
# IRIS_GPU_CHECK_SECONDS overrides the budget (default 480). On a machine without a usable NVIDIA
# GPU it refuses with one line and exit status 2, writing nothing.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
BUDGET=${IRIS_GPU_CHECK_SECONDS:-480}

if [ $# -ne 1 ] || [ -z "$1" ]; then
  echo "gpu-check: usage: scripts/gpu-check.sh OUTDIR" >&2
  exit 2
fi
out=$1
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1 \
   || ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" >/dev/null 2>&1; then
  echo "gpu-check: no usable NVIDIA GPU here (nvidia-smi and torch.cuda must both see one); run it on a GPU machine" >&2
  exit 2
fi
if [ -e "$out" ] && [ -n "$(ls -A "$out" 2>/dev/null)" ]; then
  echo "gpu-check: $out exists and is not empty; give a new directory" >&2
  exit 2
fi
mkdir -p "$out" || { echo "gpu-check: cannot create $out" >&2; exit 2; }
out=$(cd "$out" && pwd)
log="$out/gpu-check.log"
summary="$out/gpu-check-summary.txt"
start=$SECONDS
exec > >(tee -a "$log") 2>&1

left() { echo $((BUDGET - (SECONDS - start))); }

step() {  # step NAME LIMIT_S CMD... : run under `timeout`, record status and seconds
  local name=$1 limit=$2; shift 2
  if [ "$limit" -lt 10 ]; then
    echo "$name: skipped (budget spent)" | tee -a "$summary"
    return 0
  fi
  echo "== $name (limit ${limit} s): $*"
  local t0=$SECONDS status
  timeout --signal=INT --kill-after=15 "$limit" "$@"
  status=$?
  local verdict="exit $status"
  [ "$status" -eq 124 ] || [ "$status" -eq 137 ] && verdict="cut at the ${limit} s limit (exit $status)"
  echo "$name: $verdict after $((SECONDS - t0)) s" | tee -a "$summary"
}

{
  echo "command: scripts/gpu-check.sh $*"
  echo "started_utc: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "budget_s: $BUDGET"
  echo "git: $(git rev-parse HEAD 2>/dev/null || echo n/a)$(git diff --quiet 2>/dev/null || echo ' (dirty)')"
  nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader | sed 's/^/gpu: /'
  "$PY" -c "import torch; print(f'torch: {torch.__version__} (CUDA {torch.version.cuda})')"
  "$PY" -c "import tensorrt; print(f'tensorrt: {tensorrt.__version__}')" 2>/dev/null \
    || echo "tensorrt: not installed (the optimised profile's TensorRT stages fall back to compile)"
} > "$out/context.txt"
cat "$out/context.txt"

IRIS_OFFLINE=1 IRIS_EXTRAS="" PYTHON="$PY" timeout 60 bash scripts/setup.sh \
  || echo "setup: registering the checkout failed; running it from the source tree" | tee -a "$summary"
if .venv/bin/python -c "import iris_pipeline, pytest" >/dev/null 2>&1; then
  run_py=.venv/bin/python
else
  run_py=$PY
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export IRIS_ENGINE_DIR=${IRIS_ENGINE_DIR:-$PWD/engines}
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-$PWD/engines/inductor}  # reused by later runs
export PYTHONUNBUFFERED=1

step "unit tests (gpu)" "$(( $(left) < 60 ? $(left) : 60 ))" \
  "$run_py" -m pytest tests/unit -m gpu -q -p no:cacheprovider --junitxml="$out/unit-gpu.xml"
step "pytest -m gpu tests/perf (quick)" "$(( $(left) - 150 < 150 ? $(left) - 150 : 150 ))" \
  "$run_py" -m pytest tests/perf -m gpu -q -p no:cacheprovider --clip-lengths 5 --bench-runs 3 \
  --bench-warmup 1 --engine-dir "$IRIS_ENGINE_DIR" --bench-out "$out/pytest-perf" --junitxml="$out/perf-gpu.xml"

remaining=$(( $(left) - 15 ))
count=$(( remaining / 60 ))
[ "$count" -gt 3 ] && count=3
lengths=$(echo "5,10,30" | cut -d, -f1-"$(( count > 0 ? count : 1 ))")
step "iris bench (full size, clip lengths $lengths)" "$remaining" \
  "$run_py" -m iris_pipeline bench --size full --clip-lengths "$lengths" --runs 3 --warmup 1 --no-throughput \
  --encode-runs 0 --out "$out"

gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | tr 'A-Z ' 'a-z-' | tr -cd 'a-z0-9-')
echo "total: $((SECONDS - start)) s of a ${BUDGET} s budget" | tee -a "$summary"
echo "commit with: mkdir -p benchmarks/results/$gpu/$(date -u +%F) && cp -r $out/. benchmarks/results/$gpu/$(date -u +%F)/"
