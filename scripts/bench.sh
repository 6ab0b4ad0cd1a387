#!/usr/bin/env bash
# The main job: set up .venv (pinned deps), run the benchmark matrix on the best device present
# (full size with a GPU, tiny on a CPU-only machine), write the research-note report, and say where
# everything is. Arguments pass through to `iris bench` (e.g. --out DIR, --clip-lengths 5,10,30,120, --gate).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

out=""
prev=""
for arg in "$@"; do
  case "$arg" in
    --out=*) out="${arg#--out=}" ;;
  esac
  if [ "$prev" = "--out" ]; then out="$arg"; fi
  prev="$arg"
done
extra=()
if [ -z "$out" ]; then
  out="benchmarks/out/$(date -u +%Y%m%dT%H%M%SZ)"
  extra=(--out "$out")
fi

status=0
.venv/bin/python -m iris_pipeline.benchmark_runner "${extra[@]}" "$@" || status=$?

if [ -f "$out/bench.csv" ]; then
  .venv/bin/iris report "$out" || echo "bench: the report could not be written (see above)" >&2
  echo
  echo "Benchmark files in $out:"
  find "$out" -maxdepth 2 -type f | sort | sed 's/^/  /'
else
  echo "bench: no results were written (exit $status)" >&2
fi
exit "$status"
