"""The dns_rrsets filter, as Ansible loads and runs it: dns_extra_records grouped into RRsets."""

import json
import subprocess

from module_runner import ROOT, environment


def rrsets(records):
    """Apply the filter through ansible's debug module; return (ok, value or message)."""
    args = json.dumps({"msg": "{{ records | mailarchive.cluster.dns_rrsets('example.com', 3600, 300) }}"})
    proc = subprocess.run(["ansible", "localhost", "-i", "localhost,", "-c", "local", "-m", "ansible.builtin.debug",
                           "-a", args, "-e", json.dumps({"records": records})],
                          env=environment(), cwd=ROOT, capture_output=True, text=True, check=False)
    result = json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]
    return (not result.get("failed"), result["msg"])


def test_records_of_one_name_and_type_form_one_rrset_with_absolute_names_addresses_first():
    ok, value = rrsets([
        {"name": "dr-archive-gw", "type": "MX", "value": "10 dr-archive-gw"},
        {"name": "dr-archive-gw", "type": "A", "value": "198.18.0.10"},
        {"name": "dr-archive-gw", "type": "A", "value": "198.18.0.11"},
        {"name": "dr-archive-gw", "type": "A", "value": "198.18.0.10"},
    ])
    assert ok, value
    assert value == [
        {"name": "dr-archive-gw.example.com.", "type": "A", "ttl": 300, "values": ["198.18.0.10", "198.18.0.11"]},
        {"name": "dr-archive-gw.example.com.", "type": "MX", "ttl": 3600, "values": ["10 dr-archive-gw.example.com."]},
    ]


def test_a_record_keeps_its_own_ttl():
    ok, value = rrsets([{"name": "mx2", "type": "A", "value": "198.18.0.12", "ttl": 60}])
    assert ok and value[0]["ttl"] == 60


def test_one_rrset_with_two_ttls_is_refused_in_one_line():
    ok, message = rrsets([{"name": "mx2", "type": "A", "value": "198.18.0.12", "ttl": 60},
                          {"name": "mx2", "type": "A", "value": "198.18.0.13"}])
    assert not ok
    assert "dns_rrsets: mx2.example.com. A has records with TTLs 60 and 300; one RRset needs one TTL" in message
