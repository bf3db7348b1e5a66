"""Named steps of the ingest where a test can kill the store with SIGKILL.

The crash-safety argument (see store.py) says a ``kill -9`` at any step
loses and duplicates nothing.  tests/store/test_crash.py proves it at each
step below, deterministically: it runs the store with

    ARCHIVE_STORE_CRASH_AT=<step>:<n>

and the process kills itself the n-th time it reaches that step.  Without
the variable (as in production) ``reach`` only counts nothing and returns.

Steps, in ingest order:
    intent     the batch's IDs (and its new blobs) are written to ``intent``, no object yet
    blob       one more attachment blob is durable (n counts blobs)
    object     one more sealed object is durable (n counts objects)
    committed  the batch's index transaction is committed, ``intent`` still there
    ingested   ``intent`` is gone, the spool files are not removed yet

and in a removal (purge, retention, the duplicate pass, the blob conversion):
    removed    the message's rows are gone and its object deleted, its last blobs not yet
    converted  a message's blobs are durable and referred to, its object not yet rewritten

and when the full-text index closes a shard (index.py):
    shard      the shard's file is durable under its name, its row not yet committed
"""

import os
import signal
import threading

STEPS = ("intent", "blob", "object", "committed", "ingested", "removed", "converted", "shard")


def _parse(value: str):
    step, _sep, count = value.partition(":")
    if step not in STEPS or not count.isdigit() or int(count) < 1:
        raise SystemExit(f"ARCHIVE_STORE_CRASH_AT: expected <step>:<n> with step one of {', '.join(STEPS)}, found {value!r}")
    return step, int(count)


_TARGET = _parse(os.environ["ARCHIVE_STORE_CRASH_AT"]) if os.environ.get("ARCHIVE_STORE_CRASH_AT") else None
_seen = {}
_lock = threading.Lock()


def reach(step: str) -> None:
    """Mark that the ingest reached ``step``; kill -9 this process if a test asked for it here."""
    if _TARGET is None or _TARGET[0] != step:
        return
    with _lock:
        _seen[step] = _seen.get(step, 0) + 1
        if _seen[step] == _TARGET[1]:
            os.kill(os.getpid(), signal.SIGKILL)
