"""Retention, legal holds and the audit log.

Every message carries a retain-until date.  ``purge`` removes messages
whose date has passed, except those under legal hold: a hold names an
address, and any message with that address in From, To, Cc or its
envelope is kept.  Each removal is appended to the audit log (JSON lines,
fsynced) before the object is deleted.
"""

import json
import os
import time
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import List

from archive_common import ids, probes
from archive_store.errors import StoreError
from archive_store.store import Store


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)  # a hold set before the first message
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.rename(tmp, path)


def audit(path: Path, action: str, **detail) -> None:
    entry = {"ts": int(time.time()), "action": action, **detail}
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(entry, sort_keys=True) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


class Holds:
    def __init__(self, path: Path, audit_log: Path) -> None:
        self.path = Path(path)
        self.audit_log = audit_log

    def load(self) -> dict:
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except ValueError:
            raise StoreError(f"holds file {self.path}: expected JSON, found something else") from None

    def add(self, address: str, reason: str, **detail) -> None:
        address = address.strip().lower()
        if "@" not in address:
            raise StoreError(f"hold: expected an email address, found {address!r}")
        holds = self.load()
        holds[address] = {"reason": reason, "created": int(time.time())}
        _atomic_write(self.path, json.dumps(holds, indent=1, sort_keys=True))
        audit(self.audit_log, "hold-add", address=address, reason=reason, **detail)

    def remove(self, address: str, reason: str, **detail) -> None:
        address = address.strip().lower()
        holds = self.load()
        if address not in holds:
            raise StoreError(f"hold: expected an existing hold, found none for {address}")
        del holds[address]
        _atomic_write(self.path, json.dumps(holds, indent=1, sort_keys=True))
        audit(self.audit_log, "hold-remove", address=address, reason=reason, **detail)

    def held(self, row: dict) -> str:
        """The held address this message involves, or ''."""
        holds = self.load()
        text = " ".join([row["hdr_from"], row["hdr_to"], row["hdr_cc"], row["env_from"], " ".join(row["env_to"])]).lower()
        for address in holds:
            if address in text:
                return address
        return ""


def _remove(store: Store, row: dict, **detail) -> None:
    """Audit the removal first (reindex skips audited IDs), then drop the row and delete the object."""
    audit(store.config.audit_log, "purge", id=row["id"], message_id=row["message_id"], sha256=row["sha256"], **detail)
    store.remove(row["id"])


def remove_duplicate(store: Store, archive_id: str, sha256: str, kept: dict, **detail) -> dict:
    """Remove a copy that the site-wide duplicate pass found to be the gateway's second delivery of a journaled
    message another worker keeps (``kept``: its ``worker`` and ``id``; that copy has this one's arrivals by now).
    A legal hold does not keep it: the kept copy, with the same bytes, is under the same hold."""
    row = store.index.get(archive_id)
    if row is None:
        raise StoreError(f"duplicate removal: expected a message with id {archive_id}, found none")
    if row["sha256"] != sha256:
        raise StoreError(f"duplicate removal: id {archive_id} has sha256 {row['sha256']}, not {sha256}; not removed")
    if not ids.is_valid(str(kept.get("id", ""))) or kept["id"] == archive_id or not kept.get("worker"):
        raise StoreError(f"duplicate removal: expected the kept copy's worker and another archive ID, found {kept!r}")
    held = Holds(store.config.holds_file, store.config.audit_log).held(row)
    if held:
        detail["held_by"] = held
        detail["hold"] = f"removed under the legal hold on {held}: the kept copy {kept['id']} carries it"
    _remove(store, row, reason=f"duplicate delivery, kept as {kept['id']} on {kept['worker']}", kept_id=kept["id"],
            kept_worker=kept["worker"], **detail)
    return {"id": archive_id, "message_id": row["message_id"], "sha256": sha256, "held_by": held}


def add_arrivals(store: Store, archive_id: str, sha256: str, arrivals: list, **detail) -> int:
    """Record on a message the arrivals and envelope recipients of a duplicate copy about to be removed from
    another worker (audited)."""
    row = store.index.get(archive_id)
    if row is None or row["sha256"] != sha256:
        raise StoreError(f"arrivals: expected a message with id {archive_id} and sha256 {sha256}, found "
                         + (f"sha256 {row['sha256']}" if row else "none"))
    try:
        rows = [(str(a["spool_name"]), int(a["arrived"]), "\n".join(str(line) for line in a["transit"])) for a in arrivals]
        recipients = [str(address) for a in arrivals for address in a.get("recipients", [])]
    except (KeyError, TypeError, ValueError, AttributeError):
        raise StoreError("arrivals: expected a list of {spool_name, arrived, transit: [lines], recipients: [addresses]}") from None
    added = store.index.add_arrivals(archive_id, rows, recipients)
    audit(store.config.audit_log, "arrival-add", id=archive_id, sha256=sha256, spool_names=[r[0] for r in rows],
          added=added, **detail)
    return added


def purge(store: Store, dry_run: bool, now: float = None) -> List[dict]:
    """Remove expired messages not under hold; return what was (or would be) removed."""
    now = int(time.time() if now is None else now)
    holds = Holds(store.config.holds_file, store.config.audit_log)
    removed = []
    for row in store.index.expired(now):
        held = holds.held(row)
        entry = {"id": row["id"], "message_id": row["message_id"], "sha256": row["sha256"],
                 "retain_until": row["retain_until"], "held_by": held}
        if held:
            continue
        removed.append(entry)
        if dry_run:
            continue
        _remove(store, row, retain_until=row["retain_until"])
    return removed


def purge_probes(store: Store, run: str, now: float = None) -> List[dict]:
    """Remove the delivery-check probes of one run, each with an audit entry.

    Only messages that are unmistakably that run's probes go: the Message-ID
    ``<probe-RUN-N@mailarchive.invalid>``, the envelope sender
    ``delivery-check@mailarchive.invalid``, the header ``X-Mailarchive-Probe:
    RUN``, archived less than a day ago and not under a legal hold.  Anything
    else found by the run's token is left alone.
    """
    if not probes.RUN_RE.match(run):
        raise StoreError(f"probe purge: expected a run token of 8 to 64 hex digits, found {run!r}")
    now = int(time.time() if now is None else now)
    holds = Holds(store.config.holds_file, store.config.audit_log)
    removed = []
    for row in store.index.search(probes.search_word(run), limit=10_000):
        if not (probes.is_probe_of(row["message_id"], run) and row["env_from"] == probes.SENDER
                and now - row["arrived"] < probes.MAX_AGE_S and not holds.held(row)):
            continue
        headers = BytesHeaderParser().parsebytes(store.get_raw(row["id"]))
        if str(headers.get(probes.HEADER, "")).strip() != run:
            continue
        _remove(store, row, reason=f"delivery-check probe run {run}")
        removed.append({"id": row["id"], "message_id": row["message_id"], "sha256": row["sha256"]})
    return removed
