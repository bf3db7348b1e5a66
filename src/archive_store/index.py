"""Metadata and the full-text index, in one SQLite database (WAL).

Rows are only ever added in one transaction per ingest batch.  The FTS5
table is contentless: purged messages leave their postings behind until the
next ``reindex``, and every search joins ``messages``, so they never show.
Row ids are AUTOINCREMENT and therefore never reused.

Layout 2 (docs/BENCHMARKS.md, "Index size"): archive IDs and digests are
BLOBs (hex only at this module's edge), and the full text is one FTS5 column
with ``detail=none``: no positions and no columns are stored.  Fields are
told apart by tagged tokens instead: a subject word ``invoice`` is indexed
as ``<TAG>sinvoice`` (sender ``f``, recipients ``r``, attachments ``a``), body
words untagged, and each whole address (``xf``/``xt``) and the Message-ID
(``xm``) as one exact token, a 48-bit BLAKE2b of it.  ``<TAG>`` is a
private-use character the tokenizer keeps inside tokens and mail never
contains.  A phrase is searched as its words, and the candidates are then
checked against their text, newest first (``text_of``).

Shards: every ``shard_messages`` messages, the full-text rows of the messages
stored so far leave the live database for a read-only file of their own in
``shards/`` (``close_shard``: FTS5's tables copied, ``optimize``d and
VACUUMed once; a backup takes an unchanged file once), and the live ``fts``
starts empty.  A search reads the live rows first, then the shards newest
first, and stops when its page is full; metadata stays in the live database.
A shard whose messages have all been removed is deleted.  So no FTS5 table
grows past one shard: its merges, ``optimize`` and the backup's work stay
bounded however many messages the worker holds.
"""

import datetime
import hashlib
import json
import logging
import os
import re
import sqlite3
import threading
import time
import unicodedata
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, List, NamedTuple, Optional, Tuple

from archive_common import ids, participants
from archive_store import crashpoints
from archive_store.errors import StoreError
from archive_store.objects import fsync_dir

log = logging.getLogger(__name__)

