#!/usr/bin/env bash
# molecule test with the given arguments (--all, or -s SCENARIO). Its whole output also goes to
# .molecule.log; when it fails, the failed tests' lines are printed last, after the destroy steps that
# would otherwise push them out of a log's tail (CI shows the tail).
set -uo pipefail
log="$(cd "$(dirname "$0")/.." && pwd)/.molecule.log"
molecule test "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
if [ "$rc" -ne 0 ]; then
  echo "--- what failed (whole output: .molecule.log):"
  grep -E '^(FAILED|ERROR) |^E  |^fatal: |Executed: Failed' "$log" | tail -60
fi
exit "$rc"
