"""delivery_check against the running cluster: a good run, a worker down, and a probe the store lost."""

import json
import subprocess
import time

import pytest

from archive_common.client import ArchiveApiError
from helpers import docker, wait_system_running, wait_until
from module_runner import ROOT, command, environment, result_of, run_module


def check_args(site, **over):
    args = {"gateway": site.ip[site.gateways[0]], "recipient": site.journal_address, "count": 20, "timeout": 60,
            "api_token": site.token, "api_ca_file": site.ca_file,
            "workers": [{"name": w, "url": site.api(w), "server_id": site.server_id[w]} for w in site.workers]}
    args.update(over)
    return args


def test_good_run_every_probe_once_byte_identical_and_spread(site):
    result = run_module("delivery_check", check_args(site, min_workers=4))
    assert not result.get("failed"), result.get("msg")
    assert result["changed"] is False
    assert (result["lost"], result["duplicated"], result["mismatched"]) == ([], [], [])
    assert all(p["sha256_ok"] and p["server_id_ok"] and p["copies"] == 1 for p in result["probes"])
    assert sum(1 for n in result["spread"].values() if n) >= 4
    assert result["latency"]["p95"] is not None


def test_remove_probes_purges_every_probe_with_an_audit_entry(site):
    result = run_module("delivery_check", check_args(site, count=10, remove_probes=True))
    assert not result.get("failed"), result.get("msg")
    assert result["changed"] is True
    stored = sorted(p["archive_id"] for p in result["probes"])
    assert sorted(i for ids in result["removed"].values() for i in ids) == stored
    for worker, removed in result["removed"].items():
        found = docker("exec", worker, "archive_store", "search", "--json", "mailarchiveprobe" + result["run"]).stdout
        assert found == ""
        audit = docker("exec", worker, "cat", site.contract[worker]["data_dir"] + "/audit.log", check=False).stdout
        logged = [json.loads(line)["id"] for line in audit.splitlines() if result["run"] in line]
        assert sorted(logged) == removed
        assert docker("exec", worker, "archive_store", "verify", "--all", check=False).returncode == 0


def answers(site, worker):
    try:
        return site.client(worker).stats() is not None
    except ArchiveApiError:
        return False


def test_with_a_worker_stopped_the_check_still_passes(site):
    docker("stop", "worker3")
    try:
        result = run_module("delivery_check", check_args(site, min_workers=3, timeout=90))
        assert not result.get("failed"), result.get("msg")
        assert result["spread"]["worker3"] == 0 and result["lost"] == []
    finally:
        docker("start", "worker3")
        wait_system_running("worker3")
        wait_until(lambda: answers(site, "worker3"), "worker3's store to answer again", timeout=120)


def test_a_probe_the_store_drops_is_named_as_lost(site):
    if site.receiver["worker1"] == "smtp":
        pytest.skip("worker_receiver smtp keeps no spool: the store answers 250 only once a message is committed")
    spool = site.contract["worker1"]["spool_dir"] + "/Maildir/new"
    # With its store stopped, worker1's postfix would answer 451 (the store's policy service is gone);
    # take the policy out of its restrictions for this test, so that probes reach its spool and wait there.
    restrictions = docker("exec", "worker1", "postconf", "-h", "smtpd_recipient_restrictions").stdout.strip()
    docker("exec", "worker1", "sh", "-c", "postconf -e 'smtpd_recipient_restrictions = check_recipient_access "
           "hash:/etc/postfix/archive_recipients, reject' && postfix reload")
    docker("exec", "worker1", "systemctl", "stop", "archive-store")
    try:
        check = subprocess.Popen(command("delivery_check", check_args(site, count=40, timeout=40)), env=environment(),
                                 cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        dropped = None
        deadline = time.time() + 30
        while dropped is None and time.time() < deadline:
            found = docker("exec", "worker1", "sh", "-c", f"grep -l -m1 X-Mailarchive-Probe {spool}/* 2>/dev/null | head -n1",
                           check=False).stdout.strip()
            if found:
                dropped = docker("exec", "worker1", "sh", "-c", f"grep -m1 -i '^Message-ID:' {found}").stdout.split(":", 1)[1].strip()
                docker("exec", "worker1", "rm", found)  # the store "loses" this one
            else:
                time.sleep(0.5)
        assert dropped, "no probe reached worker1"
    finally:
        docker("exec", "worker1", "systemctl", "start", "archive-store")
        docker("exec", "worker1", "sh", "-c", f"postconf -e 'smtpd_recipient_restrictions = {restrictions}' && postfix reload")
    result = result_of(check.communicate(timeout=120)[0])
    assert result["failed"] is True
    assert result["lost"] == [dropped]
    assert dropped in result["msg"] and "1 lost" in result["msg"]
