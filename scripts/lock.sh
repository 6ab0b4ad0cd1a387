#!/usr/bin/env bash
# Regenerate constraints.txt from the current .venv (run after changing dependencies in pyproject.toml).
set -euo pipefail
cd "$(dirname "$0")/.."
{
  sed -n '1,/^# Regenerate/p' constraints.txt
  .venv/bin/pip freeze --exclude-editable | grep -v -i -E '^(torch|nvidia-|triton|iris)' | sed 's/$/ ; python_version >= "3.11"/'
} > constraints.txt.new
mv constraints.txt.new constraints.txt
