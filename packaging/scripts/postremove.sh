#!/bin/sh
# inferd post-remove. Arguments: deb postrm "remove|purge|upgrade|failed-upgrade|abort-*|
# disappear"; rpm %postun "0" (erase) or "1" (upgrade).
#
# systemd forgets the removed units. State (models, cache) goes only on purge, which RPM does
# not have: an erased RPM leaves /var/lib/inferd for the operator. The inferd user stays (its
# uid may still own files elsewhere).
set -e
root=${DPKG_ROOT:-}

if [ -z "$root" ] && [ -d /run/systemd/system ]; then
  systemctl daemon-reload || true
fi

if [ "$1" = purge ]; then
  rm -rf "$root/var/lib/inferd" "$root/var/cache/inferd" "$root/run/inferd"
  rmdir "$root/etc/inferd" 2>/dev/null || true
fi
