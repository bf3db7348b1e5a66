"""The molecule scenario's hosts and addresses, read from its inventory."""

import json
import os

import pytest
import testinfra.utils.ansible_runner

RUNNER = testinfra.utils.ansible_runner.AnsibleRunner(os.environ["MOLECULE_INVENTORY_FILE"])
SCENARIO = os.environ.get("MOLECULE_SCENARIO_NAME", "default")


def hostvars(name):
    return RUNNER.get_variables(name)


def rendered(host, names):
    """Variables of ``host`` as Ansible templates them (get_variables gives them raw)."""
    args = json.dumps({"msg": {n: "{{ %s }}" % n for n in names}})
    return RUNNER.run_module(host, "ansible.builtin.debug", args, check=False)["msg"]


class Site:
    """What a person needs to send mail in and look for it."""

    def __init__(self):
        self.workers = sorted(RUNNER.get_hosts("workers"))
        self.gateways = sorted(RUNNER.get_hosts("gateways"))
        self.dns = sorted(RUNNER.get_hosts("dns"))
        first = rendered(self.workers[0], ["worker_api_token", "mailarchive_archive_domain", "mailarchive_journal_address"])
        self.token = first["worker_api_token"]
        self.archive_domain = first["mailarchive_archive_domain"]
        self.journal_address = first["mailarchive_journal_address"]
        self.ip = {h: hostvars(h)["mailarchive_ip"] for h in self.workers + self.gateways + self.dns}
        self.server_id = {w: int(hostvars(w)["worker_server_id"]) for w in self.workers}

    def api(self, worker):
        return f"http://{self.ip[worker]}:8025"


@pytest.fixture(scope="session")
def site():
    return Site()
