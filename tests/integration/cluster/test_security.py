"""The cluster's security settings, each checked from outside as an attacker or auditor would (make test)."""

import hashlib
import http.client
import json
import smtplib
import ssl
import time
import urllib.error
import urllib.request

import pytest

from archive_common.client import ArchiveApiError
from conftest import each, playbook
from helpers import docker_exec, wait_until
from mailflow import archived_since, listing, send_all


def test_the_store_api_refuses_requests_without_or_with_a_wrong_token(site):
    for token in (None, "wrong-token-0123456789abcdef", site.token[:-1] + "x"):
        request = urllib.request.Request(f"{site.api(site.workers[0])}/api/v1/search?q=a")
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(request, timeout=10, context=site.tls())
        assert err.value.code == 401


@each("workers")
def test_the_store_runs_unprivileged_under_systemd_hardening(name, node, site):
    props = dict(line.split("=", 1) for line in node.check_output(
        "systemctl show archive-store -p User -p NoNewPrivileges -p ProtectSystem -p ProtectHome -p PrivateTmp "
        "-p CapabilityBoundingSet -p RestrictSUIDSGID").splitlines())
    # No capability at all; with worker_receiver smtp the one that binds port 25.
    capabilities = "cap_net_bind_service" if site.receiver[name] == "smtp" else ""
    assert props == {"User": "archive-store", "NoNewPrivileges": "yes", "ProtectSystem": "strict",
                     "ProtectHome": "yes", "PrivateTmp": "yes", "CapabilityBoundingSet": capabilities, "RestrictSUIDSGID": "yes"}


def test_tls_is_offered_and_used_on_every_hop(site):
    for name in site.gateways:
        with smtplib.SMTP(site.ip[name], 25, timeout=30) as client:
            client.ehlo("tls-check.example")
            assert client.has_extn("starttls"), name
    # The workers answer only the gateways: ask from one.
    script = ("import smtplib,sys\nfor ip in sys.argv[1:]:\n    s = smtplib.SMTP(ip, 25, timeout=30); s.ehlo('archive-gw.example.com')\n"
              "    print(ip, s.has_extn('starttls')); s.quit()\n")
    out = docker_exec(site.gateways[0], "python3", "-c", script, *[site.ip[w] for w in site.workers]).stdout.split()
    assert out == [x for w in site.workers for x in (site.ip[w], "True")], out
    # The transit Received headers the store kept: both hops said ESMTPS.
    since = int(time.time()) - 2
    raw = f"Subject: tls hops {since}\r\n\r\nover TLS\r\n".encode()
    send_all(site, [raw])
    sha = hashlib.sha256(raw).hexdigest()
    found = archived_since(site, since, {sha: "tls"})
    [worker] = found[sha]
    [(archive_id, _sha)] = [(i, s) for i, s in listing(site, worker, since) if s == sha]
    transit = site.client(worker).message(archive_id)["transit"]
    assert len(transit) == 2, transit
    assert all(" with ESMTPS " in hop for hop in transit), transit


def test_the_gateway_never_relays_to_a_worker_in_plaintext(site):
    """A worker whose postfix stops offering STARTTLS gets nothing: the gateway's TLS policy for the
    archive domain says encrypt, so it hands each message to another worker instead of sending it
    in the clear (smtp_tls_security_level may alone would)."""
    spooled = [w for w in site.workers if site.receiver[w] != "smtp"]
    if not spooled:
        pytest.skip("every worker has worker_receiver smtp: the store requires STARTTLS itself")
    worker = spooled[-1]
    policy = docker_exec(site.gateways[0], "postmap", "-q", site.archive_domain, "hash:/etc/postfix/tls_policy").stdout.strip()
    assert policy == "encrypt", policy

    def offers_starttls():
        script = ("import smtplib,sys\ns = smtplib.SMTP(sys.argv[1], 25, timeout=30); s.ehlo('archive-gw.example.com')\n"
                  "print(s.has_extn('starttls')); s.quit()\n")
        return docker_exec(site.gateways[0], "python3", "-c", script, site.ip[worker]).stdout.strip() == "True"

    docker_exec(worker, "sh", "-c", "postconf -e smtpd_tls_security_level=none && postfix reload")
    try:
        wait_until(lambda: not offers_starttls(), timeout=150, what=f"{worker}'s smtpd without STARTTLS")
        since = int(time.time()) - 2
        messages = [f"Subject: no plaintext {since} {n}\r\n\r\nonly over TLS\r\n".encode() for n in range(30)]
        send_all(site, messages)
        wanted = {hashlib.sha256(raw).hexdigest(): "plaintext" for raw in messages}
        found = archived_since(site, since, wanted)
    finally:
        docker_exec(worker, "sh", "-c", "postconf -e smtpd_tls_security_level=may && postfix reload")
    assert set(found) == set(wanted), f"{len(wanted) - len(found)} of {len(wanted)} not archived"
    # Thirty messages over five workers: without the policy, this worker would get about six.
    assert not [sha for sha, where in found.items() if worker in where], found
    wait_until(offers_starttls, timeout=150, what=f"{worker}'s smtpd with STARTTLS again")


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


