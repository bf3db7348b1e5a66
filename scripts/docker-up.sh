#!/usr/bin/env bash
# Make sure a Docker engine runs on this machine, with every network it
# creates inside the 198.18.0.0/15 test range. Idempotent.
set -euo pipefail

need=()
command -v dockerd >/dev/null || need+=(docker.io)
command -v debootstrap >/dev/null || need+=(debootstrap)
if [ ${#need[@]} -gt 0 ]; then
  echo "docker-up: installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

# Every systemd container takes several inotify instances; the kernel's
# default of 128 per user stops the 18th or so (systemd exits 255 at once).
if [ "$(cat /proc/sys/fs/inotify/max_user_instances 2>/dev/null || echo 1024)" -lt 1024 ]; then
  sysctl -q -w fs.inotify.max_user_instances=1024 || echo "docker-up: could not raise fs.inotify.max_user_instances" >&2
fi

if docker info >/dev/null 2>&1; then
  exit 0
fi

mkdir -p /etc/docker
want='{"bip": "198.18.0.1/24", "default-address-pools": [{"base": "198.19.0.0/16", "size": 24}]}'
if [ ! -f /etc/docker/daemon.json ] || ! grep -q '198.19.0.0/16' /etc/docker/daemon.json; then
  echo "$want" > /etc/docker/daemon.json
fi

echo "docker-up: starting dockerd"
setsid nohup dockerd >/var/log/dockerd.log 2>&1 </dev/null &
for _ in $(seq 1 60); do
  if docker info >/dev/null 2>&1; then
    exit 0
  fi
  sleep 1
done
echo "docker-up: dockerd did not start; see /var/log/dockerd.log" >&2
tail -n 20 /var/log/dockerd.log >&2
exit 1
