"""The running lab's workers as the worker role's contract describes them (make lab first).

Each worker publishes its contract as the local fact ``ansible_local.archive_worker``
(roles/worker/tasks/contract.yml), the site CA's file among it; Ansible's API token (the
``controller`` client of worker_api_clients) comes from the inventory, as the role reads it.
"""

import json
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "mailarchive-lab-"  # lab/up.yml names each container after its host


def _ansible(inventory, pattern, module, args, become=False):
    proc = subprocess.run(
        ["ansible", "-i", str(ROOT / inventory), pattern, "-m", module, "-a", args] + (["--become"] if become else []),
        capture_output=True, text=True, cwd=ROOT, check=False,
        env={**os.environ, "ANSIBLE_STDOUT_CALLBACK": "json", "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1"})
    try:
        hosts = json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"]
    except (ValueError, KeyError, IndexError):
        raise SystemExit(f"ansible {module} on {pattern} failed: {proc.stderr.strip()[-500:]}") from None
    failed = [h for h, r in hosts.items() if r.get("failed") or r.get("unreachable")]
    if failed:
        raise SystemExit(f"ansible {module} failed on {', '.join(failed)}: {hosts[failed[0]].get('msg')}")
    return hosts


def workers(inventory="inventories/lab"):
    """{name: contract} in name order (the contract names the site CA as ``ca_file``), with ``token``, ``address`` (SMTP) and ``container``."""
    facts = _ansible(inventory, "workers", "ansible.builtin.setup", "filter=ansible_local")
    contracts = {h: r["ansible_facts"]["ansible_local"]["archive_worker"] for h, r in sorted(facts.items())}
    wanted = ("{'address': mailarchive_ip, 'token': (worker_api_clients"
              " | selectattr('name', 'equalto', worker_api_controller_client | default('controller')) | first).token}")
    client = _ansible(inventory, "workers", "ansible.builtin.debug", "msg={{ %s }}" % wanted)
    for name, contract in contracts.items():
        contract.update(client[name]["msg"])
        contract["container"] = PREFIX + name
    return contracts
