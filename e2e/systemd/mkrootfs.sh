#!/usr/bin/env bash
# Builds (once) a minimal Debian bookworm root filesystem that boots with systemd, for the
# systemd end-to-end suite, and caches it as a tarball: mkrootfs.sh OUT.tar. The mirror is the
# one this machine's apt already uses (/etc/apt/sources.list, /etc/apt/sources.list.d/); set
# MIRROR to override. Needs root and debootstrap.
set -euo pipefail

OUT=${1:?usage: mkrootfs.sh OUT.tar}
SUITE=bookworm
# What the suite runs inside the container besides the package's own dependencies.
INCLUDE=systemd,systemd-sysv,dbus,curl,ca-certificates,procps

if [ -s "$OUT" ]; then
  exit 0
fi

# mirror prints the first Debian archive URI found in apt's sources (deb822 or one-line style),
# skipping the security archive.
mirror() {
  local f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^https?:\/\//) { print $i; break } }' "$f"
  done
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk 'tolower($1) == "uris:" { for (i = 2; i <= NF; i++) print $i }' "$f"
  done
}
if [ -z "${MIRROR:-}" ]; then
  MIRROR=$(mirror | grep -v -- '-security' | grep -i debian | head -n1 || true)
  [ -n "$MIRROR" ] || MIRROR=$(mirror | grep -v -- '-security' | head -n1 || true)
fi
[ -n "${MIRROR:-}" ] || { echo "mkrootfs: no Debian mirror found in this machine's apt sources; set MIRROR=<url>" >&2; exit 1; }

command -v debootstrap >/dev/null || { echo "mkrootfs: debootstrap is needed (apt-get install debootstrap)" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "mkrootfs: debootstrap needs root" >&2; exit 1; }

mkdir -p "$(dirname "$OUT")"
tmp=$(mktemp -d "$(dirname "$OUT")/rootfs.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
echo "mkrootfs: debootstrap $SUITE from $MIRROR (a few minutes, once)" >&2
debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$tmp/root" "$MIRROR" >"$tmp/debootstrap.log" 2>&1 || {
  tail -n 30 "$tmp/debootstrap.log" >&2
  exit 1
}
# The container has no console login and no network of its own to configure: keep boot short.
chroot "$tmp/root" systemctl mask getty@tty1.service console-getty.service systemd-networkd-wait-online.service >/dev/null 2>&1 || true
echo "inferd-e2e" >"$tmp/root/etc/hostname"
rm -rf "$tmp/root/var/cache/apt/archives/"*.deb "$tmp/root/var/lib/apt/lists/"*
tar -C "$tmp/root" --numeric-owner -cf "$tmp/rootfs.tar" .
mv "$tmp/rootfs.tar" "$OUT"
echo "mkrootfs: $OUT" >&2
