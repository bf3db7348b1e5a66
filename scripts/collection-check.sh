#!/usr/bin/env bash
# Build the collection tarball, install it into an empty path, and use it by
# FQCN from outside the repository: ansible-doc for every module and role,
# and a syntax check of the installed site playbook.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
cd "$top"
ansible-galaxy collection build --force --output-path "$out" >/dev/null
tarball=$(ls "$out"/mailarchive-cluster-*.tar.gz)
echo "built $(basename "$tarball") ($(du -h "$tarball" | cut -f1))"
ansible-galaxy collection install --force --offline --no-deps -p "$out/installed" "$tarball" >/dev/null
cd "$out"
export ANSIBLE_COLLECTIONS_PATH="$out/installed"
unset ANSIBLE_CONFIG
export ANSIBLE_NOCOLOR=1 ANSIBLE_FORCE_COLOR=0
# Every module and role in the tarball, so that a new one cannot be forgotten here.
modules=$(tar -tzf "$tarball" | sed -n 's|^\(\./\)\{0,1\}plugins/modules/\([a-z_]*\)\.py$|\2|p' | sort)
roles=$(tar -tzf "$tarball" | sed -n 's|^\(\./\)\{0,1\}roles/\([a-z_]*\)/meta/argument_specs\.yml$|\2|p' | sort)
if [ -z "$modules" ] || [ -z "$roles" ]; then
  echo "no modules or roles found in $tarball" >&2
  exit 1
fi
for module in $modules; do
  ansible-doc "mailarchive.cluster.$module" | grep -q "^> MODULE mailarchive.cluster.$module"
  echo "ansible-doc mailarchive.cluster.$module: ok"
done
for role in $roles; do
  ansible-doc -t role "mailarchive.cluster.$role" | grep -q "mailarchive.cluster.$role"
  echo "ansible-doc -t role mailarchive.cluster.$role: ok"
done
ansible-playbook -i "$top/inventories/production" mailarchive.cluster.site --syntax-check >/dev/null
echo "ansible-playbook mailarchive.cluster.site --syntax-check: ok"
if tar -tzf "$tarball" | grep -E '^(\./)?(\.collections|\.venv|\.venv-sanity|lab|build|tests/output)/|(^|/)\.secrets/'; then
  echo "the tarball holds development files or secrets" >&2
  exit 1
fi
