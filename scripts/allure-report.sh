#!/usr/bin/env bash
# Build the Allure 3 HTML report of a perf run, keeping the history (trends) across runs.
#
#   scripts/allure-report.sh [RESULTS_DIR [REPORT_DIR]]   (defaults: allure-results, allure-report)
#   scripts/allure-report.sh --install                    install the CLI only
#
# The Allure 3 CLI (npm package `allure`, version pinned in tools/allure/package.json) is installed on
# demand into tools/allure/node_modules (git-ignored). Needs node >= 20 and npm.
# Environment:
#   ALLURE_HISTORY        history file, one JSON line per report (default: .allure/history.jsonl);
#                         keep it between runs (CI: restore it before, save it after)
#   ALLURE_HISTORY_LIMIT  keep at most this many runs in the history (default: all)
#   ALLURE_REPORT_NAME    title of the report
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS=tools/allure
ALLURE="$TOOLS/node_modules/.bin/allure"

install_cli() {
  command -v node >/dev/null 2>&1 || { echo "allure-report: node is not installed (need node >= 20)" >&2; exit 3; }
  command -v npm >/dev/null 2>&1 || { echo "allure-report: npm is not installed" >&2; exit 3; }
  if [ ! -x "$ALLURE" ]; then
    echo "allure-report: installing the Allure 3 CLI into $TOOLS" >&2
    npm ci --prefix "$TOOLS" --no-audit --no-fund --loglevel=error >&2 \
      || { echo "allure-report: npm could not install the allure package" >&2; exit 3; }
  fi
}

if [ "${1:-}" = "--install" ]; then
  install_cli
  exit 0
fi

RESULTS=${1:-allure-results}
REPORT=${2:-allure-report}
[ -d "$RESULTS" ] || { echo "allure-report: $RESULTS: no such results directory" >&2; exit 2; }
install_cli

HISTORY=${ALLURE_HISTORY:-.allure/history.jsonl}
mkdir -p "$(dirname "$HISTORY")"
ALLURE_HISTORY=$(realpath "$HISTORY") \
ALLURE_CATEGORIES=$(realpath "$RESULTS")/categories.json \
ALLURE_OUTPUT=$(realpath -m "$REPORT") \
  "$ALLURE" generate "$RESULTS" --config "$TOOLS/allurerc.mjs"
echo "allure-report: report in $REPORT, history in $HISTORY" >&2
