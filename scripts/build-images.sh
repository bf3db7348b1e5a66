#!/usr/bin/env bash
# Build the lab's container images without a registry:
#   mailarchive/base  debootstrap'd Debian 12 (minbase, python3, iproute2)
#   mailarchive/node  base + systemd and the Debian packages the roles install,
#                     so that converge in the lab does not wait on downloads.
# Idempotent: base is kept once built, node while lab/image is unchanged; FORCE=1 rebuilds both.
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

# The node image is rebuilt when lab/image changed since it was built (its label).
context=$(cd "$here/../lab/image" && find . -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)
built=$(docker image inspect -f '{{ index .Config.Labels "mailarchive.context" }}' mailarchive/node 2>/dev/null || true)
if [ "${FORCE:-0}" = 1 ] || [ "$built" != "$context" ]; then
  echo "build-images: building mailarchive/node (lab/image ${context})"
  docker build -q --label "mailarchive.context=$context" -t mailarchive/node "$here/../lab/image" >/dev/null
fi
docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep '^mailarchive/'
