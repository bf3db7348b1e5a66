"""Metadata and the full-text index, in one SQLite database (WAL).

Rows are only ever added in one transaction per ingest batch.  The FTS5
table is contentless: purged messages leave their postings behind until the
next ``reindex``, and every search joins ``messages``, so they never show.
Row ids are AUTOINCREMENT and therefore never reused.
"""

import datetime
import json
import re
import sqlite3
from pathlib import Path
from typing import Iterable, List, Optional, Tuple

from archive_common import ids, participants
from archive_store.errors import StoreError

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    rowid INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    sha256 TEXT NOT NULL UNIQUE,
    body_sha256 TEXT NOT NULL,
    message_id TEXT NOT NULL,
    env_from TEXT NOT NULL,
    env_to TEXT NOT NULL,
    hdr_from TEXT NOT NULL,
    hdr_to TEXT NOT NULL,
    hdr_cc TEXT NOT NULL,
    subject TEXT NOT NULL,
    date INTEGER,
    size INTEGER NOT NULL,
    stored_size INTEGER NOT NULL,
    key_id TEXT NOT NULL,
    arrived INTEGER NOT NULL,
    retain_until INTEGER NOT NULL,
    parse_error TEXT NOT NULL,
    journal TEXT NOT NULL DEFAULT '',
    notes TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS messages_message_id ON messages (message_id);
