"""The molecule scenario's hosts and addresses, read from its inventory."""

import json
import os
import subprocess
from pathlib import Path

import pytest
import testinfra.utils.ansible_runner

RUNNER = testinfra.utils.ansible_runner.AnsibleRunner(os.environ["MOLECULE_INVENTORY_FILE"])
SCENARIO = os.environ.get("MOLECULE_SCENARIO_NAME", "default")
# The dr scenario's DR site has an inventory of its own.
DR_INVENTORY = Path(os.environ.get("MOLECULE_SCENARIO_DIRECTORY", ".")) / "dr-inventory"
ROOT = Path(__file__).resolve().parents[2]


def playbook(path, *args):
    """Run one of the collection's playbooks (relative to the repository) on the scenario's inventory."""
    return subprocess.run(
        ["ansible-playbook", "-i", os.environ["MOLECULE_INVENTORY_FILE"], str(ROOT / path), *args],
        capture_output=True, text=True, cwd=ROOT, check=False,
        env=dict(os.environ, ANSIBLE_COLLECTIONS_PATH=f"{ROOT}/.collections", ANSIBLE_CONFIG=str(ROOT / "ansible.cfg")))


def rendered(runner, host, names):
    """Variables of ``host`` as Ansible templates them (get_variables gives them raw)."""
    args = json.dumps({"msg": {n: "{{ %s }}" % n for n in names}})
    return runner.run_module(host, "ansible.builtin.debug", args, check=False)["msg"]


class Site:
    """What a person needs to send mail in and look for it."""

    def __init__(self, runner):
        self.runner = runner
        self.workers = sorted(runner.get_hosts("workers"))
        self.gateways = sorted(runner.get_hosts("gateways"))
        self.dns = sorted(runner.get_hosts("dns"))
        self.backup_servers = sorted(runner.get_hosts("backup_servers"))
        first = rendered(runner, self.workers[0], ["worker_api_token", "mailarchive_archive_domain",
                                                   "mailarchive_journal_address", "mailarchive_journal_domain"])
        self.token = first["worker_api_token"]
        self.archive_domain = first["mailarchive_archive_domain"]
        self.journal_address = first["mailarchive_journal_address"]
        self.journal_domain = first["mailarchive_journal_domain"]
        hosts = self.workers + self.gateways + self.dns + self.backup_servers
        self.ip = {h: runner.get_variables(h)["mailarchive_ip"] for h in hosts}
        self.server_id = {w: int(runner.get_variables(w)["worker_server_id"]) for w in self.workers}

    def api(self, worker):
        return f"http://{self.ip[worker]}:8025"

    def module_workers(self):
        """The ``workers`` option of delivery_check and reconcile."""
        return [{"name": w, "url": self.api(w), "server_id": self.server_id[w], "token": self.token} for w in self.workers]


@pytest.fixture(scope="session")
def site():
    return Site(RUNNER)


@pytest.fixture(scope="session")
def dr_site():
    if not DR_INVENTORY.is_dir():
        pytest.skip("only the dr scenario has a DR site")
    return Site(testinfra.utils.ansible_runner.AnsibleRunner(str(DR_INVENTORY / "hosts.yml")))
