"""The roles' preflight assertions fail on wrong inventory variables, naming host and variable."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path


ROOT = Path(__file__).resolve().parents[3]


def preflight(tmp_path, hosts_yaml, tags="worker_preflight,dns_preflight,gateway_preflight,backup_preflight"):
    (tmp_path / "hosts.yml").write_text(textwrap.dedent(hosts_yaml))
    (tmp_path / "group_vars").mkdir(exist_ok=True)
    (tmp_path / "group_vars" / "all.yml").write_text(
        (ROOT / "inventories/production/group_vars/all/main.yml").read_text()
        + "ansible_connection: local\nansible_become: false\n"
        + f"ansible_python_interpreter: {sys.executable}\nworker_license_expiry: 2000000000\n"
    )
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_STDOUT_CALLBACK="json",
               ANSIBLE_LOAD_CALLBACK_PLUGINS="1", ANSIBLE_COLLECTIONS_PATH=str(ROOT / ".collections"),
               ANSIBLE_GATHERING="explicit")
    proc = subprocess.run(["ansible-playbook", "-i", str(tmp_path / "hosts.yml"), "site.yml", "--tags", tags],
                          cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    out = json.loads(proc.stdout)
    failures = []
    for play in out["plays"]:
        for task in play["tasks"]:
            for host, result in task["hosts"].items():
                if result.get("failed"):
                    failed_items = [item for item in result.get("results", []) if item.get("failed")]
                    failures += [(host, item.get("msg", "")) for item in failed_items] or [(host, result.get("msg", ""))]
    return proc.returncode, failures


BASE = """
all:
  children:
    dns: {hosts: {ns: {mailarchive_ip: 198.18.99.2}}}
    gateways: {hosts: {archive-gw: {mailarchive_ip: 198.18.99.10}}}
    workers:
      hosts:
        worker0: {mailarchive_ip: 198.18.99.20, worker_server_id: 0}
        worker1: {mailarchive_ip: 198.18.99.21, worker_server_id: 1}
"""


def test_a_correct_inventory_passes_preflight(tmp_path):
    code, failures = preflight(tmp_path, BASE)
    assert (code, failures) == (0, [])


def test_two_workers_with_one_server_id(tmp_path):
    code, failures = preflight(tmp_path, BASE.replace("worker_server_id: 1", "worker_server_id: 0"))
    assert code != 0
    assert ("worker0", "worker0: worker_server_id 0 is also used by worker1; every worker needs its own") in failures
    assert ("worker1", "worker1: worker_server_id 0 is also used by worker0; every worker needs its own") in failures


def test_server_id_out_of_range(tmp_path):
    code, failures = preflight(tmp_path, BASE.replace("worker_server_id: 1", "worker_server_id: 300"))
    assert ("worker1", "worker1: worker_server_id must be an integer 0-255, found 300") in failures


def test_expired_license(tmp_path):
    code, failures = preflight(tmp_path, BASE.replace("worker_server_id: 1}", "worker_server_id: 1, worker_license_expiry: 1715143432}"))
    [(host, msg)] = failures
    assert host == "worker1" and msg.startswith("worker1: the license expiry 1715143432 (2024-05-08) is past")


def test_license_line_with_wrong_server_id(tmp_path):
    line = "customer=EXAMPLE,expiry=2000000000,server_id=7,max_release=20271231,multitenancy=0,hostname=archive.example.com,ip=0.0.0.0"
    code, failures = preflight(tmp_path, BASE.replace("worker_server_id: 1}", f"worker_server_id: 1, worker_license_line: '{line}'}}"))
    [(host, msg)] = failures
    assert host == "worker1" and "server_id=7" in msg and "worker_server_id 1" in msg


def test_host_without_an_address(tmp_path):
    code, failures = preflight(tmp_path, BASE.replace("worker1: {mailarchive_ip: 198.18.99.21, ", "worker1: {"))
    assert ("ns", "worker1: mailarchive_ip must be the host's IPv4 address, found nothing") in failures


def test_backups_without_a_passphrase(tmp_path):
    hosts = BASE.replace("    workers:", "    backup_servers: {hosts: {backup: {mailarchive_ip: 198.18.99.5}}}\n    workers:")
    code, failures = preflight(tmp_path, hosts)
    assert code != 0
    [(host, msg), *_rest] = sorted(failures)
    assert host == "worker0"
    assert msg.startswith("worker0: backup_repository must name a borg repository (found 'ssh://borg@backup.example.com/./worker0')")
    assert "backup_passphrase must have at least 16 characters (found 0)" in msg
    assert {h for h, _m in failures} == {"worker0", "worker1"}


def test_an_api_client_with_a_short_token_or_an_address_that_is_not_ipv4(tmp_path):
    clients = ("[{name: controller, token: " + "t" * 40 + ", scopes: [read, probes], addresses: [198.18.99.1]},"
               " {name: web1, token: shorttoken, scopes: [read], addresses: [web1.example.com]}]")
    code, failures = preflight(tmp_path, BASE.replace("worker_server_id: 1}", f"worker_server_id: 1, worker_api_clients: {clients}}}"))
    assert code != 0
    [(host, msg)] = failures
    assert host == "worker1"
    assert msg == ("worker1: worker_api_clients entry web1 needs a name, a token of at least 32 characters, scopes from "
                   "read, probes, holds, import, metrics, dedupe (found read) and IPv4 addresses (found web1.example.com)")
    assert "shorttoken" not in str(failures)


def test_an_api_client_with_an_unknown_scope_fails_the_argument_spec(tmp_path):
    clients = "[{name: controller, token: " + "t" * 40 + ", scopes: [read, delete], addresses: []}]"
    code, failures = preflight(tmp_path, BASE.replace("worker_server_id: 1}", f"worker_server_id: 1, worker_api_clients: {clients}}}"))
    [(host, msg)] = failures
    assert host == "worker1" and "scopes must be one or more of: read, probes, holds, import" in msg
    assert "worker_api_clients" in msg and "t" * 40 not in msg


def test_no_api_client_for_the_controller(tmp_path):
    clients = "[{name: web1, token: " + "t" * 40 + ", scopes: [read], addresses: []}]"
    code, failures = preflight(tmp_path, BASE.replace("worker_server_id: 1}", f"worker_server_id: 1, worker_api_clients: {clients}}}"))
    assert ("worker1", "worker1: worker_api_clients (web1) must name each client once and include controller "
                       "(worker_api_controller_client), and worker_api_health_listen (127.0.0.1:8026) must be a loopback address") in failures


UI = BASE + """    ui:
      hosts:
        web1: {mailarchive_ip: 198.18.99.30}
