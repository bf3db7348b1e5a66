"""Server-side sessions (only a hash of the cookie's token is stored) and the failed-login throttle."""

import hashlib
import secrets
import sqlite3
import time
from typing import Optional, Tuple

COOKIE = "__Host-archive-session"    # __Host-: Secure, Path=/, no Domain; the browser enforces it
LOGIN_COOKIE = "__Host-archive-login"  # the login form's CSRF token, before there is a session
WINDOW_SECONDS = 60


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def start(conn: sqlite3.Connection, user_id: int, address: str, approved_by: Optional[str] = None) -> str:
    """A new session for ``user_id``; returns the cookie's token."""
    token, now = secrets.token_urlsafe(32), time.time()
    conn.execute("INSERT INTO sessions (token_hash, user, csrf, address, created, last_seen, approved_by, approval_code)"
                 " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                 (_hash(token), user_id, secrets.token_urlsafe(32), address, now, now, approved_by,
                  "%06d" % secrets.randbelow(10 ** 6)))
    return token


def find(conn: sqlite3.Connection, token: str, idle_seconds: int, max_seconds: int) -> Tuple[Optional[sqlite3.Row], str]:
    """The live session for ``token`` (touched now), or None and why: 'expired' or ''."""
    if not token:
        return None, ""
    now = time.time()
    row = conn.execute("SELECT * FROM sessions WHERE token_hash = ?", (_hash(token),)).fetchone()
    if row is None:
        return None, ""
    if now - row["last_seen"] > idle_seconds or now - row["created"] > max_seconds:
        conn.execute("DELETE FROM sessions WHERE token_hash = ?", (row["token_hash"],))
        return None, "expired"
    conn.execute("UPDATE sessions SET last_seen = ? WHERE token_hash = ?", (now, row["token_hash"]))
    return row, ""


def end(conn: sqlite3.Connection, token: str) -> None:
    conn.execute("DELETE FROM sessions WHERE token_hash = ?", (_hash(token or ""),))


def pending_approval(conn: sqlite3.Connection, idle_seconds: int):
    """Auditor sessions waiting for a second auditor (four-eyes), newest first."""
    return conn.execute("SELECT s.token_hash, s.address, s.created, s.approval_code, u.username FROM sessions s"
                        " JOIN users u ON u.id = s.user WHERE s.approved_by IS NULL AND s.last_seen > ?"
                        " ORDER BY s.created DESC", (time.time() - idle_seconds,)).fetchall()


def approve(conn: sqlite3.Connection, token_hash: str, approver: str, approver_id: int) -> Optional[str]:
    """Approve another person's session; returns that person's username, or None if there is no such session."""
    row = conn.execute("SELECT u.username FROM sessions s JOIN users u ON u.id = s.user"
                       " WHERE s.token_hash = ? AND s.approved_by IS NULL AND s.user != ?", (token_hash, approver_id)).fetchone()
    if row is None:
        return None
    conn.execute("UPDATE sessions SET approved_by = ? WHERE token_hash = ?", (approver, token_hash))
    return row["username"]


def locked_for(conn: sqlite3.Connection, username: str, address: str, limit: int, lockout_seconds: int) -> int:
    """Seconds left before ``username`` or ``address`` may try again: ``limit`` failures within a minute lock
    both out until ``lockout_seconds`` after the last of them."""
    now = time.time()
    since = now - WINDOW_SECONDS - lockout_seconds
    until = 0.0
    for column, value in (("username", username), ("address", address)):
        times = [r[0] for r in conn.execute(f"SELECT time FROM login_failures WHERE {column} = ? AND time > ? ORDER BY time",
                                            (value, since))]
        for first, last in zip(times, times[limit - 1:]):
            if last - first <= WINDOW_SECONDS:
                until = max(until, last + lockout_seconds)
    return max(0, int(until - now + 0.999))


def failed(conn: sqlite3.Connection, username: str, address: str) -> None:
    now = time.time()
    conn.execute("INSERT INTO login_failures (time, username, address) VALUES (?, ?, ?)", (now, username, address))
    conn.execute("DELETE FROM login_failures WHERE time < ?", (now - 86400,))
