"""The archive's web interface: search, read and export mail across the site's workers, with
per-user access and an audit trail of every access.  See README.md."""

import datetime
import logging
import os
import time

from flask import Flask, g, render_template, request
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from archive_common.client import ArchiveApiError

__version__ = "1.0.0"
DEFAULT_CONFIG = "/etc/archive-web/web.conf"

# The pages run no script and load nothing from elsewhere; mail's HTML is shown in a sandboxed frame
# served by messages.html_body under an even stricter policy.
CONTENT_SECURITY_POLICY = ("default-src 'none'; style-src 'self'; img-src 'self'; frame-src 'self'; form-action 'self'; "
                           "frame-ancestors 'none'; base-uri 'none'")


def create_app(config=None) -> Flask:
    """The application: ``config`` is a config.Config, or read from $ARCHIVE_WEB_CONFIG or /etc/archive-web/web.conf."""
    from archive_web import admin, audit, auth, config as configuration, context, db, export, messages, search

    if config is None:
        config = configuration.load(os.environ.get("ARCHIVE_WEB_CONFIG", DEFAULT_CONFIG))
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    app = Flask(__name__)
    app.config.update(ARCHIVE=config, MAX_CONTENT_LENGTH=1 << 20, SESSION_COOKIE_SECURE=True)
    # nginx on the same host is the only client: it sets the client's address and the scheme.
    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1)
    app.extensions["archive_workers"] = context.make_workers(config)
    db.connect(config.database, create=True).close()  # the schema, once, before the first request
    for blueprint in (auth.bp, search.bp, messages.bp, export.bp, audit.bp, admin.bp):
        app.register_blueprint(blueprint)
    app.teardown_appcontext(context.close_database)
    app.before_request(_start_clock)
    app.before_request(auth.load_session)
    app.after_request(_security_headers)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(ArchiveApiError, _worker_error)
    app.jinja_env.filters.update(size=_size, when=_when)
    app.jinja_env.globals.update(csrf_token=context.csrf_token, site_name=config.site_name, version=__version__)
    return app


def _start_clock():
    g.started = time.perf_counter()


def _security_headers(response):
    # The server's own time (to the first byte of a streamed export), for bench/ui.py and browsers' tools.
    response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - g.get('started', time.perf_counter())) * 1000:.1f}"
    response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers["Cache-Control"] = "no-store"
    return response


def _http_error(exc: HTTPException):
    if request.args.get("format") == "json":
        return {"error": exc.description, "status": exc.code}, exc.code
    return render_template("error.html", code=exc.code, title=exc.name, message=exc.description), exc.code


def _worker_error(exc: ArchiveApiError):
    logging.getLogger("archive_web").warning("%s %s: %s", request.method, request.path, exc)
    message = f"A worker did not answer as expected, so nothing is shown rather than something incomplete: {exc}"
    if request.args.get("format") == "json":
        return {"error": message, "status": 502}, 502
    return render_template("error.html", code=502, title="Worker unavailable", message=message), 502


def _size(value) -> str:
    value = float(value or 0)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return ""


def _when(value) -> str:
    if not value:
        return ""
    return datetime.datetime.fromtimestamp(float(value), datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
