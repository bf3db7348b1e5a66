"""The dns role's RFC 2136 mode against a real bind9 that accepts TSIG-signed updates.

A second named runs in the scenario's ns container (port 5353, its own
directory), serving an example.com that only the test's TSIG key may update.
The role, run from the controller with dns_serve_zone false, pushes the MX
sets, the A records and dns_extra_records there; dnspython reads them back.
"""

import base64
import json
import secrets
import subprocess
import sys
import textwrap

import dns.resolver
import pytest

from helpers import ROOT, docker_exec, wait_until
from module_runner import environment

NS = "ns"
PORT = 5353
DIR = "/tmp/nsupdate-test"
KEY_NAME = "archive-update"

INVENTORY = """
all:
  children:
    dns: {hosts: {ns: {mailarchive_ip: 198.18.30.2}}}
    gateways: {hosts: {archive-gw: {mailarchive_ip: 198.18.30.10}}}
    workers:
      hosts:
        worker0: {mailarchive_ip: 198.18.30.20, worker_server_id: 0}
        worker1: {mailarchive_ip: 198.18.30.21, worker_server_id: 1}
"""


def named_conf(address, secret):
    return textwrap.dedent(f"""\
        options {{
            directory "{DIR}";
            pid-file "{DIR}/named.pid";
            session-keyfile "{DIR}/session.key";
            listen-on port {PORT} {{ {address}; }};
            listen-on-v6 {{ none; }};
            recursion no;
            dnssec-validation no;
        }};
        controls {{ }};
        key "{KEY_NAME}" {{ algorithm hmac-sha256; secret "{secret}"; }};
        zone "example.com" {{
            type primary;
            file "{DIR}/example.com.zone";
            allow-update {{ key "{KEY_NAME}"; }};
        }};
        """)


ZONE = """\
$TTL 300
@ IN SOA ns.example.com. hostmaster.example.com. 1 3600 600 86400 300
@ IN NS ns.example.com.
ns IN A 198.18.30.2
"""


@pytest.fixture(scope="module")
def server(site):
    """named on the ns container's address, port 5353; yields (address, TSIG secret)."""
    address = site.ip[NS]
    secret = base64.b64encode(secrets.token_bytes(32)).decode()
    docker_exec(NS, "sh", "-c", f"rm -rf {DIR} && mkdir {DIR}")
    docker_exec(NS, "sh", "-c", f"cat > {DIR}/named.conf", input=named_conf(address, secret))
    docker_exec(NS, "sh", "-c", f"cat > {DIR}/example.com.zone", input=ZONE)
    docker_exec(NS, "chown", "-R", "bind:bind", DIR)
    docker_exec(NS, "named-checkconf", f"{DIR}/named.conf")
    docker_exec(NS, "named", "-c", f"{DIR}/named.conf", "-u", "bind")
    wait_until(lambda: _answers(address, "ns.example.com", "A"), "the test's named on port 5353",
               log=lambda: docker_exec(NS, "sh", "-c", f"ls -l {DIR}; journalctl -t named -n 20 --no-pager",
                                       check=False).stdout)
    yield address, secret
    docker_exec(NS, "sh", "-c", f"kill $(cat {DIR}/named.pid); rm -rf {DIR}", check=False)


def _resolver(address):
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [address]
    resolver.port = PORT
    resolver.lifetime = 5
    return resolver


def _answers(address, name, rtype):
    try:
        return sorted(r.to_text() for r in _resolver(address).resolve(name, rtype))
    except (dns.exception.DNSException, OSError):
        return []


def push(tmp_path, address, secret, extra_records, *args):
    """Run site.yml's dns play in RFC 2136 mode from the controller; return the parsed JSON result."""
    (tmp_path / "hosts.yml").write_text(INVENTORY)
    variables = {
        "ansible_connection": "local", "ansible_become": False, "ansible_python_interpreter": sys.executable,
        "dns_zone": "example.com", "dns_archive_domain": "archive.example.com",
        "dns_serve_zone": False, "dns_nsupdate_server": address, "dns_nsupdate_port": PORT,
        "dns_nsupdate_key_name": KEY_NAME, "dns_nsupdate_key_secret": secret,
        "dns_extra_mx": [{"name": "archive-gw.example.com", "group": "gateways"}],
        "dns_extra_records": extra_records,
    }
    (tmp_path / "vars.json").write_text(json.dumps(variables))
    env = dict(environment(), ANSIBLE_GATHERING="explicit")
    proc = subprocess.run(["ansible-playbook", "-i", str(tmp_path / "hosts.yml"), "-e", f"@{tmp_path / 'vars.json'}",
                           "--limit", "dns", "--tags", "dns", "site.yml", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, f"the dns play failed: {proc.stdout[-3000:]} {proc.stderr[-1000:]}"
    return json.loads(proc.stdout)


def changed(result):
    return sum(stats["changed"] for stats in result["stats"].values())


DR_GATEWAY = [
    {"name": "dr-archive-gw", "type": "A", "value": "198.18.30.40"},
    {"name": "dr-archive-gw", "type": "MX", "value": "10 dr-archive-gw"},
]


def test_rfc2136_pushes_mx_sets_a_records_and_extra_records(server, tmp_path):
    address, secret = server
    first = push(tmp_path, address, secret, DR_GATEWAY)
    assert changed(first) > 0
    assert _answers(address, "archive.example.com", "MX") == ["10 worker0.example.com.", "10 worker1.example.com."]
    assert _answers(address, "archive-gw.example.com", "MX") == ["10 archive-gw.example.com."]
    assert _answers(address, "worker1.example.com", "A") == ["198.18.30.21"]
    assert _answers(address, "archive-gw.example.com", "A") == ["198.18.30.10"]
    # dns_extra_records: the DR gateway's A and MX records (these were never pushed before).
    assert _answers(address, "dr-archive-gw.example.com", "A") == ["198.18.30.40"]
    assert _answers(address, "dr-archive-gw.example.com", "MX") == ["10 dr-archive-gw.example.com."]
    assert changed(push(tmp_path, address, secret, DR_GATEWAY)) == 0, "a second push changed records"


def test_rfc2136_replaces_a_changed_extra_record_and_check_mode_changes_nothing(server, tmp_path):
    address, secret = server
    push(tmp_path, address, secret, DR_GATEWAY)
    moved = [dict(DR_GATEWAY[0], value="198.18.30.41"), DR_GATEWAY[1]]
    checked = push(tmp_path, address, secret, moved, "--check")
    assert changed(checked) == 1
    assert _answers(address, "dr-archive-gw.example.com", "A") == ["198.18.30.40"], "check mode sent an update"
    push(tmp_path, address, secret, moved)
    assert _answers(address, "dr-archive-gw.example.com", "A") == ["198.18.30.41"]


def test_rfc2136_with_a_wrong_key_fails_and_changes_nothing(server, tmp_path):
    address, _secret = server
    wrong = base64.b64encode(secrets.token_bytes(32)).decode()
    with pytest.raises(AssertionError, match="the dns play failed"):
        push(tmp_path, address, wrong, [{"name": "intruder", "type": "A", "value": "198.18.30.99"}])
    assert _answers(address, "intruder.example.com", "A") == []
