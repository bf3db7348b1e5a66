"""The cluster's security settings, each checked from outside as an attacker or auditor would (make test)."""

import hashlib
import json
import smtplib
import time
import urllib.error
import urllib.request

import pytest

from conftest import each, playbook
from helpers import docker_exec
from mailflow import archived_since, listing, send_all


def test_the_store_api_refuses_requests_without_or_with_a_wrong_token(site):
    for token in (None, "wrong-token-0123456789abcdef", site.token[:-1] + "x"):
        request = urllib.request.Request(f"{site.api(site.workers[0])}/api/v1/search?q=a")
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(request, timeout=10)
        assert err.value.code == 401


@each("workers")
def test_the_store_runs_unprivileged_under_systemd_hardening(name, node, site):
    props = dict(line.split("=", 1) for line in node.check_output(
        "systemctl show archive-store -p User -p NoNewPrivileges -p ProtectSystem -p ProtectHome -p PrivateTmp "
        "-p CapabilityBoundingSet -p RestrictSUIDSGID").splitlines())
    assert props == {"User": "archive-store", "NoNewPrivileges": "yes", "ProtectSystem": "strict",
                     "ProtectHome": "yes", "PrivateTmp": "yes", "CapabilityBoundingSet": "", "RestrictSUIDSGID": "yes"}


def test_tls_is_offered_and_used_on_every_hop(site):
    for name in site.gateways + site.workers:
        with smtplib.SMTP(site.ip[name], 25, timeout=30) as client:
            client.ehlo("tls-check.example")
            assert client.has_extn("starttls"), name
    # The transit Received headers the store kept: both hops said ESMTPS.
    since = int(time.time()) - 2
    raw = f"Subject: tls hops {since}\r\n\r\nover TLS\r\n".encode()
    send_all(site, [raw])
    sha = hashlib.sha256(raw).hexdigest()
    found = archived_since(site, since, {sha: "tls"})
    [worker] = found[sha]
    [(archive_id, _sha)] = [(i, s) for i, s in listing(site, worker, since) if s == sha]
    request = urllib.request.Request(f"{site.api(worker)}/api/v1/messages/{archive_id}",
                                     headers={"Authorization": f"Bearer {site.token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        transit = json.load(response)["transit"]
    assert len(transit) == 2, transit
    assert all(" with ESMTPS " in hop for hop in transit), transit


def converge_gateways(*extra):
    proc = playbook("site.yml", "--limit", "gateways", *extra)
    assert proc.returncode == 0, proc.stdout[-3000:]


def test_with_gateway_tls_required_plaintext_is_refused(site):
    gateway = site.ip[site.gateways[0]]
    converge_gateways("-e", "gateway_tls_required=true")
    try:
        level = docker_exec(site.gateways[0], "postconf", "-h", "smtpd_tls_security_level").stdout.strip()
        assert level == "encrypt"
        for _attempt in range(120):  # smtpd processes from before the reload may serve a last session
            with smtplib.SMTP(gateway, 25, timeout=30) as client:
                client.ehlo("plain.example")
                code, reply = client.mail("journal@customer.example")
            if code != 250:
                break
            time.sleep(1)
        assert code == 530 and b"STARTTLS" in reply, (code, reply)
        with smtplib.SMTP(gateway, 25, timeout=30) as client:
            client.starttls()
            assert client.mail("journal@customer.example")[0] == 250
            assert client.rcpt(site.journal_address)[0] == 250
    finally:
        converge_gateways()
    with smtplib.SMTP(gateway, 25, timeout=30) as client:
        client.ehlo("plain.example")
        assert client.mail("journal@customer.example")[0] == 250
