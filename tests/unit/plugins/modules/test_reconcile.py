"""reconcile against two real archive stores (their `serve` process and API), each fed by an SMTP gateway.

The gateways are aiosmtpd servers that deliver into the store's spool as
postfix's virtual(8) does, so a re-sent message really travels SMTP -> spool
-> store before reconcile sees it arrive.
"""

import hashlib
import os
import secrets
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from conftest import free_tcp_port

STORE_SRC = Path(__file__).resolve().parents[4] / "roles" / "worker" / "files"
DEBIAN_PYTHON = "/usr/bin/python3"  # the store runs on Debian's python3 and packages, as on a worker


class SpoolDelivery:
    """Write each message into a Maildir the way postfix's virtual(8) does."""

    def __init__(self, spool):
        self.spool = spool

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's naming)
        name = f"{time.time_ns()}.V1I{secrets.token_hex(4)}M1.gateway"
        head = f"Return-Path: <{envelope.mail_from}>\r\nDelivered-To: {envelope.rcpt_tos[0]}\r\n".encode()
        (self.spool / "tmp" / name).write_bytes((head + envelope.original_content).replace(b"\r\n", b"\n"))
        os.rename(self.spool / "tmp" / name, self.spool / "new" / name)
        return "250 OK"


class StoreSite:
    def __init__(self, base, name, server_id):
        self.name, self.base, self.server_id = name, base, server_id
        self.spool = base / "spool"
        for sub in ("tmp", "new", "cur"):
            (self.spool / sub).mkdir(parents=True)
        self.token = secrets.token_hex(16)
        (base / "api.token").write_text(self.token + "\n")
        (base / "license").write_text(
            f"customer=EXAMPLE,expiry={int(time.time()) + 86400 * 365},server_id={server_id},max_release=20271231,"
            "multitenancy=0,hostname=archive.example.com,ip=0.0.0.0\n")
        self.port = free_tcp_port()
        (base / "store.conf").write_text(
            f"[store]\nserver_id = {server_id}\nhostname = archive.example.com\ndata_dir = {base / 'data'}\n"
            f"spool_dir = {self.spool}\nlicense_file = {base / 'license'}\nkey_file = {base / 'store.key'}\n"
            f"transit_hosts = gw.test\n[api]\nlisten = 127.0.0.1:{self.port}\ntoken_file = {base / 'api.token'}\n")
        self.cli("keygen")
        self.proc = subprocess.Popen([DEBIAN_PYTHON, "-m", "archive_store", "-c", str(base / "store.conf"), "serve"],
                                     env=dict(os.environ, PYTHONPATH=str(STORE_SRC)),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.smtp_port = free_tcp_port()
        self.gateway = Controller(SpoolDelivery(self.spool), hostname="127.0.0.1", port=self.smtp_port)
        self.gateway.start()
        for _n in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=1)
                break
            except OSError:
                time.sleep(0.1)

    def cli(self, *args):
        return subprocess.run([DEBIAN_PYTHON, "-m", "archive_store", "-c", str(self.base / "store.conf"), *args],
                              env=dict(os.environ, PYTHONPATH=str(STORE_SRC)), check=True, capture_output=True)

    def deliver(self, raw):
        """Hand a message to this site's gateway by SMTP, as a journaling mail server would."""
        import smtplib

        with smtplib.SMTP("127.0.0.1", self.smtp_port) as client:
            client.sendmail("journal@customer.example", [f"archive@{self.name}.test"], raw)

    def count(self):
        return int(self.cli("stats").stdout.decode().split('"messages": ')[1].split(",")[0])

    def spec(self, **over):
        spec = {"name": self.name, "gateway": "127.0.0.1", "port": self.smtp_port,
                "recipient": f"archive@{self.name}.test",
                "workers": [{"name": f"{self.name}-worker", "url": f"http://127.0.0.1:{self.port}", "token": self.token}]}
        spec.update(over)
        return spec

    def stop(self):
        self.gateway.stop()
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def sites(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    pair = [StoreSite(tmp_path / "a", "primary", 0), StoreSite(tmp_path / "b", "dr", 10)]
    yield pair
    for site in pair:
        site.stop()


def message(tag, number):
    return (f"From: user{number}@customer.example\r\nMessage-ID: <{tag}-{number}@customer.example>\r\n"
            f"Subject: reconcile {tag} {number}\r\n\r\nbody {number} {secrets.token_hex(8)}\r\n").encode()


def probe(number):
    return (f"From: delivery-check@mailarchive.invalid\r\nMessage-ID: <probe-abcdef12-{number}@mailarchive.invalid>\r\n"
            f"X-Mailarchive-Probe: abcdef12\r\n\r\nprobe\r\n").encode()


def wait_for(site, count):
    for _n in range(200):
        if site.count() == count:
            return
        time.sleep(0.1)
    raise AssertionError(f"{site.name}: expected {count} messages, found {site.count()}")


def test_reports_exactly_what_each_side_lacks_then_resends_it(sites, module):
    primary, dr = sites
    both = [message("both", n) for n in range(6)]
    only_primary = [message("p", n) for n in range(2)]
    only_dr = [message("d", 0)]
    for raw in both + only_primary + [probe(0)]:
        primary.deliver(raw)
    for raw in both + only_dr:
        dr.deliver(raw)
    wait_for(primary, 9)
    wait_for(dr, 7)
    args = {"sites": [primary.spec(), dr.spec()], "since": -600, "until": int(time.time()) + 5}
    result = module("reconcile", args)
    assert not result.get("failed"), result.get("msg")
    assert result["changed"] is False and result["in_sync"] is False
    assert sorted(m["sha256"] for m in result["missing"]["dr"]) == sorted(hashlib.sha256(r).hexdigest() for r in only_primary)
    assert [m["sha256"] for m in result["missing"]["primary"]] == [hashlib.sha256(only_dr[0]).hexdigest()]
    assert result["missing"]["primary"][0]["message_id"] == "<d-0@customer.example>"
    assert result["missing"]["primary"][0]["worker"] == "dr-worker"
    assert result["counts"] == {"primary": 8, "dr": 7}  # the probe is left out

    repaired = module("reconcile", dict(args, resend=True, until=int(time.time()) + 5))
    assert not repaired.get("failed"), repaired.get("msg")
    assert repaired["changed"] is True
    assert sorted(repaired["repaired"]["dr"]) == sorted(hashlib.sha256(r).hexdigest() for r in only_primary)
    assert repaired["repaired"]["primary"] == [hashlib.sha256(only_dr[0]).hexdigest()]
    again = module("reconcile", dict(args, until=int(time.time()) + 5))
    assert again["in_sync"] is True and again["counts"] == {"primary": 9, "dr": 9}


def test_check_mode_reports_but_sends_nothing(sites, module):
    primary, dr = sites
    primary.deliver(message("check", 0))
    wait_for(primary, 1)
    result = module("reconcile", {"sites": [primary.spec(), dr.spec()], "since": -600,
                                  "until": int(time.time()) + 5, "resend": True}, check=True)
    assert len(result["missing"]["dr"]) == 1 and result["resent"] == {"primary": [], "dr": []}
    time.sleep(1)
    assert dr.count() == 0


def test_a_window_before_the_mail_arrived_finds_nothing(sites, module):
    primary, dr = sites
    primary.deliver(message("late", 0))
    wait_for(primary, 1)
    now = int(time.time())
    result = module("reconcile", {"sites": [primary.spec(), dr.spec()], "since": now - 7200, "until": now - 3600,
                                  "slack": 60})
    assert result["in_sync"] is True and result["counts"] == {"primary": 0, "dr": 0}


def test_an_unreachable_worker_fails_with_one_line_naming_it(sites, module):
    primary, dr = sites
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    broken = dr.spec(workers=[{"name": "dr-worker9", "url": f"http://127.0.0.1:{dead}", "token": dr.token}])
    result = module("reconcile", {"sites": [primary.spec(), broken]})
    assert result["failed"] is True
    assert result["msg"].startswith("reconcile: dr-worker9: GET http://127.0.0.1:")
    assert "\n" not in result["msg"]
