"""store.conf: an INI file, by default /etc/archive-store/store.conf.

    [store]
    server_id = 0
    hostname = archive.example.com
    data_dir = /var/lib/archive-store
    spool_dir = /var/spool/archive-store/Maildir
    license_file = /etc/archive-store/license
    key_file = /etc/archive-store/store.key
    retention_days = 2557
    transit_hosts = archive-gw.example.com worker0.example.com
    batch_size = 200
    index_body_bytes = 262144
    min_free_mb = 512
    max_message_bytes = 52000000            (the largest message POST /api/v1/import takes)
    own_addresses = archive@archive.example.com archive@archive-gw.example.com
                                            (the archive's own addresses: never recorded as recipients)
    blob_min_bytes = 4096                   (a base64 attachment body this large or larger is stored once
                                             per worker, see blobs.py; 0 keeps every message whole)
    index_shard_messages = 5000000          (the full-text index is closed into a read-only shard every this
                                             many messages, see index.py; 0 keeps one)

    [extract]                               (attachment text, see textract.py)
    workers = 2                             (extraction processes)
    seconds = 10                            (per attachment; past it the attachment's text is left out)
    memory_mb = 512                         (address space of each extraction process)
    text_chars = 1048576                    (attachment text indexed per message, at most)

    [api]
    listen = 198.18.10.20:8025              (HTTPS only)
    cert_file = /etc/archive-store/api.crt  (this worker's certificate, the CA's chain after it)
    key_file = /etc/archive-store/api.key
    clients_file = /etc/archive-store/api.clients   (see access.py)
    access_log = /var/log/archive-store/access.log
    health_listen = 127.0.0.1:8026          (plain HTTP, GET /health only, loopback only)

    [policy]
    listen = 127.0.0.1:10040

    [receiver]                              (the store receives mail itself, see receiver.py; empty: not)
    lmtp_listen = 127.0.0.1:10024           (LMTP from this worker's postfix, loopback)
    smtp_listen = 0.0.0.0:25                (SMTP from the gateways, STARTTLS with the API's certificate)
    smtp_clients = 198.18.20.10 198.18.20.11    (the gateways: no other client may send)
    archive_address = archive@archive.example.com   (the only recipient, with its +extensions)
"""

import configparser
import ipaddress
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

from archive_store.errors import StoreError

DEFAULT_PATH = "/etc/archive-store/store.conf"


@dataclass
class Config:
    server_id: int
    hostname: str
    data_dir: Path
    spool_dir: Path
    license_file: Path
    key_file: Path
    retention_days: int = 2557
    transit_hosts: list = field(default_factory=list)
    batch_size: int = 200
    index_body_bytes: int = 262144
    min_free_mb: int = 512
    max_message_bytes: int = 52000000
    own_addresses: list = field(default_factory=list)
    blob_min_bytes: int = 4096
    index_shard_messages: int = 5000000
    extract_workers: int = 2
    extract_seconds: int = 10
    extract_memory_mb: int = 512
    extract_text_chars: int = 1048576
    api_listen: str = "127.0.0.1:8025"
    api_cert_file: Path = Path("/etc/archive-store/api.crt")
    api_key_file: Path = Path("/etc/archive-store/api.key")
    api_clients_file: Path = Path("/etc/archive-store/api.clients")
    api_access_log: Path = Path("/var/log/archive-store/access.log")
    health_listen: str = "127.0.0.1:8026"
    policy_listen: str = ""
    lmtp_listen: str = ""
    smtp_listen: str = ""
    smtp_clients: list = field(default_factory=list)
    archive_address: str = "archive@archive.example.com"

    @property
    def db_path(self) -> Path:
        return self.data_dir / "index.sqlite"

    @property
    def shards_dir(self) -> Path:
        """The closed shards of the full-text index (index.py)."""
        return self.data_dir / "shards"

    @property
    def objects_dir(self) -> Path:
        return self.data_dir / "objects"

    @property
    def audit_log(self) -> Path:
        return self.data_dir / "audit.log"

    @property
    def holds_file(self) -> Path:
        return self.data_dir / "holds.json"

    @property
    def maintenance_file(self) -> Path:
        return self.data_dir / "maintenance"

    @property
    def verified_file(self) -> Path:
        """Written when ``verify --all`` finds every message intact; its time is the metrics' last verify."""
        return self.data_dir / "verify.done"

    @property
    def backed_up_file(self) -> Path:
        """Written by the backup script after a backup; its time is the metrics' last backup."""
        return self.data_dir / "backup.done"

    def api_address(self) -> tuple:
        return _address(self.api_listen, "api")

    def health_address(self) -> tuple:
        return _address(self.health_listen, "api", "health_listen")

    def policy_address(self) -> tuple:
        return _address(self.policy_listen, "policy")

    def lmtp_address(self) -> tuple:
        return _address(self.lmtp_listen, "receiver", "lmtp_listen")

    def smtp_address(self) -> tuple:
        return _address(self.smtp_listen, "receiver", "smtp_listen")


