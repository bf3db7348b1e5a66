#!/usr/bin/env bash
# ansible-test sanity from an ansible_collections/mailarchive/cluster path:
# a fresh copy of the tracked files under build/, with its own venv holding
# the pinned ansible-core (ansible-test installs each test's requirements).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
copy="$top/build/ansible_collections/mailarchive/cluster"
venv="$top/.venv-sanity"
core=$(grep '^ansible-core==' "$top/requirements.txt")

rm -rf "$top/build/ansible_collections"
mkdir -p "$copy"
cd "$top"
git ls-files -z --cached --others --exclude-standard | grep -zv '^\.collections/' \
  | xargs -0 -I{} cp --parents -P {} "$copy/"
cd "$copy"
git init -q && git add -A && git -c user.email=ci@invalid -c user.name=ci commit -qm sanity

if ! "$venv/bin/pip" show ansible-core 2>/dev/null | grep -q "^Version: ${core#*==}$"; then
  /usr/bin/python3 -m venv "$venv"
  "$venv/bin/pip" install -q "$core"
fi
# ansible-test bootstraps pip in its venvs with a get-pip.py from a host that
# is not reachable here; scripts/get-pip-shim.py does the same from ensurepip.
pip_version=$(grep -ho "pip='[0-9.]*'" "$venv"/lib/python3*/site-packages/ansible_test/_internal/python_requirements.py | grep -o "[0-9][0-9.]*")
mkdir -p ~/.ansible/test/cache
cp "$top/scripts/get-pip-shim.py" ~/.ansible/test/cache/"get_pip_${pip_version//./_}.py"
PATH="$venv/bin:$PATH" ansible-test sanity --requirements --python 3.11 "$@"
