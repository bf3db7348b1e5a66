"""Who may use the API, and for what: one credential per client, with scopes.

The clients file (``[api] clients_file``, written by the worker role) has a
line per client; only a hash of each token is on the worker::

    # name        token hash                                                        scopes
    controller    sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08  read,probes,holds
    web1          sha256:60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752  read

Scopes:
    read    stats, search, list and get (metadata and mail)
    probes  remove one delivery_check run's probes
    holds   add and remove legal holds
    import  store imported mail
    metrics the Prometheus metrics (metrics.py); no mail, no metadata
    dedupe  the site-wide duplicate pass (archive_common/dedupe.py): list, a
            message's arrivals, record arrivals on a message and remove a
            copy that another worker keeps; never the mail itself

A token that matches no line gets 401; a client without the scope an
endpoint needs gets 403 naming the scope.  Every request that returns mail
or metadata is appended to the access log as one JSON line (time, client,
address, endpoint, and the IDs returned or their count); logrotate may
rename the file at any time, since each entry opens it anew.
"""

import hashlib
import hmac
import json
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from archive_store.errors import StoreError

SCOPES = ("read", "probes", "holds", "import", "metrics", "dedupe")
MIN_TOKEN_CHARS = 32
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_HASH = re.compile(r"^sha256:[0-9a-f]{64}$")


@dataclass(frozen=True)
class Client:
    name: str
    digest: bytes
    scopes: frozenset


def token_hash(token: str) -> str:
    """The form a token takes in the clients file."""
    return "sha256:" + hashlib.sha256(token.encode("utf-8")).hexdigest()


def load_clients(path: Path) -> list:
    """Parse the clients file; any fault is one line naming the file, the line and what was expected."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise StoreError(f"API clients file {path}: expected it to exist, found nothing") from None
    clients, names = [], set()
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        where = f"API clients file {path} line {number}"
        if len(fields) != 3:
            raise StoreError(f"{where}: expected 'name sha256:<hex> scope,...', found {len(fields)} fields")
        name, digest, scopes = fields
        if not _NAME.match(name):
            raise StoreError(f"{where}: expected a client name of letters, digits, '.', '_' or '-', found {name!r}")
        if name in names:
            raise StoreError(f"{where}: client {name} is listed twice")
        if not _HASH.match(digest):
            raise StoreError(f"{where}: expected the token's hash as sha256:<64 hex digits>, found {digest[:20]!r}")
        wanted = frozenset(scopes.split(","))
        unknown = sorted(wanted - set(SCOPES))
        if unknown:
            raise StoreError(f"{where}: unknown scope {unknown[0]!r}; scopes are {', '.join(SCOPES)}")
        names.add(name)
        clients.append(Client(name, bytes.fromhex(digest[len("sha256:"):]), wanted))
    if not clients:
        raise StoreError(f"API clients file {path}: expected at least one client, found none")
    return clients


def authenticate(clients, authorization: str) -> Optional[Client]:
    """The client whose token the Authorization header carries, or None.

    The header's token is hashed once and compared with every client's hash
    in constant time, so neither a name nor a prefix leaks through timing.
    """
    scheme, _space, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    digest = hashlib.sha256(token.strip().encode("utf-8", "replace")).digest()
    found = None
    for client in clients:
        if hmac.compare_digest(digest, client.digest):
            found = client
    return found


class AccessLog:
    """Append-only JSON lines, one per request that returned mail or metadata."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.lock = threading.Lock()

    def write(self, client: Client, address: str, endpoint: str, ids=None, count=None) -> None:
        entry = {"ts": round(time.time(), 3), "action": "api-read", "client": client.name, "address": address,
                 "endpoint": endpoint}
        if ids is not None:
            entry["ids"] = list(ids)
        if count is not None:
            entry["count"] = count
        line = json.dumps(entry, sort_keys=True) + "\n"
        with self.lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line.encode("utf-8"))
                os.fsync(fd)
            finally:
                os.close(fd)
