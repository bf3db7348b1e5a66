"""Accounts: local users with argon2id passwords, or LDAP users known by a bind; their roles and addresses.

Roles:
    user     searches and reads the mail one of their own addresses took part in
    auditor  searches and reads all mail of the site, sees the audit trail, manages legal holds
    admin    manages users and legal holds; sees no mail unless also an auditor
"""

import re
import sqlite3
import time
from dataclasses import dataclass
from typing import Iterable, Optional

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHash, VerificationError

from archive_common import participants

ROLES = ("user", "auditor", "admin")
MIN_PASSWORD_CHARS = 12
_USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$")
_hasher = PasswordHasher()  # argon2id, with the library's current recommended cost
# Verifying against this hash when the user does not exist costs the same time as a real check,
# so the response time does not tell an attacker which usernames exist.
_DUMMY_HASH = _hasher.hash("not a real password, only the cost of checking one")


class UserError(ValueError):
    """One line saying what was expected and what was found."""


@dataclass(frozen=True)
class User:
    id: int
    username: str
    roles: frozenset
    addresses: tuple
    source: str
    disabled: bool

    @property
    def sees_all_mail(self) -> bool:
        return "auditor" in self.roles

    @property
    def reads_mail(self) -> bool:
        return "auditor" in self.roles or ("user" in self.roles and bool(self.addresses))


def check_username(username: str) -> str:
    if not _USERNAME.match(username or ""):
        raise UserError(f"username: expected letters, digits and . _ @ - (at most 128), found {username!r}")
    return username


def check_roles(roles: Iterable[str]) -> frozenset:
    wanted = frozenset(r.strip() for r in roles if r.strip())
    unknown = sorted(wanted - set(ROLES))
    if unknown or not wanted:
        raise UserError(f"roles: expected one or more of {', '.join(ROLES)}, found {', '.join(unknown) or 'none'}")
    return wanted


def check_addresses(addresses: Iterable[str]) -> tuple:
    found = []
    for address in addresses:
        address = participants.normalise(address)
        if not address:
            continue
        if address.count("@") != 1 or " " in address:
            raise UserError(f"address: expected an email address such as alice@example.com, found {address!r}")
        if address not in found:
            found.append(address)
    if len(found) > participants.MAX_ADDRESSES:
        raise UserError(f"addresses: expected at most {participants.MAX_ADDRESSES}, found {len(found)}")
    return tuple(found)


def hash_password(password: str) -> str:
    if len(password or "") < MIN_PASSWORD_CHARS:
        raise UserError(f"password: expected at least {MIN_PASSWORD_CHARS} characters, found {len(password or '')}")
    return _hasher.hash(password)


def password_matches(stored: Optional[str], password: str) -> bool:
    try:
        return _hasher.verify(stored or _DUMMY_HASH, password) and stored is not None
    except (VerificationError, InvalidHash):
        return False


def _load(conn: sqlite3.Connection, row) -> Optional[User]:
    if row is None:
        return None
    addresses = tuple(r[0] for r in conn.execute("SELECT address FROM addresses WHERE user = ? ORDER BY address", (row["id"],)))
    return User(row["id"], row["username"], frozenset(row["roles"].split(",")), addresses, row["source"], bool(row["disabled"]))


def get(conn: sqlite3.Connection, username: str = None, user_id: int = None) -> Optional[User]:
    if user_id is not None:
        return _load(conn, conn.execute("SELECT * FROM users WHERE id = ?", (user_id,)).fetchone())
    return _load(conn, conn.execute("SELECT * FROM users WHERE username = ?", (username,)).fetchone())


def all_users(conn: sqlite3.Connection) -> list:
    return [_load(conn, row) for row in conn.execute("SELECT * FROM users ORDER BY username")]


def stored_hash(conn: sqlite3.Connection, username: str) -> Optional[str]:
    row = conn.execute("SELECT password FROM users WHERE username = ? AND disabled = 0", (username,)).fetchone()
    return row["password"] if row else None


def save(conn: sqlite3.Connection, username: str, roles: Iterable[str], addresses: Iterable[str] = (),
         password: Optional[str] = None, source: str = "local", disabled: bool = False) -> dict:
    """Create or update an account; returns what changed (empty when nothing did).

    A password given is hashed only when it differs from the stored one, so that applying the
    same declaration twice changes nothing.
    """
    username, roles, addresses = check_username(username), check_roles(roles), check_addresses(addresses)
    before = get(conn, username)
    changes = {}
    conn.execute("BEGIN IMMEDIATE")
    try:
        if before is None:
            if source == "local" and password is None:
                raise UserError(f"user {username}: a new local account needs a password")
            conn.execute("INSERT INTO users (username, password, roles, source, disabled, created) VALUES (?, ?, ?, ?, ?, ?)",
                         (username, hash_password(password) if password is not None else None, ",".join(sorted(roles)),
                          source, int(disabled), time.time()))
            changes["created"] = True
        else:
            if before.roles != roles:
                changes["roles"] = sorted(roles)
            if before.disabled != disabled:
                changes["disabled"] = disabled
            current = conn.execute("SELECT password FROM users WHERE id = ?", (before.id,)).fetchone()[0]
            if password is not None and not password_matches(current, password):
                conn.execute("UPDATE users SET password = ? WHERE id = ?", (hash_password(password), before.id))
                changes["password"] = "changed"
            conn.execute("UPDATE users SET roles = ?, disabled = ?, source = ? WHERE id = ?",
                         (",".join(sorted(roles)), int(disabled), source, before.id))
        user_id = conn.execute("SELECT id FROM users WHERE username = ?", (username,)).fetchone()[0]
        if before is None or set(before.addresses) != set(addresses):
            conn.execute("DELETE FROM addresses WHERE user = ?", (user_id,))
            conn.executemany("INSERT INTO addresses (user, address) VALUES (?, ?)", [(user_id, a) for a in addresses])
            if before is not None:
                changes["addresses"] = list(addresses)
        if disabled or "password" in changes or "roles" in changes:
            conn.execute("DELETE FROM sessions WHERE user = ?", (user_id,))  # changed rights take effect at once
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return changes


def remove(conn: sqlite3.Connection, username: str) -> bool:
    return conn.execute("DELETE FROM users WHERE username = ?", (username,)).rowcount > 0
