#!/bin/sh
# inferd pre-install. Arguments: deb preinst "install|upgrade [old-version]"; rpm %pre "1"
# (install) or "2" (upgrade).
#
# Creates the static system user before the files land, so the files the package gives to
# inferd get their owner: systemd-sysusers with the package's own sysusers.d line (it leaves
# an existing user as it is), or useradd where there is no systemd.
set -e
root=${DPKG_ROOT:-}

case "$1" in
  install | upgrade | 1 | 2) ;;
  *) exit 0 ;;
esac

if command -v systemd-sysusers >/dev/null 2>&1; then
  # The same line as /usr/lib/sysusers.d/inferd.conf, which is not on disk yet.
  echo 'u inferd - "inferd ONNX inference daemon" /var/lib/inferd /usr/sbin/nologin' |
    systemd-sysusers ${root:+--root="$root"} --replace=/usr/lib/sysusers.d/inferd.conf -
  exit 0
fi
if [ -z "$root" ] && getent passwd inferd >/dev/null 2>&1; then
  exit 0
fi
shell=/usr/sbin/nologin
[ -x "$root$shell" ] || shell=/sbin/nologin
# Exit status 9: the user exists already.
useradd ${root:+--root "$root"} --system --user-group --no-create-home \
  --home-dir /var/lib/inferd --shell "$shell" --comment "inferd ONNX inference daemon" inferd ||
  [ $? -eq 9 ]