"""


def ui_preflight(tmp_path, users):
    return preflight(tmp_path, UI.replace("web1: {mailarchive_ip: 198.18.99.30}", f"web1: {{mailarchive_ip: 198.18.99.30, ui_users: {users}}}"),
                     tags="ui_preflight")


def test_the_ui_preflight_names_a_bad_account(tmp_path):
    code, failures = ui_preflight(tmp_path, '[{username: "bad name", password: "long enough password", roles: [user]},'
                                            ' {username: cy, password: "long enough password", roles: [owner]}]')
    messages = [msg for host, msg in failures if host == "web1"]
    assert code != 0
    assert any(m.startswith("web1: ui_users entry bad name needs a username") for m in messages)
    assert any(m.startswith("web1: ui_users entry cy needs") and "found owner" in m for m in messages)
    assert not any("long enough password" in m for m in messages)


def test_the_ui_preflight_names_short_passwords_and_never_shows_one(tmp_path):
    code, failures = ui_preflight(tmp_path, '[{username: ada, password: "short-pw", roles: [auditor]}, {username: dee, disabled: true},'
                                            ' {username: eve, roles: [user]}]')
    assert code != 0
    assert failures == [("web1", "web1: ui_users ada, eve need a password of at least 12 characters (or disabled: true)")]


def test_a_correct_ui_host_passes_preflight(tmp_path):
    code, failures = preflight(tmp_path, UI, tags="ui_preflight")
    assert (code, failures) == (0, [])


def test_monitoring_without_an_alert_destination_and_an_exporter_client_that_is_not_ipv4(tmp_path):
    hosts = BASE + "    monitoring: {hosts: {monitor: {mailarchive_ip: 198.18.99.40}}}\n"
    (tmp_path / "host_vars").mkdir()
    (tmp_path / "host_vars" / "monitor.yml").write_text("monitoring_alert_email_to: ''\n")
    (tmp_path / "host_vars" / "worker0.yml").write_text("exporters_allowed_addresses: [monitor.example.com]\n")
    code, failures = preflight(tmp_path, hosts, tags="exporters_preflight,monitoring_preflight")
    assert code != 0
    assert sorted(host for host, _msg in failures) == ["monitor", "worker0"], failures
    messages = dict(failures)
    assert messages["monitor"].startswith("monitor: alerts need somewhere to go: monitoring_alert_webhook_urls")
    assert messages["worker0"].startswith("worker0: exporters_listen_address must be this host's IPv4 address")
    assert "(found [\"monitor.example.com\"])" in messages["worker0"]
