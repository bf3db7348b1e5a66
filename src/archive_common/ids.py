"""Archive IDs: time-ordered, unique across the cluster, worker-identifying.

Like piler's, an ID is 36 hex characters (18 bytes):

    bytes 0-11   TAI64N timestamp (8 bytes TAI64 seconds, 4 bytes nanoseconds)
    byte  12     the worker's server_id
    bytes 13-17  random

Sorting IDs as strings sorts them by time.  The on-disk path of a message
derives from its ID alone (see archive_store/objects.py).

Shared code (see src/README.md): it imports only the standard library; the
collection's modules use this very file through the link
plugins/module_utils/archive_ids.py.
"""

import os
import re
import threading
import time

# TAI64 label of the Unix epoch, plus the 10 s TAI-UTC offset piler uses.
TAI64_EPOCH = 2**62 + 10
ID_RE = re.compile(r"^[0-9a-f]{36}$")

_lock = threading.Lock()
_last_ns = 0


def _monotonic_ns() -> int:
    """Wall-clock nanoseconds, strictly increasing within this process."""
    global _last_ns
    with _lock:
        now = time.time_ns()
        if now <= _last_ns:
            now = _last_ns + 1
        _last_ns = now
        return now


def new_id(server_id: int) -> str:
    """Return a fresh ID for a message stored by worker ``server_id``."""
    if not 0 <= server_id <= 255:
        raise ValueError(f"server_id must be 0-255, found {server_id}")
    ns = _monotonic_ns()
    seconds, nanos = divmod(ns, 1_000_000_000)
    return (
        (TAI64_EPOCH + seconds).to_bytes(8, "big")
        + nanos.to_bytes(4, "big")
        + bytes([server_id])
        + os.urandom(5)
    ).hex()


def is_valid(archive_id: str) -> bool:
    return bool(ID_RE.match(archive_id or ""))


def server_id_of(archive_id: str) -> int:
    """The server_id of the worker that stored this ID."""
    return int(archive_id[24:26], 16)


def unix_time_of(archive_id: str) -> float:
    seconds = int(archive_id[0:16], 16) - TAI64_EPOCH
    nanos = int(archive_id[16:24], 16)
    return seconds + nanos / 1e9


def lower_bound(unix_seconds: int) -> str:
    """The smallest ID stored at or after ``unix_seconds``: a range key for time windows."""
    return (TAI64_EPOCH + max(int(unix_seconds), 0)).to_bytes(8, "big").hex()
