"""The molecule scenario's hosts and addresses, read from its inventory and the workers' contract.

Each scenario runs the tests of its own folder here (its molecule.yml names them):
site/ in every scenario, cluster/ and dr/ in theirs, faults/ under make test-faults.
"""

import base64
import json
import os
import ssl
import subprocess
from pathlib import Path

import pytest
import testinfra.utils.ansible_runner

from archive_common.client import ArchiveApi

RUNNER = testinfra.utils.ansible_runner.AnsibleRunner(os.environ["MOLECULE_INVENTORY_FILE"])
SCENARIO = os.environ.get("MOLECULE_SCENARIO_NAME", "default")
# The dr scenario's DR site has an inventory of its own.
DR_INVENTORY = Path(os.environ.get("MOLECULE_SCENARIO_DIRECTORY", ".")) / "dr-inventory"
ROOT = Path(__file__).resolve().parents[2]
# How many tests this scenario's run may skip (its molecule.yml declares it); more fails the run.
DECLARED_SKIPS = int(os.environ.get("MAILARCHIVE_DECLARED_SKIPS", "0"))
_skipped = []


def pytest_runtest_logreport(report):
    # A skip whose reason names a worker_receiver mode is declared by that mode (MAILARCHIVE_WORKER_RECEIVER).
    if report.skipped and "worker_receiver" not in str(report.longrepr):
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session, exitstatus):
    if len(_skipped) > DECLARED_SKIPS and exitstatus == 0:
        print(f"\n{SCENARIO}: {len(_skipped)} tests skipped, {DECLARED_SKIPS} declared: {', '.join(_skipped)}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def each(group):
    """Run a test once per host of an inventory group: ``name`` is the host, ``node`` its testinfra Host."""
    return pytest.mark.parametrize("name", sorted(RUNNER.get_hosts(group)))


@pytest.fixture
def node(name):
    return RUNNER.get_host(name)


def playbook(path, *args):
    """Run one of the collection's playbooks (relative to the repository) on the scenario's inventory."""
    return subprocess.run(
        ["ansible-playbook", "-i", os.environ["MOLECULE_INVENTORY_FILE"], str(ROOT / path), *args],
        capture_output=True, text=True, cwd=ROOT, check=False,
        env=dict(os.environ, ANSIBLE_COLLECTIONS_PATH=f"{ROOT}/.collections", ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
                 ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1"))


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
        first = rendered(runner, self.workers[0], ["mailarchive_archive_domain", "mailarchive_journal_address",
                                                   "mailarchive_journal_domain", "worker_api_clients",
                                                   "mailarchive_controller_addresses"])
        # The worker role's contract, as each worker publishes it (ansible_local.archive_worker), and its token.
        self.contract = {w: runner.run_module(w, "ansible.builtin.setup", "filter=ansible_local", check=False)
                         ["ansible_facts"]["ansible_local"]["archive_worker"] for w in self.workers}
        # How mail reaches each worker's store (worker_receiver): with "smtp" the store answers port 25, no postfix runs.
        self.receiver = {w: self.contract[w].get("receiver", "spool") for w in self.workers}
        # The API's clients as the inventory gives them: Ansible's own token, and the site CA on this machine.
        self.clients = {c["name"]: c for c in first["worker_api_clients"]}
        self.token = self.clients["controller"]["token"]
        self.ca_file = self.contract[self.workers[0]]["ca_file"]
        self.controller_address = first["mailarchive_controller_addresses"][0]
        self.archive_domain = first["mailarchive_archive_domain"]
        self.journal_address = first["mailarchive_journal_address"]
        self.journal_domain = first["mailarchive_journal_domain"]
        hosts = self.workers + self.gateways + self.dns + self.backup_servers
        self.ip = {h: runner.get_variables(h)["mailarchive_ip"] for h in hosts}
        self.server_id = {w: int(runner.get_variables(w)["worker_server_id"]) for w in self.workers}

    def _read(self, host, path):
        answer = self.runner.run_module(host, "ansible.builtin.slurp", f"src={path}", become=True)
        return base64.b64decode(answer["content"]).decode().strip()

    def api(self, worker):
        return self.contract[worker]["api_url"]

    def store_command(self, worker):
        """The store's command line on ``worker`` (runs as the store's user)."""
        return self.contract[worker]["command"]

    def client(self, worker, token=None):
        """The shared API client (archive_common.client) for ``worker``, verifying it with the site CA."""
        return ArchiveApi(worker, self.api(worker), token or self.token, 10, self.server_id[worker], cafile=self.ca_file)

    def tls(self):
        """A TLS client context that trusts the site CA only."""
        return ssl.create_default_context(cafile=self.ca_file)

    def module_workers(self):
        """The ``workers`` option of delivery_check, search and reconcile."""
        return [{"name": w, "url": self.api(w), "server_id": self.server_id[w], "token": self.token,
                 "ca_file": self.ca_file} for w in self.workers]


@pytest.fixture(scope="session")
def site():
    return Site(RUNNER)


@pytest.fixture(scope="session")
def dr_site():
    if not DR_INVENTORY.is_dir():
        pytest.skip("only the dr scenario has a DR site")
    return Site(testinfra.utils.ansible_runner.AnsibleRunner(str(DR_INVENTORY / "hosts.yml")))
