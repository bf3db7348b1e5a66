#!/usr/bin/env bash
# Build the lab's container images without a registry:
#   mailarchive/base  debootstrap'd Debian 12 (minbase, python3, iproute2)
#   mailarchive/node  base + systemd and the Debian packages the roles install,
#                     so that converge in the lab does not wait on downloads.
# Idempotent: an image that exists is kept unless FORCE=1.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
"$here/docker-up.sh"

mirror=$(awk '/^URIs:/ {print $2; exit} /^deb / {print $2; exit}' /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list 2>/dev/null | head -n1)
mirror=${mirror:-http://deb.debian.org/debian}

if [ "${FORCE:-0}" = 1 ] || ! docker image inspect mailarchive/base >/dev/null 2>&1; then
  root=$(mktemp -d /var/tmp/mailarchive-rootfs.XXXXXX)
  echo "build-images: debootstrap bookworm from $mirror"
  debootstrap --variant=minbase --include=python3,iproute2 bookworm "$root" "$mirror" >/var/log/mailarchive-debootstrap.log 2>&1 \
    || { tail -n 20 /var/log/mailarchive-debootstrap.log >&2; exit 1; }
  tar -C "$root" -c . | docker import - mailarchive/base >/dev/null
  rm -rf "$root"
fi

if [ "${FORCE:-0}" = 1 ] || ! docker image inspect mailarchive/node >/dev/null 2>&1; then
  echo "build-images: building mailarchive/node"
  docker build -q -t mailarchive/node "$here/../lab/image" >/dev/null
fi
docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep '^mailarchive/'
