#!/usr/bin/env bash
# Builds the OS packages with nfpm (pinned as a Go tool in go.mod: `go tool nfpm`):
#   package.sh       -> dist/inferd_<version>-1_amd64.deb, dist/inferd-<version>-1.x86_64.rpm
#   package.sh cuda  -> dist/inferd-cuda_<version>-1_amd64.deb, dist/inferd-cuda-<version>-1.x86_64.rpm
# The version comes from git (packaging/version.sh) and is stamped into the binary, so
# `inferd version`, inferd_build_info and the package agree. `make package` / `make package-cuda`
# run it after fetching ONNX Runtime. Environment: PKG_VERSION, PKG_MAINTAINER, PKG_LICENSE.
set -euo pipefail
cd "$(dirname "$0")/.."

GO=${GO:-go}
what=${1:-main}
version=$(packaging/version.sh)
export PKG_VERSION=$version
export PKG_MAINTAINER=${PKG_MAINTAINER:-inferd maintainers <maintainers@inferd.example>}
export PKG_LICENSE=${PKG_LICENSE:-LicenseRef-inferd-unspecified}
stage=build/package
mkdir -p dist

# changelog NAME OUT writes a Debian changelog (gzip -9n, as Debian policy wants it) with one
# entry for this build.
changelog() {
  local dirty=
  [ "${version%.dirty}" = "$version" ] || dirty=" with uncommitted changes"
  {
    echo "$1 ($version-1) unstable; urgency=medium"
    echo
    echo "  * Built from commit $(git rev-parse --short=12 HEAD)$dirty."
    echo
    echo " -- $PKG_MAINTAINER  $(date -R -u -d "@$(git log -1 --format=%ct)")"
  } | gzip -9n >"$stage/$2"
}

# licenses copies the license files of the Go standard library, of every module linked into
# the binary and of ONNX Runtime into $stage/licenses/.
licenses() {
  local out=$stage/licenses
  mkdir -p "$out/go"
  cp "$($GO env GOROOT)/LICENSE" "$out/go/LICENSE"
  cp -r packaging/licenses/onnxruntime "$out/"
  $GO list -deps -f '{{with .Module}}{{if not .Main}}{{.Path}} {{.Dir}}{{end}}{{end}}' ./cmd/inferd | sort -u |
    while read -r path dir; do
      local n=0
      mkdir -p "$out/$path"
      for f in "$dir"/LICENSE* "$dir"/LICENCE* "$dir"/COPYING* "$dir"/NOTICE* "$dir"/PATENTS*; do
        [ -f "$f" ] || continue
        cp "$f" "$out/$path/"
        n=$((n + 1))
      done
      [ "$n" -gt 0 ] || { echo "package: no license file in $dir ($path)" >&2; exit 1; }
    done
  chmod -R u+w,go-w "$out"
}

case "$what" in
  main)
    rm -rf "$stage"
    mkdir -p "$stage"
    CGO_ENABLED=1 $GO build -trimpath -buildmode=pie \
      -ldflags "-s -w -X github.com/inferd/inferd/internal/buildinfo.version=$version -X github.com/inferd/inferd/internal/buildinfo.revision=$(git rev-parse HEAD)" \
      -o "$stage/inferd" ./cmd/inferd
    licenses
    packaging/genconfig.sh configs/inferd.toml >"$stage/inferd.toml"
    gzip -9n <packaging/inferd.1 >"$stage/inferd.1.gz"
    first=$(git log --max-parents=0 --format=%ad --date=format:%Y HEAD | tail -n1)
    last=$(git log -1 --format=%ad --date=format:%Y)
    years=$first
    [ "$first" = "$last" ] || years="$first-$last"
    sed "s/@YEARS@/$years/" packaging/copyright >"$stage/copyright"
    changelog inferd changelog.Debian.gz
    config=nfpm.yaml
    name=inferd
    ;;
  cuda)
    mkdir -p "$stage"
    changelog inferd-cuda changelog-cuda.Debian.gz
    config=packaging/nfpm-cuda.yaml
    name=inferd-cuda
    ;;
  *)
    echo "usage: package.sh [main|cuda]" >&2
    exit 2
    ;;
esac

deb=dist/${name}_${version}-1_amd64.deb
rpm=dist/${name}-${version}-1.x86_64.rpm
rm -f dist/"${name}"_*_amd64.deb dist/"${name}"-[0-9]*.x86_64.rpm # earlier builds: one version in dist/
$GO tool nfpm package --config "$config" --packager deb --target "$deb"
$GO tool nfpm package --config "$config" --packager rpm --target "$rpm"
echo "package: $deb $rpm (version $version)" >&2
