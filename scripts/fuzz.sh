#!/usr/bin/env bash
# Runs every Go fuzz target of the module for FUZZTIME each (default 30s) and prints, per
# target, the executions reached and whether it found a failure. A failure leaves its input
# in the package's testdata/fuzz/<target>/ (commit it: it becomes a regression test).
set -uo pipefail
cd "$(dirname "$0")/.."
fuzztime=${FUZZTIME:-30s}
mkdir -p build/fuzz
status=0
printf '%-34s %-26s %12s  %s\n' package target execs result
while IFS=: read -r file _ line; do
  pkg=$(dirname "$file")
  target=$(sed -E 's/^func (Fuzz[A-Za-z0-9_]*)\(.*/\1/' <<<"$line")
  log=build/fuzz/$(tr / _ <<<"${pkg#./}")-$target.log
  if go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" -fuzzminimizetime 3s "$pkg" >"$log" 2>&1; then
    result=ok
  else
    result="FAILED (see $log)"
    status=1
  fi
  execs=$(grep -oE 'execs: [0-9]+' "$log" | tail -1 | grep -oE '[0-9]+' || true)
  printf '%-34s %-26s %12s  %s\n' "$pkg" "$target" "${execs:-?}" "$result"
done < <(grep -rn --include='*_test.go' -E '^func Fuzz[A-Za-z0-9_]*\(f \*testing\.F\)' . | grep -v '^./build/' | sort)
exit $status