LAYOUT = 2
TAG = "\ue000"
TOKENIZER = f"unicode61 remove_diacritics 2 tokenchars '{TAG}'"
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS messages (
    rowid INTEGER PRIMARY KEY AUTOINCREMENT,
    id BLOB NOT NULL UNIQUE,
    sha256 BLOB NOT NULL,
    body_sha256 BLOB NOT NULL,
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
    journal TEXT NOT NULL,
    notes TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_sha ON messages (substr(sha256, 1, 8));
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
    sha256 BLOB NOT NULL,
    text_chars INTEGER NOT NULL,
    note TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS attachments_message ON attachments (message);
{"{FTS}"}
"""
FTS = f"""CREATE VIRTUAL TABLE IF NOT EXISTS fts USING fts5 (
    terms, content = '', detail = none, columnsize = 0, tokenize = "{TOKENIZER}"
);"""
SCHEMA = SCHEMA.replace("{FTS}", FTS)

# Added to a layout 2 index by its first writable open (an index without them has none of them):
# attachment bodies stored once (blobs.py) and the messages that refer to each; the envelope
# recipients that later copies of a message added to it (the full-text index has the first copy's);
# and the closed shards of the full-text index, whose file names begin with the index's instance.
LATER_SCHEMA = """
CREATE TABLE IF NOT EXISTS blobs (
    rowid INTEGER PRIMARY KEY,
    sha256 BLOB NOT NULL UNIQUE,
    size INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS blob_refs (
    blob INTEGER NOT NULL,
    message INTEGER NOT NULL,
    PRIMARY KEY (blob, message)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS blob_refs_message ON blob_refs (message);
CREATE TABLE IF NOT EXISTS added_recipients (
    address TEXT NOT NULL,
    message INTEGER NOT NULL,
    PRIMARY KEY (address, message)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS added_recipients_message ON added_recipients (message);
CREATE TABLE IF NOT EXISTS index_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
INSERT OR IGNORE INTO index_meta (key, value) VALUES ('instance', lower(hex(randomblob(4))));
CREATE TABLE IF NOT EXISTS shards (
    number INTEGER PRIMARY KEY AUTOINCREMENT,
    first_rowid INTEGER NOT NULL,
    last_rowid INTEGER NOT NULL,
    file TEXT NOT NULL
);
"""

COLUMNS = (
    "id", "sha256", "body_sha256", "message_id", "env_from", "env_to", "hdr_from", "hdr_to",
    "hdr_cc", "subject", "date", "size", "stored_size", "key_id", "arrived", "retain_until", "parse_error", "journal",
    "notes",
)
BLOB_COLUMNS = ("id", "sha256", "body_sha256")
# Query fields and the tag of their words.
FIELD_TAGS = {"from": "f", "to": "r", "subject": "s", "body": "", "attachment": "a"}
_TOKEN_RE = re.compile(r'(?:(\w+):)?("[^"]*"|\S+)')
# The words of a text as the tokenizer (unicode61) splits them: letters and digits, nothing else.
_WORD_RE = re.compile(r"[^\W_]+")
# How many candidates a phrase search checks against their text before it asks for a narrower query.
MAX_PHRASE_CANDIDATES = 20000


class OldLayout(StoreError):
    """The index was written by an earlier release: ``reindex`` rebuilds it from the objects."""


def old_layout(path: Path, layout: int) -> str:
    return (f"index {path}: layout {layout or 1} of an earlier release; expected {LAYOUT}: run `archive_store reindex`"
            " (the service does at its start)")


def _connect(path: Path, readonly: bool, legacy: bool = False) -> sqlite3.Connection:
    if readonly:
        if not Path(path).exists():
            raise StoreError(f"index {path}: expected a database, found none (nothing ingested yet?)")
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False)
    else:
        if not Path(path).exists():  # mail metadata: the owner's alone, whatever the caller's umask (-wal, -shm follow)
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
    layout = conn.execute("PRAGMA user_version").fetchone()[0]
    written = conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'messages'").fetchone()[0]
    if written and layout < LAYOUT and not (readonly and legacy):
        conn.close()
        raise OldLayout(old_layout(path, layout))
    if not readonly and not written:
        conn.executescript(SCHEMA)
        conn.execute(f"PRAGMA user_version = {LAYOUT}")
    if not readonly and (layout >= LAYOUT or not written):
        conn.executescript(LATER_SCHEMA)
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA busy_timeout=10000")
    conn.row_factory = sqlite3.Row
    conn.create_function("involves", len(participants.FIELDS) + 1, _involves, deterministic=True)
    return conn


def _involves(hdr_from, hdr_to, hdr_cc, env_to, wanted):
    """SQL: does one of ``wanted`` (newline-separated, normalised) take part in the message?"""
    return not participants.addresses(hdr_from, hdr_to, hdr_cc, env_to).isdisjoint(wanted.split("\n"))


# -- tokens ------------------------------------------------------------------------------------------------------


def words(text: str) -> List[str]:
    """``text``'s words, folded as the tokenizer folds them (case, diacritics): for tags and phrase checks."""
    folded = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c)).casefold()
    return _WORD_RE.findall(folded)


def exact(kind: str, value: str) -> str:
    """The one token of a whole address (kind f or t) or Message-ID (m)."""
    return f"{TAG}x{kind}" + hashlib.blake2b(participants.normalise(value).encode("utf-8"), digest_size=6).hexdigest()


def _tagged(tag: str, text: str) -> str:
    return " ".join(f"{TAG}{tag}{word}" for word in words(text))


def terms(row: dict) -> str:
    """The FTS text of a message row (Store._row): body words as they are, the other fields' words tagged,
    and the exact tokens of its addresses and Message-ID."""
    journal = json.loads(row["journal"]) if row["journal"] else {}
    senders = participants.addresses(row["hdr_from"], [row["env_from"], journal.get("sender", "")])
    recipients = participants.addresses(row["hdr_to"], row["hdr_cc"], row["env_to"])
    exacts = [exact("f", a) for a in sorted(senders)] + [exact("t", a) for a in sorted(recipients)]
    if row["message_id"]:
        exacts.append(exact("m", row["message_id"].strip("<>")))
    return "\n".join([row["fts_body"], _tagged("s", row["subject"]), _tagged("f", row["fts_sender"]),
                      _tagged("r", row["fts_recipients"]), _tagged("a", row["fts_attachments"]), " ".join(exacts)])


def _hex(value) -> str:
    return value.hex() if isinstance(value, bytes) else value


def _blob(value: str, what: str) -> bytes:
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise StoreError(f"{what} {value!r}: expected hexadecimal") from None


def _write_shard(live: Path, path: Path) -> None:
    """Copy the live database's full-text rows into a new file at ``path``: FTS5's own tables row for row, then
    ``optimize`` (one segment) and VACUUM; read-only (0400) and fsynced.  The caller holds the live write lock."""
    if path.exists():
        path.unlink()
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    conn = sqlite3.connect(f"file:{path}", uri=True, isolation_level=None)
    try:
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute(FTS)
        conn.execute("ATTACH ? AS live", (f"file:{live}?mode=ro",))
        tables = [r[0] for r in conn.execute("SELECT name FROM live.sqlite_master WHERE type = 'table' AND name LIKE 'fts!_%' ESCAPE '!'")]
        conn.execute("BEGIN")
        for table in tables:
            conn.execute(f"DELETE FROM main.{table}")
            conn.execute(f"INSERT INTO main.{table} SELECT * FROM live.{table}")
        conn.execute("COMMIT")
        conn.execute("DETACH live")
        conn.execute("INSERT INTO fts (fts) VALUES ('optimize')")
        conn.execute("VACUUM")
    finally:
        conn.close()
    os.chmod(path, 0o400)
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class Index:
    def __init__(self, path: Path, readonly: bool = False, legacy: bool = False, shard_messages: int = 0) -> None:
        """``legacy``: a read-only index of an earlier layout opens too, for ``stats`` alone (the upgrade's drain
        reads the backlog with this release's code); everything else raises OldLayout.  ``shard_messages``: close
        the live full-text rows into a shard once they span this many messages (0: never)."""
        self.path = Path(path)
        self.conn = _connect(self.path, readonly, legacy)
        self.layout = self.conn.execute("PRAGMA user_version").fetchone()[0] or 1  # layout 1 set no version
        # archive ID -> the message's searchable text, for phrase checks (Store sets it: it holds the objects).
        self.text_of: Optional[Callable[[str], str]] = None
        self.shard_messages = shard_messages
        self.shards_dir = self.path.parent / "shards"
        self._shard_conns: Dict[str, sqlite3.Connection] = {}
        self._shard_lock = threading.Lock()
        if not readonly and self.layout >= LAYOUT:
            self._collect_shards()

    def close(self) -> None:
        with self._shard_lock:
            for conn in self._shard_conns.values():
                conn.close()
            self._shard_conns.clear()
        self.conn.close()

    def _current(self) -> None:
        if self.layout < LAYOUT:
            raise OldLayout(old_layout(self.path, self.layout))

    # -- ingest -----------------------------------------------------------
    def known_spool_names(self, names: Iterable[str]) -> dict:
        """Map each already committed spool name to its message's archive ID."""
        self._current()
        names = list(names)
        found = {}
        for chunk in _chunks(names, 500):
            marks = ",".join("?" * len(chunk))
            found.update((name, _hex(archive_id)) for name, archive_id in self.conn.execute(
                f"SELECT a.spool_name, m.id FROM arrivals a JOIN messages m ON m.rowid = a.message"
                f" WHERE a.spool_name IN ({marks})", chunk))
        return found

    def rowid_by_sha(self, sha256: str) -> Optional[Tuple[int, str]]:
        self._current()
        digest = _blob(sha256, "sha256")
        row = self.conn.execute("SELECT rowid, id FROM messages WHERE substr(sha256, 1, 8) = ? AND sha256 = ?",
                                (digest[:8], digest)).fetchone()
        return (row[0], _hex(row[1])) if row else None

    def has_ids(self, archive_ids: Iterable[str]) -> set:
        self._current()
        blobs = [_blob(i, "id") for i in archive_ids]
        marks = ",".join("?" * len(blobs))
        return {_hex(r[0]) for r in self.conn.execute(f"SELECT id FROM messages WHERE id IN ({marks})", blobs)} if blobs else set()

    def sizes(self, archive_ids: Iterable[str]) -> Dict[str, int]:
        """{id: size in bytes} of those of ``archive_ids`` the index holds: one query per 500, not a row each."""
        self._current()
        blobs = [_blob(i, "id") for i in archive_ids]
        found = {}
        for chunk in _chunks(blobs, 500):
            found.update((_hex(archive_id), size) for archive_id, size in self.conn.execute(
                f"SELECT id, size FROM messages WHERE id IN ({','.join('?' * len(chunk))})", chunk))
        return found

    def commit_batch(self, new_messages: List[dict], arrivals: List[Tuple[str, str, int, str]],
                     recipients: Optional[Dict[str, List[str]]] = None) -> None:
        """Insert messages (dicts with COLUMNS plus fts fields and attachments) and arrivals atomically.

        ``arrivals`` holds (spool_name, sha256, arrived, transit). ``recipients`` ({sha256: addresses}) are
        envelope recipients of later copies of messages stored before, added to their recipients (the
        per-user scope and the metadata see them; the full-text index keeps the first copy's).
        """
        self._current()
        cur = self.conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            rowids = {}
            for msg in new_messages:
                cur.execute(
                    f"INSERT INTO messages ({','.join(COLUMNS)}) VALUES ({','.join('?' * len(COLUMNS))})",
                    [bytes.fromhex(msg[c]) if c in BLOB_COLUMNS else msg[c] for c in COLUMNS],
                )
                rowid = cur.lastrowid
                rowids[msg["sha256"]] = rowid
                cur.execute("INSERT INTO fts (rowid, terms) VALUES (?,?)", (rowid, terms(msg)))
                cur.executemany(
                    "INSERT INTO attachments (message, name, size, sha256, text_chars, note) VALUES (?,?,?,?,?,?)",
                    [(rowid, name, size, bytes.fromhex(digest), chars, note) for name, size, digest, chars, note in msg["attachments"]],
                )
                self._refer(cur, rowid, msg.get("blobs", ()))
            for sha256, addresses in (recipients or {}).items():
                found = self.rowid_by_sha(sha256)
                if found:
                    self._add_recipients(cur, found[0], addresses)
            for spool_name, sha256, arrived, transit in arrivals:
                rowid = rowids.get(sha256)
                if rowid is None:
                    rowid = self.rowid_by_sha(sha256)[0]
                cur.execute(
                    "INSERT OR IGNORE INTO arrivals (spool_name, message, arrived, transit) VALUES (?,?,?,?)",
                    (spool_name, rowid, arrived, transit),
                )
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        if new_messages and self.shard_messages > 0:
            self._close_when_full()

    def arrivals_of(self, archive_ids: List[str]) -> Dict[str, List[dict]]:
        """Each message's arrivals, oldest first: spool name, time, transit lines and the message's envelope
        recipients (IDs not held left out)."""
        self._current()
        found: Dict[str, List[dict]] = {archive_id: [] for archive_id in archive_ids}
        blobs = [_blob(i, "id") for i in archive_ids]
        for chunk in _chunks(blobs, 500):
            for archive_id, spool_name, arrived, transit, env_to in self.conn.execute(
                    "SELECT m.id, a.spool_name, a.arrived, a.transit, m.env_to FROM arrivals a JOIN messages m ON m.rowid = a.message"
                    f" WHERE m.id IN ({','.join('?' * len(chunk))}) ORDER BY a.arrived, a.spool_name", chunk):
                found[_hex(archive_id)].append({"spool_name": spool_name, "arrived": arrived,
                                                "transit": [line for line in transit.split("\n") if line],
                                                "recipients": [a for a in env_to.split("\n") if a]})
        held = self.has_ids(archive_ids)
        return {archive_id: rows for archive_id, rows in found.items() if archive_id in held}

    def add_arrivals(self, archive_id: str, arrivals: List[Tuple[str, int, str]], recipients: Iterable[str] = ()) -> int:
        """Record (spool_name, arrived, transit) arrivals on a message, and the envelope recipients they add;
        those already there are skipped. Returns how many arrivals were new."""
        self._current()
        cur = self.conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            row = cur.execute("SELECT rowid FROM messages WHERE id = ?", (_blob(archive_id, "id"),)).fetchone()
            if row is None:
                raise StoreError(f"id {archive_id}: not in the index")
            before = cur.execute("SELECT count(*) FROM arrivals WHERE message = ?", (row[0],)).fetchone()[0]
            cur.executemany("INSERT OR IGNORE INTO arrivals (spool_name, message, arrived, transit) VALUES (?,?,?,?)",
                            [(name, row[0], arrived, transit) for name, arrived, transit in arrivals])
            after = cur.execute("SELECT count(*) FROM arrivals WHERE message = ?", (row[0],)).fetchone()[0]
            self._add_recipients(cur, row[0], recipients)
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        return after - before

    @staticmethod
    def _add_recipients(cur: sqlite3.Cursor, message: int, addresses: Iterable[str]) -> None:
        """Add envelope recipients to a stored message: its metadata, and added_recipients for the per-user scope."""
        before = [a for a in cur.execute("SELECT env_to FROM messages WHERE rowid = ?", (message,)).fetchone()[0].split("\n") if a]
        added = [a for a in dict.fromkeys(addresses) if a and a not in before]
        if added:
            cur.execute("UPDATE messages SET env_to = ? WHERE rowid = ?", ("\n".join(before + added), message))
            cur.executemany("INSERT OR IGNORE INTO added_recipients (address, message) VALUES (?, ?)",
                            [(participants.normalise(a), message) for a in added])

    @staticmethod
    def _refer(cur: sqlite3.Cursor, message: int, blobs: Iterable[Tuple[str, int]]) -> None:
        """Record that a message refers to these attachment blobs ((sha256, size) each)."""
        for sha256, size in blobs:
            digest = bytes.fromhex(sha256)
            cur.execute("INSERT OR IGNORE INTO blobs (sha256, size) VALUES (?, ?)", (digest, size))
            cur.execute("INSERT OR IGNORE INTO blob_refs (blob, message) SELECT rowid, ? FROM blobs WHERE sha256 = ?",
                        (message, digest))

    def refer(self, archive_id: str, blobs: List[Tuple[str, int]], stored_size: int) -> None:
        """Record a stored message's blobs and its object's new size (the conversion of a message stored whole)."""
        self._current()
        cur = self.conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            row = cur.execute("SELECT rowid FROM messages WHERE id = ?", (_blob(archive_id, "id"),)).fetchone()
            if row is None:
                raise StoreError(f"id {archive_id}: not in the index")
            self._refer(cur, row[0], blobs)
            cur.execute("UPDATE messages SET stored_size = ? WHERE rowid = ?", (stored_size, row[0]))
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise

    def remove(self, archive_id: str) -> List[str]:
        """Drop a message's rows; return the blobs no message refers to any more (their rows stay until
        ``forget_blobs``, after their files are deleted)."""
        self._current()
        cur = self.conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            row = cur.execute("SELECT rowid FROM messages WHERE id = ?", (_blob(archive_id, "id"),)).fetchone()
            unreferenced = []
            if row:
                cur.execute("DELETE FROM attachments WHERE message = ?", (row[0],))
                cur.execute("DELETE FROM arrivals WHERE message = ?", (row[0],))
                referred = [r[0] for r in cur.execute("SELECT blob FROM blob_refs WHERE message = ?", (row[0],))]
                cur.execute("DELETE FROM blob_refs WHERE message = ?", (row[0],))
                cur.execute("DELETE FROM added_recipients WHERE message = ?", (row[0],))
                cur.execute("DELETE FROM messages WHERE rowid = ?", (row[0],))
                unreferenced = [_hex(r[0]) for blob in referred for r in cur.execute(
                    "SELECT sha256 FROM blobs WHERE rowid = ? AND NOT EXISTS (SELECT 1 FROM blob_refs WHERE blob = ?)",
                    (blob, blob))]
                emptied = self._emptied_shard(cur, row[0])
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        if row and emptied:
            self._delete_shard_file(emptied)
        return unreferenced

    def forget_blobs(self, shas: Iterable[str]) -> None:
        """Drop the rows of blobs whose files were deleted, unless a message refers to them again."""
        self._current()
        for sha256 in shas:
            self.conn.execute("DELETE FROM blobs WHERE sha256 = ? AND NOT EXISTS"
                              " (SELECT 1 FROM blob_refs WHERE blob = blobs.rowid)", (bytes.fromhex(sha256),))

    def unreferenced_blobs(self) -> List[str]:
        """Blobs with a row and no message referring to them (a removal cut off before the file went)."""
        self._current()
        return [_hex(r[0]) for r in self.conn.execute(
            "SELECT sha256 FROM blobs WHERE NOT EXISTS (SELECT 1 FROM blob_refs WHERE blob = blobs.rowid)")]

    def known_blobs(self, shas: Iterable[str]) -> set:
        """Those of these blobs that have a row, so their file is on disk."""
        self._current()
        return {sha for sha in shas
                if self.conn.execute("SELECT 1 FROM blobs WHERE sha256 = ?", (bytes.fromhex(sha),)).fetchone()}

    def blob_rows(self) -> dict:
        """{sha256: messages referring to it} of every blob with a row (none in an index no writer of this
        release has opened yet)."""
        self._current()
        try:
            return {_hex(sha): refs for sha, refs in self.conn.execute(
                "SELECT b.sha256, count(r.message) FROM blobs b LEFT JOIN blob_refs r ON r.blob = b.rowid GROUP BY b.rowid")}
        except sqlite3.OperationalError:
            return {}

    # -- shards -----------------------------------------------------------
    def shards(self) -> List[sqlite3.Row]:
        """The closed shards, newest first (none in an index no writer of this release has opened)."""
        try:
            return self.conn.execute("SELECT number, first_rowid, last_rowid, file FROM shards ORDER BY number DESC").fetchall()
        except sqlite3.OperationalError:
            return []

    def shard_report(self) -> List[dict]:
        """Each closed shard, oldest first: its row ids, the messages of it still stored and its file's size."""
        out = []
        for shard in reversed(self.shards()):
            path = self.shards_dir / shard["file"]
            out.append({"number": shard["number"], "first_rowid": shard["first_rowid"], "last_rowid": shard["last_rowid"],
                        "file": str(path), "bytes": path.stat().st_size if path.exists() else None,
                        "messages": self.conn.execute("SELECT count(*) FROM messages WHERE rowid BETWEEN ? AND ?",
                                                      (shard["first_rowid"], shard["last_rowid"])).fetchone()[0]})
        return out

    def files_bytes(self) -> int:
        """The index's size on disk: the live database, its write-ahead log and the closed shards."""
        paths = [self.path, Path(f"{self.path}-wal")] + [self.shards_dir / s["file"] for s in self.shards()]
        return sum(path.stat().st_size for path in paths if path.exists())

    def _instance(self) -> str:
        return self.conn.execute("SELECT value FROM index_meta WHERE key = 'instance'").fetchone()[0]

    def _last_rowid(self) -> int:
        row = self.conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'messages'").fetchone()
        return row[0] if row else 0

    @staticmethod
    def _live_first(shards: List[sqlite3.Row]) -> int:
        """The first row id whose full text is in the live database."""
        return shards[0]["last_rowid"] + 1 if shards else 1

    def _close_when_full(self) -> None:
        if self._last_rowid() - self._live_first(self.shards()) + 1 >= self.shard_messages:
            self.close_shard()

    def close_shard(self) -> Optional[dict]:
        """Move the live full-text rows into a new read-only shard and start the live ``fts`` empty.

        Under the write lock, so nothing is added meanwhile: the rows are copied into ``<name>.tmp``, which is
        optimized, VACUUMed, made read-only, fsynced and renamed; then one transaction records it and empties the
        live table.  A crash before that commit leaves an unrecorded file, which the next writable open deletes,
        and the live rows as they were.  Returns the shard ({number, first_rowid, last_rowid, file, seconds}), or
        None when the live rows are empty.
        """
        self._current()
        started = time.monotonic()
        cur = self.conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            shards = self.shards()
            first, last = self._live_first(shards), self._last_rowid()
            if last < first:
                cur.execute("ROLLBACK")
                return None
            used = self.conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'shards'").fetchone()
            number = (used[0] if used else 0) + 1  # never a deleted shard's: another process may hold its file open
            name = f"{self._instance()}-{number:05d}.sqlite"
            self.shards_dir.mkdir(mode=0o700, exist_ok=True)
            final = self.shards_dir / name
            _write_shard(self.path, final.with_name(name + ".tmp"))
            os.rename(final.with_name(name + ".tmp"), final)
            fsync_dir(self.shards_dir)
            crashpoints.reach("shard")
            cur.execute("DROP TABLE fts")
            cur.execute(FTS)
            cur.execute("INSERT INTO shards (number, first_rowid, last_rowid, file) VALUES (?, ?, ?, ?)",
                        (number, first, last, name))
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        seconds = time.monotonic() - started
        log.info("index shard %s closed: messages %d-%d, %.1f s", name, first, last, seconds)
        return {"number": number, "first_rowid": first, "last_rowid": last, "file": name, "seconds": seconds}

    def _collect_shards(self) -> None:
        """Delete this index's shard files that no row records (a close cut off before its commit)."""
        if not self.shards_dir.is_dir():
            return
        cur = self.conn.cursor()
        cur.execute("BEGIN IMMEDIATE")  # a close in progress elsewhere holds this lock until it has recorded its file
        try:
            recorded = {row["file"] for row in self.shards()}
            prefix = self._instance() + "-"
            for path in self.shards_dir.iterdir():
                if path.name.startswith(prefix) and path.name not in recorded:
                    log.warning("index shard %s: recorded nowhere (a close cut off); deleted", path)
                    path.unlink()
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise

    def collect_other_shards(self) -> List[str]:
        """Delete the shard files of other indexes (those this one replaced: ``reindex``, an upgrade)."""
        if not self.shards_dir.is_dir():
            return []
        prefix = self._instance() + "-"
        gone = [path for path in self.shards_dir.iterdir() if not path.name.startswith(prefix)]
        for path in gone:
            path.unlink()
        return [path.name for path in gone]

    def _emptied_shard(self, cur: sqlite3.Cursor, rowid: int) -> Optional[str]:
        """Within a removal: the shard holding ``rowid`` if no message of it is left (its row is deleted)."""
        try:
            shard = cur.execute("SELECT number, first_rowid, last_rowid, file FROM shards WHERE ? BETWEEN first_rowid AND last_rowid",
                                (rowid,)).fetchone()
        except sqlite3.OperationalError:
            return None
        if shard is None or cur.execute("SELECT 1 FROM messages WHERE rowid BETWEEN ? AND ? LIMIT 1",
                                        (shard["first_rowid"], shard["last_rowid"])).fetchone():
            return None
        cur.execute("DELETE FROM shards WHERE number = ?", (shard["number"],))
        return shard["file"]

    def _delete_shard_file(self, name: str) -> None:
        with self._shard_lock:
            conn = self._shard_conns.pop(name, None)
            if conn is not None:
                conn.close()
        path = self.shards_dir / name
        if path.exists():
            path.unlink()
            log.info("index shard %s: every message of it removed; deleted", name)

    def _forget_shard_conns(self, shards: List[sqlite3.Row]) -> None:
        """Let go of the connections to shards no longer recorded (deleted by another process); a search still
        reading one holds its own reference, and the connection closes after it."""
        if self._shard_conns:
            with self._shard_lock:
                for name in set(self._shard_conns) - {shard["file"] for shard in shards}:
                    del self._shard_conns[name]

    def _shard_conn(self, shard: sqlite3.Row) -> sqlite3.Connection:
        with self._shard_lock:
            conn = self._shard_conns.get(shard["file"])
            if conn is None:
                path = self.shards_dir / shard["file"]
                if not path.exists():
                    raise StoreError(f"index shard {path} (messages {shard['first_rowid']}-{shard['last_rowid']}): expected a file,"
                                     " found none; run `archive_store reindex`")
                conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False)
                self._shard_conns[shard["file"]] = conn
            return conn

    # -- reading ----------------------------------------------------------
    def get(self, archive_id: str) -> Optional[dict]:
        self._current()
        row = self.conn.execute("SELECT * FROM messages WHERE id = ?", (_blob(archive_id, "id"),)).fetchone()
        return self._describe(row) if row else None

    def transit(self, archive_id: str) -> List[str]:
        """The transit headers (Received by this cluster's hosts) of a message's first arrival."""
        self._current()
        first = self.conn.execute(
            "SELECT a.transit FROM arrivals a JOIN messages m ON m.rowid = a.message WHERE m.id = ?"
            " ORDER BY a.arrived LIMIT 1", (_blob(archive_id, "id"),)).fetchone()
        return [h for h in (first[0] if first else "").split("\n") if h]

    def _describe(self, row: sqlite3.Row, brief: bool = False) -> dict:
        """The message's metadata; ``brief`` leaves out its attachments and arrival count (two queries each)."""
        out = {c: _hex(row[c]) for c in COLUMNS}
        out["env_to"] = [a for a in out["env_to"].split("\n") if a]
        out["journal"] = json.loads(out["journal"]) if out["journal"] else None
        out["notes"] = [note for note in out["notes"].split("\n") if note]
        if brief:
            return out
        out["attachments"] = [
            {"name": r[0], "size": r[1], "sha256": _hex(r[2]), "text_chars": r[3], "note": r[4]}
            for r in self.conn.execute("SELECT name, size, sha256, text_chars, note FROM attachments WHERE message = ?", (row["rowid"],))
        ]
        out["arrivals"] = self.conn.execute("SELECT count(*) FROM arrivals WHERE message = ?", (row["rowid"],)).fetchone()[0]
        return out

    def search(self, query: str, limit: int = 50, offset: int = 0, involving: Iterable[str] = (), brief: bool = False) -> List[dict]:
        """Matches of ``query``, newest first; with ``involving``, only messages one of those addresses took part in;
        ``brief``: without attachments and arrival counts (an export needs neither)."""
        self._current()
        parsed = parse_query(query)
        match, where, params = parsed.match, list(parsed.where), list(parsed.params)
        wanted = sorted({participants.normalise(a) for a in involving if a.strip()})
        if len(wanted) > participants.MAX_ADDRESSES:
            raise StoreError(f"search: expected at most {participants.MAX_ADDRESSES} participant addresses, found {len(wanted)}")
        if wanted:
            # The exact tokens narrow the candidates; involves() then compares whole addresses (From, To, Cc,
            # envelope recipients; not the envelope sender, whose token the index also has).
            narrowing = "(" + " OR ".join(_phrase(exact(kind, a)) for a in wanted for kind in "ft") + ")"
            match = f"({match}) AND {narrowing}" if match else narrowing
            where.append("involves(m.hdr_from, m.hdr_to, m.hdr_cc, m.env_to, ?)")
            params.append("\n".join(wanted))
        plan = _Plan(query, parsed, match, where, params, wanted if wanted and self._added_for(wanted) else [])
        for _attempt in range(3):
            shards = self.shards() if match else []
            if match:
                self._forget_shard_conns(shards)
            found = self._collect(plan, shards, int(offset) + int(limit), brief)
            if not match or [s["number"] for s in self.shards()] == [s["number"] for s in shards]:
                break  # else a shard closed (or went) meanwhile: its rows may have been read neither live nor closed
        return found[int(offset):]

    def _collect(self, plan: "_Plan", shards: List[sqlite3.Row], wanted_rows: int, brief: bool) -> List[dict]:
        """The first ``wanted_rows`` matches that pass the query's phrase checks, newest first."""
        found: List[dict] = []
        candidates = 0
        for row in self._newest_first(plan, shards, wanted_rows if not plan.parsed.checks else 200):
            described = self._describe(row, brief)
            candidates += 1
            if all(check(described, self.text_of) for check in plan.parsed.checks):
                found.append(described)
                if len(found) >= wanted_rows:
                    break
            elif candidates >= MAX_PHRASE_CANDIDATES:
                raise StoreError(f"search {plan.query!r}: a phrase whose words are in more than {MAX_PHRASE_CANDIDATES} messages;"
                                 " add a word or a date range (after:, before:)")
        return found

    def _newest_first(self, plan: "_Plan", shards: List[sqlite3.Row], page: int) -> Iterator[sqlite3.Row]:
        """The rows matching ``plan``, newest first: the live full text (or, without words, the metadata alone),
        then each closed shard, newest first; read a page at a time, so a caller that stops early reads no more."""
        sql, params = self._live_sql(plan, self._live_first(shards) if shards else 0)
        seen = 0
        while True:
            rows = self._rows(plan.query, sql, params + [page, seen])
            yield from rows
            seen += len(rows)
            if len(rows) < page:
                break
        for shard in shards:
            yield from self._shard_rows(plan, shard, page)

    def _live_sql(self, plan: "_Plan", floor: int) -> Tuple[str, list]:
        """The query over the live database, paged by LIMIT and OFFSET; ``floor``: the first row id whose full
        text is live (0: all)."""
        where, params = list(plan.where), list(plan.params)
        if floor:
            where.insert(0, "m.rowid >= ?")
            params.insert(0, floor)
        if plan.match:
            sql = "SELECT m.* FROM fts JOIN messages m ON m.rowid = fts.rowid WHERE " + " AND ".join(["fts MATCH ?"] + where)
            params.insert(0, plan.match)
        else:
            sql = "SELECT m.* FROM messages m" + (" WHERE " + " AND ".join(where) if where else "")
        if not plan.added:
            return sql + f" ORDER BY {'fts.rowid' if plan.match else 'm.rowid'} DESC LIMIT ? OFFSET ?", params
        # Messages a later copy added one of them to as a recipient: not in their exact tokens.
        added_where = [f"m.rowid IN (SELECT message FROM added_recipients WHERE address IN ({','.join('?' * len(plan.added))}))"]
        added_params: list = list(plan.added)
        if floor:
            added_where.append("m.rowid >= ?")
            added_params.append(floor)
        if plan.parsed.match:
            added_where.append("m.rowid IN (SELECT rowid FROM fts WHERE fts MATCH ?)")
            added_params.append(plan.parsed.match)
        sql = (f"{sql} UNION SELECT m.* FROM messages m WHERE {' AND '.join(added_where + list(plan.parsed.where))}"
               " AND involves(m.hdr_from, m.hdr_to, m.hdr_cc, m.env_to, ?) ORDER BY rowid DESC LIMIT ? OFFSET ?")
        return sql, params + added_params + list(plan.parsed.params) + ["\n".join(plan.added)]

    def _shard_rows(self, plan: "_Plan", shard: sqlite3.Row, page: int) -> Iterator[sqlite3.Row]:
        """The rows of one closed shard matching ``plan``, newest first: row ids from the shard's full text, a page
        at a time, then their metadata rows from the live database (``plan.where`` applied there)."""
        conn = self._shard_conn(shard)
        first, last = shard["first_rowid"], shard["last_rowid"]
        added: List[int] = []
        if plan.added:
            added = [r[0] for r in self.conn.execute(
                f"SELECT message FROM added_recipients WHERE address IN ({','.join('?' * len(plan.added))})"
                " AND message BETWEEN ? AND ?", list(plan.added) + [first, last])]
            if added and plan.parsed.match:
                added = [rowid for chunk in _chunks(added, 500) for (rowid,) in self._rows(
                    plan.query, f"SELECT rowid FROM fts WHERE fts MATCH ? AND rowid IN ({','.join('?' * len(chunk))})",
                    [plan.parsed.match] + chunk, conn)]
        below = last + 1
        while True:
            ids = [r[0] for r in self._rows(plan.query, "SELECT rowid FROM fts WHERE fts MATCH ? AND rowid < ? ORDER BY rowid DESC LIMIT ?",
                                            [plan.match, below, page], conn)]
            floor = ids[-1] if len(ids) == page else first
            ids = sorted(set(ids).union(a for a in added if floor <= a < below), reverse=True)
            for chunk in _chunks(ids, 500):
                where = " AND ".join([f"m.rowid IN ({','.join('?' * len(chunk))})"] + plan.where)
                yield from self._rows(plan.query, f"SELECT m.* FROM messages m WHERE {where} ORDER BY m.rowid DESC", chunk + plan.params)
            if floor == first:
                break
            below = floor
            page = min(page * 4, 5000)

    def _added_for(self, addresses: List[str]) -> bool:
        """Whether a later copy added one of these addresses to a message (then a search for them looks there too)."""
        try:
            return bool(self.conn.execute(f"SELECT 1 FROM added_recipients WHERE address IN ({','.join('?' * len(addresses))})"
                                          " LIMIT 1", addresses).fetchone())
        except sqlite3.OperationalError:  # an index no writer of this release has opened yet
            return False

    def _rows(self, query: str, sql: str, params: list, conn: Optional[sqlite3.Connection] = None) -> list:
        try:
            return (conn or self.conn).execute(sql, params).fetchall()
        except sqlite3.OperationalError as exc:
            raise StoreError(f"search {query!r}: {exc}") from None

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
            "index_shards": len(self.shards()),
        }

    def first_arrival(self) -> Optional[int]:
        row = self.conn.execute("SELECT arrived FROM messages ORDER BY rowid LIMIT 1").fetchone()
        return row[0] if row else None

    def expired(self, now: int) -> List[dict]:
        self._current()
        rows = self.conn.execute("SELECT * FROM messages WHERE retain_until < ? ORDER BY rowid", (now,)).fetchall()
        return [self._describe(r) for r in rows]

    def listing(self, since: int, until: int, after: str = "", limit: int = 1000) -> List[dict]:
        """Messages archived in [since, until), ordered by ID, resuming after ``after``.

        IDs begin with their TAI64N time, so this is a range scan on the ID.
        """
        self._current()
        rows = self.conn.execute(
            "SELECT id, sha256, message_id, arrived, size FROM messages"
            " WHERE id > ? AND id >= ? AND id < ? ORDER BY id LIMIT ?",
            (_blob(after, "after"), bytes.fromhex(ids.lower_bound(since)), bytes.fromhex(ids.lower_bound(until)), int(limit)),
        ).fetchall()
        return [{"id": r[0].hex(), "sha256": r[1].hex(), "message_id": r[2], "arrived": r[3], "size": r[4]} for r in rows]

    def all_ids(self) -> List[str]:
        self._current()
        return [r[0].hex() for r in self.conn.execute("SELECT id FROM messages ORDER BY rowid")]


