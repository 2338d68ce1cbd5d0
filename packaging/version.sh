#!/bin/sh
# Prints the package version, derived from git so that every commit has its own and later
# commits sort later for both dpkg and rpm:
#   tag v1.2.3 on HEAD        -> 1.2.3
#   5 commits after v1.2.3    -> 1.2.3+git5.gabc1234
#   no v* tag at all          -> 0.0.0+git<commits>.gabc1234
#   uncommitted changes       -> ... with ".dirty" appended
# (a "+" sorts after the release it follows in both; "-" is not allowed in an rpm version).
# PKG_VERSION in the environment wins.
set -eu
if [ -n "${PKG_VERSION:-}" ]; then
  echo "$PKG_VERSION"
  exit 0
fi
dirty=
[ -z "$(git status --porcelain --untracked-files=no 2>/dev/null)" ] || dirty=.dirty
sha=$(git rev-parse --short=7 HEAD)
if d=$(git describe --tags --long --match 'v[0-9]*' 2>/dev/null); then
  # v1.2.3-5-gabc1234 (the tag itself may contain "-", e.g. v1.2.3-rc1)
  n=${d%-g*}
  n=${n##*-}
  tag=${d%-*-g*}
  base=${tag#v}
  base=$(echo "$base" | tr '-' '~') # v1.2.3-rc1 -> 1.2.3~rc1: sorts before 1.2.3
  if [ "$n" = 0 ]; then
    echo "$base$dirty"
  else
    echo "$base+git$n.g$sha$dirty"
  fi
else
  echo "0.0.0+git$(git rev-list --count HEAD).g$sha$dirty"
fi
