"""The audit trail: who did what, when, from where; each entry chained to the one before by its hash.

Entry n stores ``hash = sha256(prev_hash | seq | time | username | address | action | detail)``
where ``prev_hash`` is entry n-1's hash.  Removing or altering an entry breaks the chain at that
point and ``verify`` names the row.  Every entry is also logged (to the journal under systemd),
so a copy outside the database survives even the removal of the newest entries.
"""

import hashlib
import json
import logging
import sqlite3
import time
from typing import Iterator, List, Optional

log = logging.getLogger("archive_web.audit")
GENESIS = "0" * 64


def _digest(prev_hash, seq, when, username, address, action, detail) -> str:
    text = "\x1f".join((prev_hash, str(seq), repr(float(when)), username, address, action, detail))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def record(conn: sqlite3.Connection, username: str, address: str, action: str, detail: Optional[dict] = None) -> int:
    """Append one entry (``address``: where the person was; ``detail``: what); returns its sequence number."""
    body = json.dumps(detail or {}, sort_keys=True, separators=(",", ":"), default=str)
    when = time.time()
    conn.execute("BEGIN IMMEDIATE")  # one writer at a time: each entry must see the one before it
    try:
        last = conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        seq, prev_hash = (last["seq"] + 1, last["hash"]) if last else (1, GENESIS)
        digest = _digest(prev_hash, seq, when, username, address, action, body)
        conn.execute("INSERT INTO audit (seq, time, username, address, action, detail, prev_hash, hash)"
                     " VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (seq, when, username, address, action, body, prev_hash, digest))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    log.info("audit %d %s %s %s %s %s", seq, username or "-", address or "-", action, body, digest)
    return seq


def verify(conn: sqlite3.Connection) -> Optional[str]:
    """None when the chain is whole; otherwise one line naming the first broken row."""
    expected_seq, prev_hash = 1, GENESIS
    for row in conn.execute("SELECT * FROM audit ORDER BY seq"):
        if row["seq"] != expected_seq:
            return (f"audit trail broken: row {expected_seq} is missing (found row {row['seq']} next)"
                    if row["seq"] > expected_seq else f"audit trail broken: row {row['seq']} appears twice")
        if row["prev_hash"] != prev_hash:
            return f"audit trail broken at row {row['seq']}: it names {row['prev_hash'][:12]}… as the hash before it, the row before has {prev_hash[:12]}…"
        digest = _digest(row["prev_hash"], row["seq"], row["time"], row["username"], row["address"], row["action"], row["detail"])
        if digest != row["hash"]:
            return f"audit trail broken at row {row['seq']}: its content does not match its hash (altered)"
        expected_seq, prev_hash = row["seq"] + 1, row["hash"]
    return None


def entries(conn: sqlite3.Connection, username: str = "", action: str = "", since: float = 0, until: float = 0,
            before_seq: int = 0, limit: int = 100) -> List[dict]:
    """Entries newest first, filtered; ``before_seq`` pages backwards."""
    where, params = [], []
    for column, value in (("username", username), ("action", action)):
        if value:
            where.append(f"{column} = ?")
            params.append(value)
    if since:
        where.append("time >= ?")
        params.append(since)
    if until:
        where.append("time < ?")
        params.append(until)
    if before_seq:
        where.append("seq < ?")
        params.append(before_seq)
    sql = "SELECT * FROM audit" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY seq DESC"
    if limit:
        sql += f" LIMIT {int(limit)}"
    return [_entry(row) for row in conn.execute(sql, params)]


def _entry(row) -> dict:
    out = dict(row)
    out["detail"] = json.loads(row["detail"])
    return out


def iterate(conn: sqlite3.Connection, **filters) -> Iterator[dict]:
    """Every matching entry, newest first, in pages (for the CSV download)."""
    before = 0
    while True:
        page = entries(conn, before_seq=before, limit=1000, **filters)
        yield from page
        if len(page) < 1000:
            return
        before = page[-1]["seq"]
