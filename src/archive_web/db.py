"""The interface's own SQLite database (WAL): users, sessions, failed logins and the audit trail.

It holds no mail: messages are fetched from the workers when a person asks for them.
"""

import sqlite3
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    password TEXT,                      -- argon2id hash; NULL for LDAP accounts
    roles TEXT NOT NULL,                -- comma-separated: user, auditor, admin
    source TEXT NOT NULL DEFAULT 'local',
    disabled INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS addresses (
    user INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    address TEXT NOT NULL,
    PRIMARY KEY (user, address)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sessions (
    token_hash TEXT PRIMARY KEY,
    user INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    csrf TEXT NOT NULL,
    address TEXT NOT NULL,
    created REAL NOT NULL,
    last_seen REAL NOT NULL,
    approved_by TEXT,                   -- four-eyes: the auditor who approved this session
    approval_code TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS login_failures (
    time REAL NOT NULL,
    username TEXT NOT NULL,
    address TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS login_failures_time ON login_failures (time);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY,
    time REAL NOT NULL,
    username TEXT NOT NULL,
    address TEXT NOT NULL,
    action TEXT NOT NULL,
    detail TEXT NOT NULL,               -- JSON
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_user ON audit (username, seq);
CREATE INDEX IF NOT EXISTS audit_action ON audit (action, seq);
"""


def connect(path: Path, create: bool = False) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit); ``create``: make the database (WAL, which
    the file keeps) and its schema first. The application does that once at start-up, not per request."""
    conn = sqlite3.connect(str(path), isolation_level=None, timeout=15, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    if create:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(SCHEMA)
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn
