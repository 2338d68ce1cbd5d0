#!/bin/sh
# inferd post-install. Arguments: deb postinst "configure [old-version]" (also abort-*); rpm
# %post "1" (install) or "2" (upgrade).
#
# On install the unit is enabled (not started: drop models in /var/lib/inferd/models, then
# `systemctl start inferd`); an upgrade keeps whatever the operator enabled or disabled. When
# systemd runs, it rereads the units, and an upgrade restarts a running daemon onto the new
# binary. /etc/inferd/inferd.toml is a config file: an edited one survives upgrades.
set -e
root=${DPKG_ROOT:-}

case "$1" in
  configure) if [ -n "$2" ]; then action=upgrade; else action=install; fi ;;
  1) action=install ;;
  [2-9] | [1-9][0-9]*) action=upgrade ;;
  *) exit 0 ;;
esac

# The user exists since pre-install; the state directories follow tmpfiles.d (or, where
# systemd-tmpfiles is missing or cannot run, e.g. in a chroot without /proc, the same by hand).
if ! { command -v systemd-tmpfiles >/dev/null 2>&1 &&
  systemd-tmpfiles ${root:+--root="$root"} --create /usr/lib/tmpfiles.d/inferd.conf 2>/dev/null; }; then
  install -d -m 0750 -o inferd -g inferd "$root/var/lib/inferd" "$root/var/lib/inferd/models"
fi

systemd_running() { [ -z "$root" ] && [ -d /run/systemd/system ]; }

if systemd_running; then
  systemctl daemon-reload || true
fi
if [ "$action" = install ] && command -v systemctl >/dev/null 2>&1; then
  systemctl ${root:+--root="$root"} enable inferd.service || true
fi
if [ "$action" = upgrade ] && systemd_running; then
  systemctl try-restart inferd.service || true
fi