CREATE INDEX IF NOT EXISTS messages_arrived ON messages (arrived);
CREATE INDEX IF NOT EXISTS messages_retain ON messages (retain_until);
CREATE TABLE IF NOT EXISTS arrivals (
    spool_name TEXT PRIMARY KEY,
    message INTEGER NOT NULL,
    arrived INTEGER NOT NULL,
    transit TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS arrivals_message ON arrivals (message);
CREATE TABLE IF NOT EXISTS attachments (
    message INTEGER NOT NULL,
    name TEXT NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    text_chars INTEGER NOT NULL DEFAULT 0,
    note TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS attachments_message ON attachments (message);
CREATE VIRTUAL TABLE IF NOT EXISTS fts USING fts5 (
    subject, sender, recipients, body, attachments,
    content = '', tokenize = 'unicode61 remove_diacritics 2'
);
"""

# Columns added since the first release: an older index gains them when opened for writing (its existing
# rows keep the defaults until `archive-store reindex` reads their objects again).
ADDED_COLUMNS = (
    ("messages", "journal", "TEXT NOT NULL DEFAULT ''"),
    ("messages", "notes", "TEXT NOT NULL DEFAULT ''"),
    ("attachments", "text_chars", "INTEGER NOT NULL DEFAULT 0"),
    ("attachments", "note", "TEXT NOT NULL DEFAULT ''"),
)
COLUMNS = (
    "id", "sha256", "body_sha256", "message_id", "env_from", "env_to", "hdr_from", "hdr_to",
    "hdr_cc", "subject", "date", "size", "stored_size", "key_id", "arrived", "retain_until", "parse_error", "journal",
    "notes",
)
FIELD_COLUMNS = {"from": "sender", "to": "recipients", "subject": "subject", "body": "body", "attachment": "attachments"}
_TOKEN_RE = re.compile(r'(?:(\w+):)?("[^"]*"|\S+)')


def _connect(path: Path, readonly: bool) -> sqlite3.Connection:
    if readonly:
        if not Path(path).exists():
            raise StoreError(f"index {path}: expected a database, found none (nothing ingested yet?)")
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False)
    else:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(SCHEMA)
        _add_columns(conn)
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA busy_timeout=10000")
    conn.row_factory = sqlite3.Row
    conn.create_function("involves", len(participants.FIELDS) + 1, _involves, deterministic=True)
    return conn


def _add_columns(conn: sqlite3.Connection) -> None:
    for table, column, declaration in ADDED_COLUMNS:
        if column not in {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")


def _involves(hdr_from, hdr_to, hdr_cc, env_to, wanted):
    """SQL: does one of ``wanted`` (newline-separated, normalised) take part in the message?"""
    return not participants.addresses(hdr_from, hdr_to, hdr_cc, env_to).isdisjoint(wanted.split("\n"))


class Index:
    def __init__(self, path: Path, readonly: bool = False) -> None:
        self.path = Path(path)
        self.conn = _connect(self.path, readonly)

    def close(self) -> None:
        self.conn.close()

    # -- ingest -----------------------------------------------------------
    def known_spool_names(self, names: Iterable[str]) -> dict:
        """Map each already committed spool name to its message's archive ID."""
        names = list(names)
        found = {}
        for start in range(0, len(names), 500):
            chunk = names[start:start + 500]
            marks = ",".join("?" * len(chunk))
            found.update(self.conn.execute(
                f"SELECT a.spool_name, m.id FROM arrivals a JOIN messages m ON m.rowid = a.message"
                f" WHERE a.spool_name IN ({marks})", chunk))
        return found

    def rowid_by_sha(self, sha256: str) -> Optional[Tuple[int, str]]:
        row = self.conn.execute("SELECT rowid, id FROM messages WHERE sha256 = ?", (sha256,)).fetchone()
        return (row[0], row[1]) if row else None

    def has_ids(self, archive_ids: Iterable[str]) -> set:
        archive_ids = list(archive_ids)
        marks = ",".join("?" * len(archive_ids))
        return {r[0] for r in self.conn.execute(f"SELECT id FROM messages WHERE id IN ({marks})", archive_ids)} if archive_ids else set()

    def commit_batch(self, new_messages: List[dict], arrivals: List[Tuple[str, str, int, str]]) -> None:
        """Insert messages (dicts with COLUMNS plus fts fields and attachments) and arrivals atomically.

        ``arrivals`` holds (spool_name, sha256, arrived, transit).
        """
        cur = self.conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            rowids = {}
            for msg in new_messages:
                cur.execute(
                    f"INSERT INTO messages ({','.join(COLUMNS)}) VALUES ({','.join('?' * len(COLUMNS))})",
                    [msg[c] for c in COLUMNS],
                )
                rowid = cur.lastrowid
                rowids[msg["sha256"]] = rowid
                cur.execute(
                    "INSERT INTO fts (rowid, subject, sender, recipients, body, attachments) VALUES (?,?,?,?,?,?)",
                    (rowid, msg["subject"], msg["fts_sender"], msg["fts_recipients"], msg["fts_body"], msg["fts_attachments"]),
                )
                cur.executemany(
                    "INSERT INTO attachments (message, name, size, sha256, text_chars, note) VALUES (?,?,?,?,?,?)",
                    [(rowid, *attachment) for attachment in msg["attachments"]],
                )
            for spool_name, sha256, arrived, transit in arrivals:
                rowid = rowids.get(sha256)
                if rowid is None:
                    rowid = cur.execute("SELECT rowid FROM messages WHERE sha256 = ?", (sha256,)).fetchone()[0]
                cur.execute(
                    "INSERT OR IGNORE INTO arrivals (spool_name, message, arrived, transit) VALUES (?,?,?,?)",
                    (spool_name, rowid, arrived, transit),
                )
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise

    def remove(self, archive_id: str) -> None:
        cur = self.conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            row = cur.execute("SELECT rowid FROM messages WHERE id = ?", (archive_id,)).fetchone()
            if row:
                cur.execute("DELETE FROM attachments WHERE message = ?", (row[0],))
                cur.execute("DELETE FROM arrivals WHERE message = ?", (row[0],))
                cur.execute("DELETE FROM messages WHERE rowid = ?", (row[0],))
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise

    # -- reading ----------------------------------------------------------
    def get(self, archive_id: str) -> Optional[dict]:
        row = self.conn.execute("SELECT * FROM messages WHERE id = ?", (archive_id,)).fetchone()
        return self._describe(row) if row else None

    def transit(self, archive_id: str) -> List[str]:
        """The transit headers (Received by this cluster's hosts) of a message's first arrival."""
        first = self.conn.execute(
            "SELECT a.transit FROM arrivals a JOIN messages m ON m.rowid = a.message WHERE m.id = ?"
            " ORDER BY a.arrived LIMIT 1", (archive_id,)).fetchone()
        return [h for h in (first[0] if first else "").split("\n") if h]

    def _describe(self, row: sqlite3.Row, brief: bool = False) -> dict:
        """The message's metadata; ``brief`` leaves out its attachments and arrival count (two queries each)."""
        out = {c: row[c] for c in COLUMNS}
        out["env_to"] = [a for a in out["env_to"].split("\n") if a]
        out["journal"] = json.loads(out["journal"]) if out["journal"] else None
        out["notes"] = [note for note in out["notes"].split("\n") if note]
        if brief:
            return out
        out["attachments"] = [
            {"name": r[0], "size": r[1], "sha256": r[2], "text_chars": r[3], "note": r[4]}
            for r in self.conn.execute("SELECT name, size, sha256, text_chars, note FROM attachments WHERE message = ?", (row["rowid"],))
        ]
        out["arrivals"] = self.conn.execute("SELECT count(*) FROM arrivals WHERE message = ?", (row["rowid"],)).fetchone()[0]
        return out

    def search(self, query: str, limit: int = 50, offset: int = 0, involving: Iterable[str] = (), brief: bool = False) -> List[dict]:
        """Matches of ``query``, newest first; with ``involving``, only messages one of those addresses took part in;
        ``brief``: without attachments and arrival counts (an export needs neither)."""
        match, where, params = parse_query(query)
        wanted = sorted({participants.normalise(a) for a in involving if a.strip()})
        if len(wanted) > participants.MAX_ADDRESSES:
            raise StoreError(f"search: expected at most {participants.MAX_ADDRESSES} participant addresses, found {len(wanted)}")
        if wanted:
            # The index narrows the candidates; involves() then compares whole addresses, since the
            # phrase "alice@example.com" also matches the tokens of bob.alice@example.com.
            narrowing = "(" + " OR ".join("{sender recipients} : " + _phrase(a) for a in wanted) + ")"
            match = f"({match}) AND {narrowing}" if match else narrowing
            where.append("involves(m.hdr_from, m.hdr_to, m.hdr_cc, m.env_to, ?)")
            params.append("\n".join(wanted))
        sql = "SELECT m.* FROM messages m"
        if match:
            sql = "SELECT m.* FROM fts JOIN messages m ON m.rowid = fts.rowid"
            where.insert(0, "fts MATCH ?")
            params.insert(0, match)
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY {'fts.rowid' if match else 'm.rowid'} DESC LIMIT ? OFFSET ?"
        try:
            rows = self.conn.execute(sql, params + [int(limit), int(offset)]).fetchall()
        except sqlite3.OperationalError as exc:
            raise StoreError(f"search {query!r}: {exc}") from None
        return [self._describe(r, brief) for r in rows]

    def stats(self) -> dict:
        row = self.conn.execute(
            "SELECT count(*), coalesce(sum(size),0), coalesce(sum(stored_size),0), max(arrived) FROM messages"
        ).fetchone()
        arrivals = self.conn.execute("SELECT count(*) FROM arrivals").fetchone()[0]
        return {
            "messages": row[0],
            "raw_bytes": row[1],
            "stored_bytes": row[2],
            "last_arrival": row[3],
            "arrivals": arrivals,
            "duplicate_arrivals": max(arrivals - row[0], 0),
        }

    def first_arrival(self) -> Optional[int]:
        row = self.conn.execute("SELECT arrived FROM messages ORDER BY rowid LIMIT 1").fetchone()
        return row[0] if row else None

    def expired(self, now: int) -> List[dict]:
        rows = self.conn.execute("SELECT * FROM messages WHERE retain_until < ? ORDER BY rowid", (now,)).fetchall()
        return [self._describe(r) for r in rows]

    def listing(self, since: int, until: int, after: str = "", limit: int = 1000) -> List[dict]:
        """Messages archived in [since, until), ordered by ID, resuming after ``after``.

        IDs begin with their TAI64N time, so this is a range scan on the ID.
        """
        rows = self.conn.execute(
            "SELECT id, sha256, message_id, arrived, size FROM messages"
            " WHERE id > ? AND id >= ? AND id < ? ORDER BY id LIMIT ?",
            (after, ids.lower_bound(since), ids.lower_bound(until), int(limit)),
        ).fetchall()
        return [dict(zip(("id", "sha256", "message_id", "arrived", "size"), r)) for r in rows]

    def all_ids(self) -> List[str]:
        return [r[0] for r in self.conn.execute("SELECT id FROM messages ORDER BY rowid")]


def _phrase(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def _day(value: str, field: str) -> int:
    try:
        return int(datetime.datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=datetime.timezone.utc).timestamp())
    except ValueError:
        raise StoreError(f"search {field}: expected a date YYYY-MM-DD, found {value!r}") from None


def parse_query(query: str) -> Tuple[str, List[str], list]:
    """Turn 'word from:x to:y subject:z after:2024-01-01' into FTS + SQL."""
    terms: List[str] = []
    where: List[str] = []
    params: list = []
    for field, value in _TOKEN_RE.findall(query or ""):
        field = field.lower()
        value = value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value
        if not value:
            continue
        if field in FIELD_COLUMNS:
            terms.append(f"{FIELD_COLUMNS[field]} : {_phrase(value)}")
        elif field in ("msgid", "message-id"):
            bare = value.strip("<>")
            where.append("m.message_id IN (?, ?)")
            params += [bare, f"<{bare}>"]
        elif field == "id":
            where.append("m.id = ?")
            params.append(value.lower())
        elif field == "sha256":
            where.append("m.sha256 = ?")
            params.append(value.lower())
        elif field in ("after", "since"):
            where.append("coalesce(m.date, m.arrived) >= ?")
            params.append(_day(value, field))
        elif field in ("before", "until"):
            where.append("coalesce(m.date, m.arrived) < ?")
            params.append(_day(value, field) + (86400 if field == "until" else 0))
        elif field:
            raise StoreError(f"search: unknown field {field!r}; expected from, to, subject, body, attachment, msgid, id, sha256, after, before")
        elif value.endswith("*") and len(value) > 1:
            terms.append(_phrase(value[:-1]) + " *")
        else:
            terms.append(_phrase(value))
    return " AND ".join(terms), where, params