def _phrase(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


class _Plan(NamedTuple):
    """A search as the index runs it: MATCH text (with the per-user narrowing), SQL conditions on ``m`` and their
    parameters, and the addresses whose added recipients it also looks at."""
    query: str
    parsed: "Query"
    match: str
    where: List[str]
    params: list
    added: List[str]


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _day(value: str, field: str) -> int:
    try:
        return int(datetime.datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=datetime.timezone.utc).timestamp())
    except ValueError:
        raise StoreError(f"search {field}: expected a date YYYY-MM-DD, found {value!r}") from None


class Query:
    """A query as FTS5 MATCH text, SQL conditions and their parameters, and the checks (phrases) the
    candidates must pass."""

    def __init__(self) -> None:
        self.terms: List[str] = []
        self.where: List[str] = []
        self.params: list = []
        self.checks: List[Callable] = []

    @property
    def match(self) -> str:
        return " AND ".join(self.terms)


def _word_term(word: str, tags: Iterable[str], prefix: bool = False) -> str:
    """FTS5 text matching ``word`` in any of the fields ``tags`` ("" is the body)."""
    star = " *" if prefix else ""
    alternatives = [_phrase(f"{TAG}{tag}{word}" if tag else word) + star for tag in tags]
    return alternatives[0] if len(alternatives) == 1 else "(" + " OR ".join(alternatives) + ")"


