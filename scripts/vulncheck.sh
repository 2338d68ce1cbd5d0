#!/usr/bin/env bash
# Runs govulncheck against the Go vulnerability database as published in the module
# golang.org/x/vulndb (fetched through the Go module proxy, so no other network access is
# needed). Fails when a vulnerability reachable from inferd's code sits in a module we
# require; one in the Go standard library is reported but does not fail the run, because only
# a newer Go toolchain fixes it (the note printed says which).
set -uo pipefail
cd "$(dirname "$0")/.."
VULN_VERSION=v1.9.0
VULNDB_VERSION=v0.0.0-20261105234957-e22db6528018
dir=$(go mod download -json "golang.org/x/vulndb@${VULNDB_VERSION}" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
if [ -z "$dir" ] || [ ! -d "$dir/data/osv" ]; then
  echo "vulncheck: could not fetch golang.org/x/vulndb@${VULNDB_VERSION}" >&2
  exit 1
fi
mkdir -p build
out=build/vulncheck.txt
go run "golang.org/x/vuln/cmd/govulncheck@${VULN_VERSION}" -db "file://$dir/data/osv" ./... >"$out" 2>&1
rc=$?
# go run reports the program's own exit status 3 (findings) as its 1.
if [ $rc -eq 1 ] && tail -1 "$out" | grep -q '^exit status 3$'; then rc=3; fi
# Each finding lists "Found in: <package>@<version>"; the standard library's packages have no
# dot in their first path element.
modules=$(grep -E '^\s+Found in: ' "$out" | sed -E 's/^\s+Found in: //' | grep -E '^[^/@]+\.[^/@]+/' | sort -u || true)
stdlib=$(grep -E '^\s+Found in: ' "$out" | sed -E 's/^\s+Found in: //' | grep -vE '^[^/@]+\.[^/@]+/' | sort -u || true)
fixed=$(grep -E '^\s+Fixed in: [a-z/0-9]+@go' "$out" | sed -E 's/.*@//' | sort -V | tail -1)
echo "govulncheck ${VULN_VERSION}, database golang.org/x/vulndb@${VULNDB_VERSION}, $(go version | cut -d' ' -f3): full report in $out"
if [ -n "$stdlib" ]; then
  echo "standard library findings (fixed by Go ${fixed:-a newer release}; this machine's Go is $(go env GOVERSION)):"
  sed 's/^/  /' <<<"$stdlib"
  echo
fi
if [ -n "$modules" ]; then
  echo "FAIL: vulnerable code reachable in required modules:"
  sed 's/^/  /' <<<"$modules"
  exit 1
fi
if [ $rc -ne 0 ] && [ $rc -ne 3 ]; then
  echo "FAIL: govulncheck exited $rc" >&2
  tail -20 "$out" >&2
  exit 1
fi
echo "no reachable vulnerability in required modules"
