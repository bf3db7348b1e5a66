"""What every view needs: the database, the workers, the person logged in, CSRF and the audit trail."""

import functools
import hmac

from flask import abort, current_app, g, redirect, request, url_for

from archive_common import client, ids
from archive_web import db, trail


def database():
    if "db" not in g:
        g.db = db.connect(current_app.config["ARCHIVE"].database)
    return g.db


def close_database(_exc=None):
    conn = g.pop("db", None)
    if conn is not None:
        conn.close()


def settings():
    return current_app.config["ARCHIVE"]


def workers() -> list:
    """The site's workers as API clients (one per process: their kept-alive TLS connections are reused)."""
    return current_app.extensions["archive_workers"]


def worker_for(archive_id: str):
    """The worker that holds ``archive_id`` (its server_id is part of the ID), or 404."""
    if not ids.is_valid(archive_id or ""):
        abort(404)
    server_id = ids.server_id_of(archive_id)
    for api in workers():
        if api.server_id == server_id:
            return api
    abort(404)


def make_workers(config) -> list:
    return [client.ArchiveApi(w.name, w.url, config.token, timeout=config.api_timeout, server_id=w.server_id,
                              cafile=config.ca_file) for w in config.workers]


def audit(action: str, username: str = None, **detail) -> int:
    """Record ``action`` by the person logged in (or ``username``), from the request's address."""
    who = username if username is not None else (g.user.username if g.get("user") else "")
    return trail.record(database(), who, request.remote_addr or "", action, detail)


def require(*roles, mail=False):
    """Views for people logged in with one of ``roles``; ``mail``: the view shows mail, so a four-eyes
    auditor session must have been approved first."""
    def decorate(view):
        @functools.wraps(view)
        def wrapped(*args, **kwargs):
            user = g.get("user")
            if user is None:
                return redirect(url_for("auth.login", next=request.full_path if request.method == "GET" else None,
                                        expired=1 if g.get("session_expired") else None))
            if roles and not user.roles.intersection(roles):
                abort(403)
            if mail and not user.reads_mail:
                abort(403, description="This account has no mail addresses, so there is no mail it may see; "
                                       "ask an administrator to add yours.")
            if mail and not mail_allowed():
                return redirect(url_for("auth.pending"))
            return view(*args, **kwargs)
        return wrapped
    return decorate


def mail_allowed() -> bool:
    """False while a four-eyes auditor session waits for a second auditor's approval."""
    user = g.get("user")
    if user is None or not user.reads_mail:
        return False
    return not (settings().four_eyes and user.sees_all_mail and not g.session["approved_by"])


def check_csrf() -> None:
    """Every POST carries the session's CSRF token (or, for the login form, the login cookie's)."""
    sent = request.form.get("csrf", "")
    expected = g.session["csrf"] if g.get("session") else request.cookies.get("__Host-archive-login", "")
    if not expected or not hmac.compare_digest(sent, expected):
        abort(400, description="The form was stale or did not come from this site (CSRF check failed). Reload the page and try again.")


def csrf_token() -> str:
    return g.session["csrf"] if g.get("session") else g.get("login_csrf", "")
