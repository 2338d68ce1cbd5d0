#!/bin/sh
# Prints /etc/inferd/inferd.toml as the packages install it: the annotated reference
# configuration (configs/inferd.toml, which lists every key with its default) with every key
# commented out, a header for operators, and the package's model repository. Generated at
# package time so that it never misses a key the reference has.
#   genconfig.sh configs/inferd.toml > build/package/inferd.toml
set -eu
ref=${1:?usage: genconfig.sh configs/inferd.toml}
cat <<'HEAD'
# inferd configuration: /etc/inferd/inferd.toml, installed by the inferd package.
#
# Every key is listed, commented out, with its default: uncomment a line to
# change it. After an edit, `systemctl reload inferd` applies it (the daemon
# also notices the file changing); an invalid file changes nothing and the
# reason is in `journalctl -u inferd`. Upgrades keep this file as edited.
#
# Each key can also be set from the environment as INFERD_<SECTION>_<KEY>
# (shown for each key below; for the service, in /etc/default/inferd or
# /etc/sysconfig/inferd), which wins over this file. Durations are Go
# duration strings ("500ms", "30s", "1m30s"); sizes are integers of bytes.
# Unknown keys, wrong types and bad values are errors: check a file with
# `inferd validate /etc/inferd/inferd.toml`.
HEAD
# Skip the reference's own header (everything before the first table), comment out every key,
# put the package's repository where the demo's relative one was, and turn gRPC on next to HTTP
# (loopback, Triton's port 8001) and keep calibration profiles in /var/lib/inferd/state: the
# two keys the package sets.
awk '
  !started && /^\[/ { started = 1; print "" }
  !started { next }
  /^\[/ { section = substr($0, 2, length($0) - 2) }
  section == "models" && /^repository[ \t]*=/ { print "#repository = \"/var/lib/inferd/models\""; next }
  section == "server" && /^state_dir[ \t]*=/ { print "state_dir = \"/var/lib/inferd/state\""; next }
  section == "grpc" && /^listen[ \t]*=/ { print "listen = \"127.0.0.1:8001\""; next }
  section == "grpc" && /make run/ { next }
  /^[A-Za-z0-9_]+[ \t]*=/ { print "#" $0; next }
  { gsub(/, so "models" is configs\/models here/, ""); print }
' "$ref"
