"""Export selected messages, or every match of a query, as a zip of .eml files or as one mbox file.

The export is streamed: messages are fetched from the workers a few at a time and written out at
once, so the interface's memory does not grow with the export and no mail touches its disk.

    zip       <archive ID>.eml for each message, exactly as archived, then manifest.csv
    mbox      mboxrd (a ">" added to lines starting with ">*From "), LF line endings
    manifest  manifest.csv alone (from the metadata; no mail is read)

manifest.csv lists archive_id, sha256, message_id, worker, size and, for the mail exported,
whether its bytes hashed to the stored sha256.  A worker that stops answering part-way
aborts the download (the transfer ends without its last chunk, so the browser reports it
failed) and the audit trail records the export as incomplete.
"""

import csv
import hashlib
import io
import re
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor

from flask import Blueprint, Response, abort, g, request, stream_with_context

from archive_common import client, ids, participants
from archive_web.context import audit, require, settings, worker_for, workers
from archive_web.search import participants_of, store_query

bp = Blueprint("export", __name__)
FORMATS = {"zip": "application/zip", "mbox": "application/mbox", "manifest": "text/csv; charset=utf-8"}
FETCH_AHEAD = 8
_FROM_LINE = re.compile(rb"^(>*From )", re.M)


class _Sink(io.RawIOBase):
    """An unseekable file that zipfile writes into and the response drains."""

    def __init__(self):
        super().__init__()
        self.chunks = []

    def writable(self):
        return True

    def write(self, data):
        self.chunks.append(bytes(data))
        return len(data)

    def drain(self) -> bytes:
        data, self.chunks = b"".join(self.chunks), []
        return data


def selected_rows(form):
    """The metadata rows to export: the ticked IDs, or every match of the query (all pages)."""
    limit = settings().export_max_messages
    chosen = form.getlist("id")
    if chosen:
        if len(chosen) > limit:
            abort(400, description=f"At most {limit} messages can be exported at once; {len(chosen)} were selected.")
        for archive_id in chosen:
            api = worker_for(archive_id)
            row = api.message(archive_id)
            if not g.user.sees_all_mail and not participants.involves(row, g.user.addresses):
                audit("denied", id=archive_id, wanted="export")
                abort(404)
            row["worker"] = api.name
            yield row
        return
    try:
        query = store_query(form)
    except ValueError as exc:
        abort(400, description=str(exc))
    positions, count = {}, 0
    while True:
        rows, positions, more, failed = client.search_page(workers(), query, positions, client.MAX_PAGE, participants_of(g.user))
        if failed:
            raise client.ArchiveApiError("export stopped: " + "; ".join(failed.values()))
        for row in rows:
            count += 1
            if count > limit:
                raise client.ArchiveApiError(f"export stopped: the query matches more than {limit} messages; narrow it")
            yield row
        if not more:
            return


def _fetch(job):
    api, row = job  # the worker is found in the request's thread: the pool's threads have no app context
    raw = api.raw(row["id"])
    return row, raw, hashlib.sha256(raw).hexdigest() == row["sha256"]


def _mbox_entry(row, raw: bytes) -> bytes:
    sender = (row.get("env_from") or "MAILER-DAEMON").replace(" ", "_") or "MAILER-DAEMON"
    stamp = time.asctime(time.gmtime(ids.unix_time_of(row["id"])))
    body = _FROM_LINE.sub(rb">\1", raw.replace(b"\r\n", b"\n"))
    return b"From %s %s\n%s%s\n" % (sender.encode("utf-8", "replace"), stamp.encode(), body, b"" if body.endswith(b"\n") else b"\n")


def _manifest_line(row, verified) -> bytes:
    out = io.StringIO()
    csv.writer(out).writerow([row["id"], row["sha256"], row.get("message_id", ""), row.get("worker", ""), row.get("size", ""),
                              "" if verified is None else ("yes" if verified else "NO")])
    return out.getvalue().encode("utf-8")


MANIFEST_HEADER = b"archive_id,sha256,message_id,worker,size,verified\r\n"


def _batches(rows, size):
    batch = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def stream(kind: str, rows):
    """The export's bytes, as they are made; audits its start and its end."""
    exported, manifest = [], [MANIFEST_HEADER]
    sink = _Sink()
    archive = zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) if kind == "zip" else None
    complete = False
    try:
        if kind == "manifest":
            yield MANIFEST_HEADER
            for row in rows:
                exported.append(row["id"])
                yield _manifest_line(row, None)
        else:
            with ThreadPoolExecutor(FETCH_AHEAD) as pool:
                for batch in _batches(rows, FETCH_AHEAD):
                    for row, raw, verified in pool.map(_fetch, [(worker_for(row["id"]), row) for row in batch]):
                        exported.append(row["id"])
                        manifest.append(_manifest_line(row, verified))
                        if archive is not None:
                            archive.writestr(f"{row['id']}.eml", raw)
                            yield sink.drain()
                        else:
                            yield _mbox_entry(row, raw)
            if archive is not None:
                archive.writestr("manifest.csv", b"".join(manifest))
                archive.close()
                yield sink.drain()
        complete = True
    finally:
        audit("export_done" if complete else "export_failed", format=kind, count=len(exported), ids=exported,
              manifest_sha256=hashlib.sha256(b"".join(manifest)).hexdigest() if kind != "manifest" else None)


@bp.route("/export", methods=["POST"])
@require("user", "auditor", mail=True)
def export():
    kind = request.form.get("format", "")
    if kind not in FORMATS:
        abort(400, description=f"Export format must be one of {', '.join(FORMATS)}, not {kind!r}.")
    chosen = request.form.getlist("id")
    audit("export", format=kind, selected=len(chosen) or None, query=None if chosen else request.form.get("q", ""))
    rows = selected_rows(request.form)
    first = next(rows, None)  # a worker that is down, or a bad query, fails here: before any byte is sent

    def chained():
        if first is not None:
            yield first
            yield from rows

    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    filename = f"archive-export-{stamp}." + {"zip": "zip", "mbox": "mbox", "manifest": "csv"}[kind]
    response = Response(stream_with_context(stream(kind, chained())), content_type=FORMATS[kind])
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    response.headers["X-Accel-Buffering"] = "no"  # nginx passes it on as it comes
    return response
