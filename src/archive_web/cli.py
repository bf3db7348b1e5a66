"""The command on the UI host: manage accounts and check the audit trail.

    python3 -m archive_web [-c web.conf] users list
    python3 -m archive_web users add NAME --role auditor [--address a@b ...]   (password on stdin or asked)
    python3 -m archive_web users disable NAME | enable NAME | remove NAME
    python3 -m archive_web users sync [--prune] < users.json   (the ui role: declared accounts, JSON on stdin)
    python3 -m archive_web audit verify

Changes are recorded in the audit trail as made by ``cli:<unix user>``.  Faults are one line on
stderr and exit status 1 (2 for a broken audit trail).
"""

import argparse
import getpass
import json
import os
import pwd
import sys

from archive_web import DEFAULT_CONFIG, config as configuration, db, trail, users


def _who() -> str:
    try:
        return "cli:" + pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return f"cli:{os.getuid()}"


def _password(args) -> str:
    if sys.stdin.isatty():
        first, second = getpass.getpass("Password: "), getpass.getpass("Again: ")
        if first != second:
            raise users.UserError("password: the two entries differ")
        return first
    return sys.stdin.readline().rstrip("\n")


def _record(conn, action, **detail):
    trail.record(conn, _who(), "local", action, detail)


def _sync(conn, args) -> dict:
    """Apply the declared accounts (a JSON list on stdin); with --prune, remove declared accounts no longer listed."""
    try:
        declared = json.load(sys.stdin)
    except ValueError as exc:
        raise users.UserError(f"users sync: expected a JSON list of accounts on stdin, found invalid JSON ({exc})") from None
    if not isinstance(declared, list):
        raise users.UserError("users sync: expected a JSON list of accounts on stdin")
    report = {}
    for entry in declared:
        name = entry.get("username", "")
        changes = users.save(conn, name, entry.get("roles", ["user"]), entry.get("addresses", []), password=entry.get("password"),
                             source="inventory", disabled=bool(entry.get("disabled", False)))
        if changes.get("created"):
            report[name] = ["created"]
            _record(conn, "user_add", user=name, roles=sorted(entry.get("roles", ["user"])), addresses=entry.get("addresses", []))
        elif changes:
            report[name] = sorted(changes)
            _record(conn, "user_change", user=name, changes=changes)
    if args.prune:
        names = {entry.get("username") for entry in declared}
        for user in users.all_users(conn):
            if user.source == "inventory" and user.username not in names:
                users.remove(conn, user.username)
                report[user.username] = ["removed"]
                _record(conn, "user_remove", user=user.username)
    return {"changed": bool(report), "users": report}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="archive_web", description="Manage the web interface's accounts and audit trail.")
    parser.add_argument("-c", "--config", default=os.environ.get("ARCHIVE_WEB_CONFIG", DEFAULT_CONFIG))
    sub = parser.add_subparsers(dest="area", required=True)
    user_cmd = sub.add_parser("users").add_subparsers(dest="command", required=True)
    user_cmd.add_parser("list")
    add = user_cmd.add_parser("add")
    add.add_argument("username")
    add.add_argument("--role", action="append", choices=users.ROLES, required=True)
    add.add_argument("--address", action="append", default=[])
    for name in ("disable", "enable", "remove"):
        user_cmd.add_parser(name).add_argument("username")
    user_cmd.add_parser("sync").add_argument("--prune", action="store_true")
    sub.add_parser("audit").add_subparsers(dest="command", required=True).add_parser("verify")
    args = parser.parse_args(argv)
    try:
        settings = configuration.load(args.config)
        conn = db.connect(settings.database, create=True)
        return _run(conn, args)
    except (configuration.ConfigError, users.UserError) as exc:
        print(f"archive_web: {exc}", file=sys.stderr)
        return 1


def _run(conn, args) -> int:
    if args.area == "audit":
        broken = trail.verify(conn)
        if broken:
            print(broken, file=sys.stderr)
            return 2
        count = conn.execute("SELECT count(*) FROM audit").fetchone()[0]
        print(f"audit trail whole: {count} entries, each chained to the one before")
        return 0
    if args.command == "list":
        for user in users.all_users(conn):
            print(f"{user.username}\t{','.join(sorted(user.roles))}\t{','.join(user.addresses)}\t{user.source}"
                  f"{chr(9) + 'disabled' if user.disabled else ''}")
        return 0
    if args.command == "sync":
        print(json.dumps(_sync(conn, args), sort_keys=True))
        return 0
    if args.command == "add":
        if users.get(conn, args.username):
            raise users.UserError(f"user {args.username}: already exists")
        users.save(conn, args.username, args.role, args.address, password=_password(args))
        _record(conn, "user_add", user=args.username, roles=sorted(args.role), addresses=args.address)
        return 0
    user = users.get(conn, args.username)
    if user is None:
        raise users.UserError(f"user {args.username}: no such account")
    if args.command == "remove":
        users.remove(conn, args.username)
        _record(conn, "user_remove", user=args.username)
    else:
        changes = users.save(conn, user.username, user.roles, user.addresses, source=user.source, disabled=args.command == "disable")
        if changes:
            _record(conn, "user_change", user=args.username, changes=changes)
    return 0
