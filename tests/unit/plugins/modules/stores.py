"""Real archive stores for the module tests: a `serve` process each, fed by an SMTP "gateway".

The gateways are aiosmtpd servers that deliver into the store's spool as
postfix's virtual(8) does, so a message really travels SMTP -> spool ->
store before a module sees it.
"""

import os
import secrets
import smtplib
import socket
import subprocess
import time

from aiosmtpd.controller import Controller

from archive_store.access import token_hash

from helpers import Service, accepts_tcp, answers_http, free_tcp_port, store_environment, wait_until
from pki import CA

DEBIAN_PYTHON = "/usr/bin/python3"  # the store runs on Debian's python3 and packages, as on a worker


class SpoolDelivery:
    """Write each message into Maildirs the way postfix's virtual(8) does: the site's own, and a copy site's."""

    def __init__(self, spools):
        self.spools = spools

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's naming)
        name = f"{time.time_ns()}.V1I{secrets.token_hex(4)}M1.gateway"
        head = f"Return-Path: <{envelope.mail_from}>\r\nDelivered-To: {envelope.rcpt_tos[0]}\r\n".encode()
        for spool in self.spools:
            (spool / "tmp" / name).write_bytes((head + envelope.original_content).replace(b"\r\n", b"\n"))
            os.rename(spool / "tmp" / name, spool / "new" / name)
        return "250 OK"


class StoreSite:
    """A store with its API and an SMTP gateway; with ``copy_to``, the gateway copies every message to that site."""

    def __init__(self, base, name, server_id, copy_to=None):
        self.name, self.base, self.server_id = name, base, server_id
        self.spool = base / "spool"
        for sub in ("tmp", "new", "cur"):
            (self.spool / sub).mkdir(parents=True)
        # One client with every scope it needs; the site CA of this store alone.
        self.token = secrets.token_hex(32)
        (base / "api.clients").write_text(f"controller {token_hash(self.token)} "
                                          "read,probes,holds,import,dedupe\n")
        self.ca = CA(base / "pki")
        cert_file, key_file = self.ca.issue(name)
        self.ca_file = str(self.ca.cert_file)
        (base / "license").write_text(
            f"customer=EXAMPLE,expiry={int(time.time()) + 86400 * 365},server_id={server_id},max_release=20271231,"
            "multitenancy=0,hostname=archive.example.com,ip=0.0.0.0\n")
        self.port, health_port = free_tcp_port(), free_tcp_port()
        (base / "store.conf").write_text(
            f"[store]\nserver_id = {server_id}\nhostname = archive.example.com\ndata_dir = {base / 'data'}\n"
            f"spool_dir = {self.spool}\nlicense_file = {base / 'license'}\nkey_file = {base / 'store.key'}\n"
            f"transit_hosts = gw.test\n[api]\nlisten = 127.0.0.1:{self.port}\nclients_file = {base / 'api.clients'}\n"
            f"cert_file = {cert_file}\nkey_file = {key_file}\naccess_log = {base / 'access.log'}\n"
            f"health_listen = 127.0.0.1:{health_port}\n")
        self.cli("keygen")
        self.service = Service([DEBIAN_PYTHON, "-m", "archive_store", "-c", str(base / "store.conf"), "serve"],
                               base / "serve.log", env=store_environment())
        self.smtp_port = free_tcp_port()
        self.gateway = Controller(SpoolDelivery([self.spool] + ([copy_to.spool] if copy_to else [])), hostname="127.0.0.1", port=self.smtp_port)
        self.gateway.start()
        self.service.ready(lambda: answers_http(f"http://127.0.0.1:{health_port}/health")
                           and accepts_tcp("127.0.0.1", self.port), f"{name}'s store API")

    def cli(self, *args):
        return subprocess.run([DEBIAN_PYTHON, "-m", "archive_store", "-c", str(self.base / "store.conf"), *args],
                              env=store_environment(), check=True, capture_output=True)

    def deliver(self, raw):
        """Hand a message to this site's gateway by SMTP, as a journaling mail server would."""
        with smtplib.SMTP("127.0.0.1", self.smtp_port) as client:
            client.sendmail("journal@customer.example", [f"archive@{self.name}.test"], raw)

    def delivered_by_gateway(self, raw, queue_id):
        """Write what virtual(8) writes for ``raw`` that the gateway gw.test received as queue file ``queue_id``
        and handed to this worker (the gateway's Received header is what the duplicate pass compares)."""
        name = f"{time.time_ns()}.V1I{secrets.token_hex(4)}M1.{self.name}"
        head = (f"Return-Path: <journal@customer.example>\nDelivered-To: archive@{self.name}.test\n"
                f"Received: from gw.test (gw.test [127.0.0.1])\n\tby {socket.gethostname()} (Postfix) with ESMTPS id W{queue_id}\n"
                f"\tfor <archive@{self.name}.test>; Sun, 22 Nov 2026 10:00:01 +0000 (UTC)\n"
                f"Received: from mx.customer.example (mx.customer.example [198.18.0.1])\n\tby gw.test (Postfix) with ESMTP"
                f" id {queue_id}\n\tfor <archive@gw.test>; Sun, 22 Nov 2026 10:00:00 +0000 (UTC)\n").encode()
        (self.spool / "tmp" / name).write_bytes(head + raw.replace(b"\r\n", b"\n"))
        os.rename(self.spool / "tmp" / name, self.spool / "new" / name)

    def count(self):
        return int(self.cli("stats").stdout.decode().split('"messages": ')[1].split(",")[0])

    @property
    def url(self):
        return f"https://127.0.0.1:{self.port}"

    def workers(self):
        return [{"name": f"{self.name}-worker", "url": self.url, "server_id": self.server_id, "token": self.token,
                 "ca_file": self.ca_file}]

    def spec(self, **over):
        spec = {"name": self.name, "gateway": "127.0.0.1", "port": self.smtp_port,
                "recipient": f"archive@{self.name}.test",
                "workers": [{"name": f"{self.name}-worker", "url": self.url, "token": self.token, "ca_file": self.ca_file}]}
        spec.update(over)
        return spec

    def stop(self):
        self.gateway.stop()
        self.service.stop()


def wait_for(site, count):
    wait_until(lambda: site.count() == count, f"{site.name} to hold {count} messages", timeout=20, log=site.service.log)
