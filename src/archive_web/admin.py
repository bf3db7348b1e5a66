"""Administration: accounts (administrators) and legal holds (administrators and auditors)."""

from concurrent.futures import ThreadPoolExecutor

from flask import Blueprint, redirect, render_template, request, url_for

from archive_common.client import ArchiveApiError
from archive_web import users
from archive_web.context import audit, database, require, workers

bp = Blueprint("admin", __name__)


@bp.route("/admin/users", methods=["GET", "POST"])
@require("admin")
def users_page():
    conn, error = database(), None
    if request.method == "POST":
        username = request.form.get("username", "").strip()
        try:
            changes = users.save(
                conn, username, request.form.getlist("role"),
                request.form.get("addresses", "").replace(",", "\n").split("\n"),
                password=request.form.get("password") or None, disabled=bool(request.form.get("disabled")))
        except users.UserError as exc:
            error = str(exc)
        else:
            if changes:
                audit("user_add" if changes.get("created") else "user_change", user=username,
                      changes={k: v for k, v in changes.items() if k != "created"})
            return redirect(url_for("admin.users_page"))
    return render_template("users.html", users=users.all_users(conn), roles=users.ROLES, error=error,
                           edit=users.get(conn, request.args.get("edit", "")) if request.args.get("edit") else None), 400 if error else 200


def _fan_out(call):
    """Run ``call(api)`` on every worker; ({worker: answer}, {worker: error})."""
    answers, failed = {}, {}
    with ThreadPoolExecutor(max_workers=len(workers())) as pool:
        for api, future in [(api, pool.submit(call, api)) for api in workers()]:
            try:
                answers[api.name] = future.result()
            except ArchiveApiError as exc:
                failed[api.name] = str(exc)
    return answers, failed


@bp.route("/holds", methods=["GET", "POST"])
@require("admin", "auditor")
def holds_page():
    error = None
    if request.method == "POST":
        address, reason = request.form.get("address", "").strip(), request.form.get("reason", "").strip()
        remove = request.form.get("action") == "remove"
        if not address or not reason:
            error = "A hold needs an address and a reason."
        else:
            answers, failed = _fan_out(lambda api: api.hold(address, reason, remove=remove))
            audit("hold_remove" if remove else "hold_add", address=address, reason=reason, workers=sorted(answers),
                  failed=failed or None)
            if failed:
                error = "Not every worker took the change; try again when they answer: " + "; ".join(failed.values())
            else:
                return redirect(url_for("admin.holds_page"))
    answers, failed = _fan_out(lambda api: api.holds())
    by_address = {}
    for worker, holds in answers.items():
        for address, hold in holds.items():
            by_address.setdefault(address, dict(hold, address=address, workers=[]))["workers"].append(worker)
    return render_template("holds.html", holds=[by_address[a] for a in sorted(by_address)],
                           all_workers=[api.name for api in workers()], failed=failed, error=error), 400 if error else 200
