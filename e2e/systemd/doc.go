// Package systemd holds the suite behind `make e2e-systemd` (build tag e2e_systemd): the .deb
// installed into a minimal Debian bookworm booted with systemd-nspawn, and driven there with
// systemctl, curl and journalctl as an operator would (start, inference, reload, crash and
// watchdog restarts, drain, upgrade, purge); the .rpm installed with rpm --root; lintian on the
// .deb. It needs root, systemd-container, debootstrap, lintian and rpm; without them it skips
// and says why. mkrootfs.sh builds (and caches) the root filesystem.
package systemd
