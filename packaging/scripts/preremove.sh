#!/bin/sh
# inferd pre-remove. Arguments: deb prerm "remove|upgrade new-version|deconfigure|failed-upgrade";
# rpm %preun "0" (erase) or "1" (upgrade).
#
# Only on removal (not on upgrade): stop the daemon and its socket when systemd runs, and
# disable both whether or not it runs (a chroot or an image build still gets its symlinks
# removed).
set -e
root=${DPKG_ROOT:-}

case "$1" in
  remove | deconfigure | 0) ;;
  *) exit 0 ;;
esac

if [ -z "$root" ] && [ -d /run/systemd/system ]; then
  systemctl stop inferd.socket inferd.service || true
fi
if command -v systemctl >/dev/null 2>&1; then
  systemctl ${root:+--root="$root"} disable inferd.service inferd.socket || true
fi