def _phrase_check(phrase: List[str], fields: Iterable[str]):
    """A check that ``phrase`` (folded words) appears, in order and adjacent, in one of the message's ``fields``
    ("text" is the body, through ``text_of``)."""
    def check(row: dict, text_of) -> bool:
        for field in fields:
            if field == "text":
                if text_of is None:
                    return True  # no text at hand (a bare index): the words matched, that is the answer
                value = text_of(row["id"])
            else:
                value = row[field] if isinstance(row[field], str) else " ".join(row[field])
            have = words(value)
            if any(have[i:i + len(phrase)] == phrase for i in range(len(have) - len(phrase) + 1)):
                return True
        return False
    return check


CHECK_FIELDS = {"from": ("hdr_from", "env_from"), "to": ("hdr_to", "hdr_cc", "env_to"), "subject": ("subject",),
                "body": ("text",), "attachment": ()}
ALL_FIELDS = ("subject", "hdr_from", "hdr_to", "hdr_cc", "env_to", "text")


def parse_query(query: str) -> Query:
    """Turn 'word from:x to:y subject:z after:2024-01-01' into FTS + SQL + phrase checks."""
    out = Query()
    for field, value in _TOKEN_RE.findall(query or ""):
        field = field.lower()
        quoted = len(value) >= 2 and value[0] == value[-1] == '"'
        value = value[1:-1] if quoted else value
        if not value:
            continue
        if field in FIELD_TAGS:
            if field in ("from", "to") and "@" in value and " " not in value.strip():
                out.terms.append(_phrase(exact("f" if field == "from" else "t", value)))
                continue
            if not quoted and value.endswith("*"):
                out.terms.append(_prefix_term(value, (FIELD_TAGS[field],)))
            else:
                _words(out, value, (FIELD_TAGS[field],), CHECK_FIELDS[field])
        elif field in ("msgid", "message-id"):
            bare = value.strip("<>")
            out.terms.append(_phrase(exact("m", bare)))
            out.where.append("m.message_id IN (?, ?)")
            out.params += [bare, f"<{bare}>"]
        elif field == "id":
            out.where.append("m.id = ?")
            out.params.append(_blob(value.lower(), "search id:"))
        elif field == "sha256":
            digest = _blob(value.lower(), "search sha256:")
            out.where.append("substr(m.sha256, 1, 8) = ? AND m.sha256 = ?")
            out.params += [digest[:8], digest]
        elif field in ("after", "since"):
            out.where.append("coalesce(m.date, m.arrived) >= ?")
            out.params.append(_day(value, field))
        elif field in ("before", "until"):
            out.where.append("coalesce(m.date, m.arrived) < ?")
            out.params.append(_day(value, field) + (86400 if field == "until" else 0))
        elif field:
            raise StoreError(f"search: unknown field {field!r}; expected from, to, subject, body, attachment, msgid, id, sha256, after, before")
        elif not quoted and value.endswith("*"):
            out.terms.append(_prefix_term(value, FIELD_TAGS.values()))
        else:
            _words(out, value, tuple(FIELD_TAGS.values()), ALL_FIELDS)
    return out


def _prefix_term(value: str, tags) -> str:
    stem = words(value[:-1])
    if len(stem) != 1:
        raise StoreError(f"search {value!r}: a prefix search takes the start of one word, as in invoic*")
    return _word_term(stem[0], tags, prefix=True)


def _words(out: Query, value: str, tags, check_fields) -> None:
    """Each word of ``value`` in one of the fields ``tags``; two or more also as a phrase, checked on the candidates."""
    folded = words(value)
    if not folded:
        return
    out.terms.extend(_word_term(word, tags) for word in folded)
    if len(folded) > 1 and check_fields:
        out.checks.append(_phrase_check(folded, check_fields))
