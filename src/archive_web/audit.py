"""The audit trail for auditors: filtered by user, action and date, paged, and as CSV."""

import calendar
import csv
import io
import json
import time

from flask import Blueprint, Response, abort, render_template, request, stream_with_context, url_for

from archive_web import trail
from archive_web.context import audit, database, require

bp = Blueprint("audit", __name__)
PAGE = 100


def _day(field: str) -> float:
    value = request.args.get(field, "").strip()
    if not value:
        return 0
    try:
        return calendar.timegm(time.strptime(value, "%Y-%m-%d")) + (86400 if field == "until" else 0)
    except ValueError:
        abort(400, description=f"The {field} date must look like 2026-11-23, not {value!r}.")


def _filters() -> dict:
    return {"username": request.args.get("user", "").strip(), "action": request.args.get("action", "").strip(),
            "since": _day("since"), "until": _day("until")}


@bp.route("/audit")
@require("auditor", mail=True)
def trail_page():
    filters = _filters()
    try:
        before = int(request.args.get("before", "0") or 0)
    except ValueError:
        abort(400, description="The page link is damaged; start again from the first page.")
    rows = trail.entries(database(), before_seq=before, limit=PAGE, **filters)
    form = {k: request.args.get(k, "") for k in ("user", "action", "since", "until")}
    next_url = url_for("audit.trail_page", **form, before=rows[-1]["seq"]) if len(rows) == PAGE else None
    if request.args.get("format") == "json":
        return {"entries": rows, "next": next_url}
    broken = trail.verify(database()) if request.args.get("verify") else None
    return render_template("audit.html", rows=rows, form=form, next_url=next_url, checked=bool(request.args.get("verify")),
                           broken=broken, csv_url=url_for("audit.trail_csv", **form))


@bp.route("/audit.csv")
@require("auditor", mail=True)
def trail_csv():
    filters = _filters()
    audit("audit_download", **{k: v for k, v in filters.items() if v})

    def rows():
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["seq", "time_utc", "user", "address", "action", "detail", "hash"])
        for entry in trail.iterate(database(), **filters):
            writer.writerow([entry["seq"], time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(entry["time"])), entry["username"],
                             entry["address"], entry["action"], json.dumps(entry["detail"], sort_keys=True), entry["hash"]])
            if out.tell() > 65536:
                yield out.getvalue().encode("utf-8")
                out.seek(0)
                out.truncate()
        yield out.getvalue().encode("utf-8")

    response = Response(stream_with_context(rows()), content_type="text/csv; charset=utf-8")
    response.headers["Content-Disposition"] = 'attachment; filename="audit-trail.csv"'
    return response
