"""Search every worker of the site at once; merged results newest first, 50 a page, to any depth."""

import base64
import binascii
import json
import re

from flask import Blueprint, abort, g, render_template, request, url_for

from archive_common import client
from archive_web.context import audit, require, workers

bp = Blueprint("search", __name__)
PAGE = 50
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def store_query(args) -> str:
    """The store's query: the search box, with the date-range fields as after:/before: terms."""
    text = args.get("q", "").strip()
    for field in ("after", "before"):
        day = args.get(field, "").strip()
        if day:
            if not _DAY.match(day):
                raise ValueError(f"The {field} date must look like 2026-11-23, not {day!r}.")
            text += f" {field}:{day}"
    return text.strip()


def participants_of(user) -> tuple:
    """The addresses a user's searches are limited to; () for auditors, who see all mail of the site."""
    return () if user.sees_all_mail else user.addresses


def encode_positions(positions: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(positions, sort_keys=True, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_positions(text: str) -> dict:
    if not text:
        return {}
    try:
        positions = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (ValueError, binascii.Error):
        positions = None
    if not isinstance(positions, dict) or not all(isinstance(k, str) and isinstance(v, int) and v >= 0 for k, v in positions.items()):
        abort(400, description="The page link is damaged; start the search again from the first page.")
    return positions


@bp.route("/search")
@require("user", "auditor", mail=True)
def search():
    args = request.args
    wanted = {"q": args.get("q", ""), "after": args.get("after", ""), "before": args.get("before", "")}
    as_json = args.get("format") == "json"
    if not any(wanted.values()) and not args.get("all"):
        return render_template("search.html", form=wanted, rows=None)
    try:
        query = store_query(args)
    except ValueError as exc:
        return _refused(wanted, str(exc), as_json)
    positions = decode_positions(args.get("pos", ""))
    start = sum(positions.values())
    try:
        rows, after, more, failed = client.search_page(workers(), query, positions, PAGE, participants_of(g.user))
    except client.ArchiveApiError as exc:
        if exc.status != 400:
            raise
        audit("search", query=query, results=0, refused=exc.reason)
        return _refused(wanted, f"The archive could not run this search: {exc.reason}", as_json)
    audit("search", query=query, start=start, results=len(rows), ids=[r["id"] for r in rows],
          incomplete=sorted(failed) or None)
    next_url = url_for("search.search", **wanted, pos=encode_positions(after), format="json" if as_json else None) if more else None
    if as_json:
        return {"query": query, "start": start, "results": rows, "next": next_url, "incomplete": failed}
    return render_template("search.html", form=wanted, rows=rows, start=start, next_url=next_url, failed=failed,
                           first_url=url_for("search.search", **wanted) if start else None)


def _refused(form, message, as_json):
    if as_json:
        return {"error": message, "status": 400}, 400
    return render_template("search.html", form=form, rows=None, error=message), 400
