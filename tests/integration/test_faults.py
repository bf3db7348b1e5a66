"""Faults on the running cluster; each ends by reconciling what was sent against what is archived."""

import json
import subprocess
import time
import urllib.request

import pytest

from conftest import SCENARIO
from mailflow import make_messages, send, wait_archived

pytestmark = pytest.mark.skipif(SCENARIO != "cluster", reason="needs the five workers of the cluster scenario")


def docker(*args, check=True):
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check)


def rcpt_from_gateway(site, worker):
    """What `worker` answers the gateway at RCPT TO, asked from the gateway itself."""
    script = ("import smtplib,sys; s=smtplib.SMTP(sys.argv[1], 25, timeout=20); s.ehlo('archive-gw.example.com');"
              "s.mail('journal@customer.example'); print(*s.rcpt(sys.argv[2])); s.quit()")
    out = docker("exec", site.gateways[0], "python3", "-c", script, site.ip[worker], f"archive@{site.archive_domain}")
    code, _sep, text = out.stdout.strip().partition(" ")
    return int(code), text


def stats(site, worker):
    request = urllib.request.Request(f"{site.api(worker)}/api/v1/stats", headers={"Authorization": f"Bearer {site.token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def summary(name, messages, found, started):
    lost = len(messages) - len(found)
    duplicated = sum(1 for copies in found.values() if len(copies) > 1)
    line = (f"{name}: sent {len(messages)}, archived {len(found)}, lost {lost}, duplicated {duplicated}, "
            f"drained in {time.time() - started:.1f} s")
    print(line)
    return lost, duplicated


def test_an_expired_license_on_one_worker_defers_its_mail_to_the_others(site):
    worker = "worker4"
    license_file = "/etc/archive-store/license"
    original = docker("exec", worker, "cat", license_file).stdout
    expired = original.replace(original.split("expiry=")[1].split(",")[0], "1715143432")
    docker("exec", worker, "sh", "-c", f"printf '%s' '{expired}' > {license_file}")
    try:
        for _n in range(60):
            code, text = rcpt_from_gateway(site, worker)
            if code != 250:
                break
            time.sleep(1)
        assert code == 451 and "refuses mail for now" in text and "expiry" in text, (code, text)
        state = stats(site, worker)
        assert state["ingesting"] is False and "expiry" in state["license_error"]

        started = time.time()
        tag = f"license{int(started)}"
        messages = make_messages(tag, 100)
        send(site.ip[site.gateways[0]], site.journal_address, messages)
        wanted, found = wait_archived(site, tag, messages)
        assert summary("expired license on worker4", messages, found, started) == (0, 0)
        assert not any(copies[0][0] == worker for copies in found.values())
        assert stats(site, worker)["spool_backlog"] == 0
    finally:
        docker("exec", worker, "sh", "-c", f"printf '%s' '{original}' > {license_file}")
    for _n in range(60):
        code, _text = rcpt_from_gateway(site, worker)
        if code == 250:
            break
        time.sleep(1)
    assert code == 250
