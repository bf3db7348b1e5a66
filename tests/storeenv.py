"""A complete store in a temporary directory, for the store's tests and the web interface's."""

import os
import secrets
import ssl
import subprocess
import sys
import time
from pathlib import Path

from archive_store import config as configuration, crypto
from archive_store.access import token_hash
from helpers import CORPUS as SHARED_CORPUS, Service, accepts_tcp, answers_http, free_tcp_port, store_environment
from pki import CA

CORPUS = SHARED_CORPUS / "mime-samples"

HOSTNAME = "archive.example.com"
TRANSIT = "archive-gw.example.com worker0.example.com"


def license_line(server_id=0, expiry=None, **over):
    fields = {
        "customer": "EXAMPLE",
        "expiry": str(expiry or int(time.time()) + 365 * 86400),
        "server_id": str(server_id),
        "max_release": "20271231",
        "multitenancy": "0",
        "hostname": HOSTNAME,
        "ip": "0.0.0.0",
    }
    fields.update({k: str(v) for k, v in over.items()})
    return ",".join(f"{k}={v}" for k, v in fields.items())


class StoreEnv:
    def __init__(self, base: Path, server_id: int = 0) -> None:
        self.base = base
        self.conf_path = base / "store.conf"
        self.license_path = base / "license"
        self.spool = base / "spool" / "Maildir"
        # The API's clients: "admin" with every scope but import and metrics, "importer" with import only, "reader" with read only,
        # "ui" with what the web interface needs, "monitor" with metrics only, "dedupe" with dedupe only.
        self.token = secrets.token_hex(32)
        self.read_token = secrets.token_hex(32)
        self.ui_token = secrets.token_hex(32)
        self.metrics_token = secrets.token_hex(32)
        self.import_token = secrets.token_hex(32)
        self.dedupe_token = secrets.token_hex(32)
        self.port = 0
        self.health_port = 0
        self.policy_port = 0
        self.receiver = {}
        self.server_id = server_id
        self.services = []
        for sub in ("tmp", "new", "cur"):
            (self.spool / sub).mkdir(parents=True, exist_ok=True)
        self.clients_path = base / "api.clients"
        self.clients_path.write_text(f"admin {token_hash(self.token)} read,probes,holds\n"
                                     f"reader {token_hash(self.read_token)} read\n"
                                     f"ui {token_hash(self.ui_token)} read,holds\n"
                                     f"monitor {token_hash(self.metrics_token)} metrics\n"
                                     f"importer {token_hash(self.import_token)} import\n"
                                     f"dedupe {token_hash(self.dedupe_token)} dedupe\n")
        self.ca = CA(base / "pki")
        self.cert_file, self.key_file = self.ca.issue("worker0")
        self.access_log = base / "access.log"
        self.license_path.write_text(license_line(server_id) + "\n")
        self.write_conf()
        crypto.generate(base / "store.key")

    def write_conf(self, api=None, **extra) -> None:
        """store.conf with ``extra`` in [store] and ``api`` (a dict) in [api]."""
        store = {
            "server_id": self.server_id,
            "hostname": HOSTNAME,
            "data_dir": self.base / "data",
            "spool_dir": self.spool,
            "license_file": self.license_path,
            "key_file": self.base / "store.key",
            "transit_hosts": TRANSIT,
            "batch_size": 50,
        }
        store.update(extra)
        lines = ["[store]"] + [f"{k} = {v}" for k, v in store.items()]
        api = dict({"listen": f"127.0.0.1:{self.port}", "clients_file": self.clients_path, "cert_file": self.cert_file,
                    "key_file": self.key_file, "access_log": self.access_log,
                    "health_listen": f"127.0.0.1:{self.health_port}"}, **(api or {}))
        lines += ["[api]"] + [f"{k} = {v}" for k, v in api.items()]
        if self.policy_port:
            lines += ["[policy]", f"listen = 127.0.0.1:{self.policy_port}"]
        if self.receiver:
            lines += ["[receiver]"] + [f"{k} = {v}" for k, v in self.receiver.items()]
        self.conf_path.write_text("\n".join(lines) + "\n")

    def config(self):
        return configuration.load(self.conf_path)

    def store(self, readonly=False):
        from archive_store.store import Store

        return Store(self.config(), readonly=readonly)

    def put_back_snapshot(self, snapshot: Path) -> None:
        """Restore an index snapshot (``cli snapshot --out``) as the backup role does: the index's files go, the
        snapshot takes their place.  The store must be closed."""
        db = self.config().db_path
        for suffix in ("", "-wal", "-shm"):
            Path(str(db) + suffix).unlink(missing_ok=True)
        os.replace(snapshot, db)

    def cli(self, *args, check=True, **kw):
        proc = subprocess.run(
            [sys.executable, "-m", "archive_store", "-c", str(self.conf_path), *args],
            env=store_environment(), capture_output=True, check=False, **kw,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"archive_store {' '.join(args)} exited {proc.returncode}: {proc.stderr.decode(errors='replace')}")
        return proc

    def serve(self, policy: bool = False, receiver: dict = None, **conf) -> Service:
        """Start ``serve`` on free ports and return once its API (and policy service) answers.

        ``receiver``: the [receiver] section (receiver.py); "lmtp_listen" or "smtp_listen" set to "" get a free
        loopback port, which ``lmtp_port`` and ``smtp_port`` name.
        """
        self.port = free_tcp_port()
        self.health_port = free_tcp_port()
        self.policy_port = free_tcp_port() if policy else 0
        self.receiver = dict(receiver or {})
        for kind in ("lmtp", "smtp"):
            if self.receiver.get(f"{kind}_listen") == "":
                self.receiver[f"{kind}_listen"] = f"127.0.0.1:{free_tcp_port()}"
        self.write_conf(**conf)
        service = Service([sys.executable, "-m", "archive_store", "-c", str(self.conf_path), "serve"],
                          self.base / "serve.log", env=store_environment())
        self.services.append(service)

        def up():
            return answers_http(f"http://127.0.0.1:{self.health_port}/health") and accepts_tcp("127.0.0.1", self.port) and (
                not policy or accepts_tcp("127.0.0.1", self.policy_port)) and all(
                accepts_tcp("127.0.0.1", self.receiver_port(kind)) for kind in ("lmtp", "smtp") if f"{kind}_listen" in self.receiver)
        return service.ready(up, "the store's API" + (" and policy service" if policy else ""))

    def receiver_port(self, kind: str) -> int:
        return int(self.receiver[f"{kind}_listen"].rsplit(":", 1)[1])

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def tls(self):
        """A client context that trusts this store's CA (and nothing else)."""
        return ssl.create_default_context(cafile=str(self.ca.cert_file))

    def stop(self) -> None:
        for service in self.services:
            service.stop()

    def deliver(self, raw: bytes, name: str = None, env_from="journal@example.org", gateway_id="4Abc2",
                delivered_to="archive@archive.example.com") -> str:
        """Write what postfix's virtual(8) would write for ``raw`` sent in DATA, which the gateway
        received as queue file ``gateway_id``."""
        name = name or f"{time.time_ns()}.V1I{secrets.token_hex(4)}M1.worker0"
        transit = (
            f"Return-Path: <{env_from}>\r\n"
            f"Delivered-To: {delivered_to}\r\n"
            "Received: from archive-gw.example.com (archive-gw.example.com [198.18.10.10])\r\n"
            "\tby worker0.example.com (Postfix) with ESMTPS id 4Xyz1\r\n"
            "\tfor <archive@archive.example.com>; Sun, 22 Nov 2026 10:00:01 +0000 (UTC)\r\n"
            "Received: from mx.customer.example (mx.customer.example [198.18.0.1])\r\n"
            f"\tby archive-gw.example.com (Postfix) with ESMTP id {gateway_id}\r\n"
            "\tfor <archive@archive-gw.example.com>; Sun, 22 Nov 2026 10:00:00 +0000 (UTC)\r\n"
        ).encode()
        assert raw.endswith(b"\r\n") and b"\n" not in raw.replace(b"\r\n", b""), "wire form needs CRLF lines"
        data = (transit + raw).replace(b"\r\n", b"\n")
        tmp = self.spool / "tmp" / name
        tmp.write_bytes(data)
        os.rename(tmp, self.spool / "new" / name)
        return name


def wire_form(raw: bytes) -> bytes:
    """What an SMTP client puts on the wire for a file: every line ends in CRLF."""
    lines = raw.replace(b"\r\n", b"\n").split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return b"".join(line + b"\r\n" for line in lines)


def corpus_files():
    return sorted(CORPUS.glob("*.eml"))