def test_plain_http_to_the_api_is_refused(site):
    worker = site.workers[0]
    plain = site.api(worker).replace("https://", "http://") + "/api/v1/stats"
    request = urllib.request.Request(plain, headers={"Authorization": f"Bearer {site.token}"})
    with pytest.raises((urllib.error.URLError, http.client.HTTPException, ConnectionError)):
        urllib.request.urlopen(request, timeout=10).read()


def test_a_client_that_does_not_trust_the_site_ca_fails_the_handshake(site):
    request = urllib.request.Request(site.api(site.workers[0]) + "/api/v1/stats",
                                     headers={"Authorization": f"Bearer {site.token}"})
    with pytest.raises(urllib.error.URLError) as err:
        urllib.request.urlopen(request, timeout=10, context=ssl.create_default_context())
    assert isinstance(err.value.reason, ssl.SSLCertVerificationError), err.value.reason


def test_a_read_token_cannot_remove_probes_and_its_reads_are_logged_with_its_name(site):
    worker = site.workers[0]
    auditor = site.client(worker, site.clients["lab-auditor"]["token"])
    with pytest.raises(ArchiveApiError) as err:
        auditor.purge_probes("0123abcd")
    assert "HTTP 403: client lab-auditor lacks the scope 'probes'" in str(err.value)
    word = f"auditword{int(time.time())}"
    assert auditor.search(word) == []
    log = docker_exec(worker, "tail", "-n", "50", site.contract[worker]["access_log"]).stdout
    entries = [json.loads(line) for line in log.splitlines()]
    [entry] = [e for e in entries if word in e["endpoint"]]
    assert entry["client"] == "lab-auditor" and entry["ids"] == [] and entry["address"] == site.controller_address


def test_an_address_that_is_not_a_client_cannot_reach_the_api_or_port_25(site):
    """From the DNS server (neither an API client nor a gateway) the worker's API and SMTP ports are dropped."""
    worker = site.workers[0]
    port = site.api(worker).rsplit(":", 1)[1]
    script = ("import socket,sys\n"
              "for port in sys.argv[2:]:\n"
              "    try:\n"
              "        socket.create_connection((sys.argv[1], int(port)), timeout=3).close(); print(port, 'open')\n"
              "    except OSError as exc:\n"
              "        print(port, type(exc).__name__)\n")
    out = docker_exec(site.dns[0], "python3", "-c", script, site.ip[worker], port, "25").stdout.split("\n")
    assert out[:2] == [f"{port} TimeoutError", "25 TimeoutError"], out
    # The gateway may use port 25, and is not an API client either.
    out = docker_exec(site.gateways[0], "python3", "-c", script, site.ip[worker], port, "25").stdout.split("\n")
    assert out[:2] == [f"{port} TimeoutError", "25 open"], out
    rules = docker_exec(worker, "nft", "list", "table", "inet", "mailarchive").stdout
    assert "API: not a listed client" in rules and site.controller_address in rules


def test_a_subject_never_crosses_the_wire_in_clear_text(site):
    """tshark on the worker's interface while the controller searches for and reads a message."""
    subject = f"wire secret {int(time.time())}"
    since = int(time.time()) - 2
    raw = f"Subject: {subject}\r\nMessage-ID: <wire-{since}@test>\r\n\r\nnothing to see\r\n".encode()
    send_all(site, [raw])
    found = archived_since(site, since, {hashlib.sha256(raw).hexdigest(): "wire"})
    [holder] = found[hashlib.sha256(raw).hexdigest()]
    port = site.api(holder).rsplit(":", 1)[1]
    capture = "/tmp/api.pcap"
    docker_exec(holder, "sh", "-c", f"rm -f {capture}; (tshark -i eth0 -f 'tcp port {port}' -w {capture} -a duration:20 "
                                    f">/tmp/tshark.log 2>&1 &)")
    wait_until(lambda: "Capturing on" in docker_exec(holder, "cat", "/tmp/tshark.log", check=False).stdout,
               "tshark to start", log=lambda: docker_exec(holder, "cat", "/tmp/tshark.log", check=False).stdout)
    # "Capturing on" can come a moment before the capture filter is in place (seen on a loaded machine: one
    # packet captured), so the search and the read are repeated over the capture's 20 s, each on a new connection.
    for _round in range(5):
        client = site.client(holder)
        [row] = client.search(f"msgid:wire-{since}@test")
        assert row["subject"] == subject
        assert client.raw(row["id"]) == raw
        time.sleep(2)
    wait_until(lambda: docker_exec(holder, "pgrep", "-x", "tshark", check=False).returncode != 0, "tshark to finish",
               timeout=40, log=lambda: docker_exec(holder, "cat", "/tmp/tshark.log", check=False).stdout)
    packets = docker_exec(holder, "cat", capture, text=False).stdout
    assert len(packets) > 2000, "the capture saw no API traffic"
    assert subject.encode() not in packets and b"wire secret" not in packets
    assert site.token.encode() not in packets
