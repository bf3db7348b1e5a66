"""Logging in and out (local accounts, or LDAP when configured), the throttle, and four-eyes approval."""

import secrets
from urllib.parse import urlsplit

from flask import Blueprint, abort, g, make_response, redirect, render_template, request, url_for

from archive_web import ldap_login, sessions, users
from archive_web.context import audit, check_csrf, database, require, settings

bp = Blueprint("auth", __name__)


def load_session():
    """Before every request: the person behind the session cookie, and the CSRF check of every POST."""
    g.user, g.session = None, None
    row, why = sessions.find(database(), request.cookies.get(sessions.COOKIE, ""), settings().session_idle_seconds,
                             settings().session_max_seconds)
    if row is not None:
        user = users.get(database(), user_id=row["user"])
        if user is not None and not user.disabled:
            g.user, g.session = user, row
    g.session_expired = why == "expired"
    if request.method == "POST":
        check_csrf()


def _safe_next(target: str) -> str:
    """Only paths of this site: a login must never redirect elsewhere."""
    parts = urlsplit(target or "")
    if parts.scheme or parts.netloc or not (target or "").startswith("/") or target.startswith("//"):
        return url_for("search.search")
    return target


def _login_page(message="", status=200, username=""):
    g.login_csrf = secrets.token_urlsafe(32)
    response = make_response(render_template("login.html", message=message, username=username,
                                             next=request.values.get("next", ""), expired=request.args.get("expired")), status)
    response.set_cookie(sessions.LOGIN_COOKIE, g.login_csrf, secure=True, httponly=True, samesite="Strict", path="/")
    return response


@bp.route("/login", methods=["GET", "POST"])
def login():
    if request.method == "GET":
        return _login_page()
    username = request.form.get("username", "").strip()
    password = request.form.get("password", "")
    config, conn, address = settings(), database(), request.remote_addr or ""
    wait = sessions.locked_for(conn, username, address, config.login_failures, config.lockout_seconds)
    if wait:
        audit("login_throttled", username=username, retry_after=wait)
        response = _login_page(f"Too many failed logins. Try again in {wait} seconds.", 429, username)
        response.headers["Retry-After"] = str(wait)
        return response
    user, how = _authenticate(conn, username, password)
    if user is None:
        sessions.failed(conn, username, address)
        audit("login_failed", username=username, reason=how)
        return _login_page(how if how.startswith("LDAP") else "Wrong username or password.", 401, username)
    token = sessions.start(conn, user.id, address)
    audit("login", username=user.username, method=how, roles=sorted(user.roles))
    response = redirect(_safe_next(request.form.get("next", "")))
    response.set_cookie(sessions.COOKIE, token, secure=True, httponly=True, samesite="Strict", path="/")
    response.delete_cookie(sessions.LOGIN_COOKIE, secure=True, httponly=True, samesite="Strict", path="/")
    return response


def _authenticate(conn, username, password):
    """(user, method) on success; (None, reason) otherwise. Local accounts first, then LDAP."""
    user = users.get(conn, username) if username else None
    if user is not None and user.source != "ldap":
        if users.password_matches(users.stored_hash(conn, username), password):
            return user, "password"
        return None, "wrong password" if not user.disabled else "account disabled"
    ldap = settings().ldap
    if ldap is None or (user is not None and user.disabled):
        users.password_matches(None, password)  # the same cost as a real check
        return None, "no such user" if user is None else "account disabled"
    try:
        found = ldap_login.authenticate(ldap, username, password)
    except ldap_login.LdapError as exc:
        return None, f"{exc} (try again later)"
    if found is None:
        return None, "LDAP refused the bind"
    users.save(conn, username, found["roles"], found["addresses"], source="ldap")
    return users.get(conn, username), "ldap"


@bp.route("/logout", methods=["POST"])
def logout():
    if g.user is not None:
        audit("logout")
    sessions.end(database(), request.cookies.get(sessions.COOKIE, ""))
    response = redirect(url_for("auth.login"))
    response.delete_cookie(sessions.COOKIE, secure=True, httponly=True, samesite="Strict", path="/")
    return response


@bp.route("/")
def index():
    if g.user is None:
        return redirect(url_for("auth.login"))
    if not g.user.reads_mail:
        return redirect(url_for("admin.users_page"))
    return redirect(url_for("search.search"))


@bp.route("/pending")
@require()
def pending():
    """Four-eyes: the auditor waits here until a second auditor approves this session."""
    if g.session["approved_by"] or not (settings().four_eyes and g.user.sees_all_mail):
        return redirect(url_for("search.search"))
    return render_template("pending.html", code=g.session["approval_code"])


@bp.route("/approvals", methods=["GET", "POST"])
@require("auditor", mail=True)
def approvals():
    conn = database()
    if request.method == "POST":
        approved = sessions.approve(conn, request.form.get("session", ""), g.user.username, g.user.id)
        if approved is None:
            abort(404, description="No such session is waiting for approval (or it is your own).")
        audit("approve", approved=approved)
        return redirect(url_for("auth.approvals"))
    waiting = [row for row in sessions.pending_approval(conn, settings().session_idle_seconds) if row["username"] != g.user.username]
    return render_template("approvals.html", waiting=waiting)