def _address(listen: str, section: str, key: str = "listen") -> tuple:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise StoreError(f"store.conf [{section}] {key}: expected host:port, found {listen!r}")
    return host.strip("[]"), int(port)


def _loopback(listen: str, path) -> str:
    """health_listen serves plain HTTP, so only on a loopback address (or empty: no health listener)."""
    if not listen:
        return listen
    try:
        loopback = ipaddress.ip_address(_address(listen, "api", "health_listen")[0]).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise StoreError(f"{path}: [api] health_listen: expected a loopback address (plain HTTP), found {listen!r}")
    return listen


def _int(section, key, default=None, low=None, high=None, path=""):
    raw = section.get(key)
    if raw is None:
        if default is None:
            raise StoreError(f"{path}: [{section.name}] {key}: expected a value, found nothing")
        return default
    try:
        value = int(raw)
    except ValueError:
        raise StoreError(f"{path}: [{section.name}] {key}: expected an integer, found {raw!r}") from None
    if (low is not None and value < low) or (high is not None and value > high):
        raise StoreError(f"{path}: [{section.name}] {key}: expected {low}-{high}, found {value}")
    return value


def load(path=None) -> Config:
    """Read store.conf (``path``, $ARCHIVE_STORE_CONF or the default)."""
    path = str(path or os.environ.get("ARCHIVE_STORE_CONF") or DEFAULT_PATH)
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with open(path, encoding="utf-8") as handle:
            parser.read_file(handle)
    except FileNotFoundError:
        raise StoreError(f"config file {path}: expected it to exist, found nothing") from None
    except configparser.Error as exc:
        raise StoreError(f"config file {path}: not valid INI ({str(exc).splitlines()[0]})") from None
    if not parser.has_section("store"):
        raise StoreError(f"config file {path}: expected a [store] section, found none")
    store = parser["store"]
    api = parser["api"] if parser.has_section("api") else parser["DEFAULT"]
    policy = parser["policy"] if parser.has_section("policy") else parser["DEFAULT"]
    receiver = parser["receiver"] if parser.has_section("receiver") else parser["DEFAULT"]
    extract = parser["extract"] if parser.has_section("extract") else parser["DEFAULT"]
    hostname = store.get("hostname", "").strip().lower()
    if not hostname:
        raise StoreError(f"{path}: [store] hostname: expected the licensed archive hostname, found nothing")
    transit = store.get("transit_hosts", "").replace(",", " ").split()
    transit.append(socket.gethostname())  # this host's own postfix hop; the name alone, no DNS lookup
    return Config(
        server_id=_int(store, "server_id", low=0, high=255, path=path),
        hostname=hostname,
        data_dir=Path(store.get("data_dir", "/var/lib/archive-store")),
        spool_dir=Path(store.get("spool_dir", "/var/spool/archive-store/Maildir")),
        license_file=Path(store.get("license_file", "/etc/archive-store/license")),
        key_file=Path(store.get("key_file", "/etc/archive-store/store.key")),
        retention_days=_int(store, "retention_days", 2557, low=1, high=36500, path=path),
        transit_hosts=sorted({h.lower() for h in transit}),
        batch_size=_int(store, "batch_size", 200, low=1, high=10000, path=path),
        index_body_bytes=_int(store, "index_body_bytes", 262144, low=0, high=1 << 30, path=path),
        min_free_mb=_int(store, "min_free_mb", 512, low=0, high=1 << 30, path=path),
        max_message_bytes=_int(store, "max_message_bytes", 52000000, low=1024, high=1 << 31, path=path),
        own_addresses=sorted({a.lower() for a in store.get("own_addresses", f"archive@{hostname}").replace(",", " ").split()}),
        blob_min_bytes=_int(store, "blob_min_bytes", 4096, low=0, high=1 << 31, path=path),
        index_shard_messages=_int(store, "index_shard_messages", 5000000, low=0, high=1 << 40, path=path),
        extract_workers=_int(extract, "workers", 2, low=1, high=64, path=path),
        extract_seconds=_int(extract, "seconds", 10, low=1, high=3600, path=path),
        extract_memory_mb=_int(extract, "memory_mb", 512, low=64, high=1 << 20, path=path),
        extract_text_chars=_int(extract, "text_chars", 1048576, low=0, high=1 << 30, path=path),
        api_listen=api.get("listen", "127.0.0.1:8025"),
        policy_listen=policy.get("listen", ""),
        lmtp_listen=receiver.get("lmtp_listen", ""),
        smtp_listen=receiver.get("smtp_listen", ""),
        smtp_clients=receiver.get("smtp_clients", "").replace(",", " ").split(),
        archive_address=receiver.get("archive_address", f"archive@{hostname}").strip().lower(),
        api_cert_file=Path(api.get("cert_file", "/etc/archive-store/api.crt")),
        api_key_file=Path(api.get("key_file", "/etc/archive-store/api.key")),
        api_clients_file=Path(api.get("clients_file", "/etc/archive-store/api.clients")),
        api_access_log=Path(api.get("access_log", "/var/log/archive-store/access.log")),
        health_listen=_loopback(api.get("health_listen", "127.0.0.1:8026"), path),
    )
