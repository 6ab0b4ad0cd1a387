#!/usr/bin/env bash
# The test command: set up .venv with the pinned dependencies, then run pytest (arguments pass through).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
