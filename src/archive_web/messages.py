"""Read one message: headers, text, sanitised HTML in a sandboxed frame, attachments, and the original."""

import base64
import hashlib
import re

from flask import Blueprint, Response, abort, g, render_template, request

from archive_common import participants
from archive_common.client import ArchiveApiError
from archive_web import mail
from archive_web.context import audit, require, worker_for

bp = Blueprint("messages", __name__)
# The frame's own policy: nothing runs, nothing loads (images only from data: URIs in the mail itself).
FRAME_POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; sandbox; base-uri 'none'; form-action 'none'"


def fetch(archive_id: str, action: str, **detail):
    """The message's metadata and bytes, if the person may see it; otherwise 404, and the attempt is audited."""
    api = worker_for(archive_id)
    try:
        meta = api.get_json(f"/api/v1/messages/{archive_id}?raw=1")
    except ArchiveApiError as exc:
        if exc.status == 404:
            audit("not_found", id=archive_id, wanted=action)
            abort(404)
        raise
    if not g.user.sees_all_mail and not participants.involves(meta, g.user.addresses):
        audit("denied", id=archive_id, wanted=action)
        abort(404)  # the same answer as for a message that does not exist
    raw = base64.b64decode(meta.pop("raw_b64"))
    meta["verified"] = hashlib.sha256(raw).hexdigest() == meta["sha256"]
    meta["worker"] = api.name
    audit(action, id=archive_id, worker=api.name, **detail)
    return meta, raw


def _download(data: bytes, filename: str, content_type: str) -> Response:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", filename)[:120] or "download"
    response = Response(data, content_type=content_type)
    response.headers["Content-Disposition"] = f'attachment; filename="{safe}"'
    return response


@bp.route("/messages/<archive_id>")
@require("user", "auditor", mail=True)
def message(archive_id):
    meta, raw = fetch(archive_id, "view")
    shown = mail.show(raw)
    if request.args.get("format") == "json":
        return {"message": meta, "headers": shown.headers, "text": shown.text,
                "attachments": [vars(a) for a in shown.attachments]}
    return render_template("message.html", meta=meta, shown=shown)


@bp.route("/messages/<archive_id>/html")
@require("user", "auditor", mail=True)
def html_body(archive_id):
    _meta, raw = fetch(archive_id, "view_html")
    response = Response(mail.sanitised_html(raw), content_type="text/html; charset=utf-8")
    response.headers["Content-Security-Policy"] = FRAME_POLICY
    response.headers["X-Frame-Options"] = "SAMEORIGIN"
    return response


@bp.route("/messages/<archive_id>/original")
@require("user", "auditor", mail=True)
def original(archive_id):
    _meta, raw = fetch(archive_id, "download")
    return _download(raw, f"{archive_id}.eml", "message/rfc822")


@bp.route("/messages/<archive_id>/attachments/<int:index>")
@require("user", "auditor", mail=True)
def attachment(archive_id, index):
    _meta, raw = fetch(archive_id, "attachment", part=index)
    found = mail.attachment(raw, index)
    if found is None:
        abort(404)
    name, data = found
    return _download(data, name, "application/octet-stream")  # never rendered by the browser
