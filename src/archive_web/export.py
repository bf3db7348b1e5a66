"""Export selected messages, or every match of a query, as a zip of .eml files or as one mbox file.

The export is streamed: messages are fetched from the workers in batches of up to BATCH_MESSAGES
messages or BATCH_BYTES of mail (a request to each worker holding some, client.MAX_PAGE at most
each), the next batch fetched while this one is written out, so the interface's memory does not
grow with the export and no mail touches its disk.

    zip       <archive ID>.eml for each message, exactly as archived, then manifest.csv
    mbox      mboxrd (a ">" added to lines starting with ">*From "), LF line endings
    manifest  manifest.csv alone (from the metadata; no mail is read)

Ticked messages come in the order ticked; a query's matches from the workers in turn, each worker's
newest first (every match is read once, without a merge).

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
BATCH_MESSAGES = 2500  # about 500 a worker on a five-worker site: per request, the mail outweighs the round trip
# Mail of one batch. Two batches are in memory at once (one written, the next fetched), each twice while its
# answer is split into messages: at 24 MiB, an export of the realistic mix (median 20 kB) reached 200 MB of RSS.
BATCH_BYTES = 8 * 1024 * 1024
# What an export needs of a query's rows (the mbox From line, the manifest, the batches' sizes): under a third
# of a full row's JSON, which the workers encode and this process decodes thousands of times.
ROW_FIELDS = ("sha256", "size", "message_id", "env_from")
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
    """The metadata rows to export: the ticked IDs in their order, or every match of the query, the workers in turn."""
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
    mine = participants_of(g.user)
    # Every worker must answer before the first byte goes out: an export that silently lacked one would be wrong.
    _rows, _positions, _more, failed = client.search_page(workers(), query, {}, 1, mine)
    if failed:
        raise client.ArchiveApiError("export refused, not every worker answers: " + "; ".join(failed.values()))

    def ask_page(pool, api, offset):
        """This worker's next page of matches, asked for in the pool."""
        return pool.submit(api.search, query, client.MAX_PAGE, offset, mine, brief=True, fields=ROW_FIELDS)

    def matches(api, pool, ahead):
        """This worker's matches; ``ahead`` is its first page, asked for already, and each next page is
        asked for while this one is read."""
        offset = 0
        while ahead is not None:
            page = ahead.result()
            offset += len(page)
            ahead = ask_page(pool, api, offset) if len(page) == client.MAX_PAGE else None
            for row in page:
                row["worker"] = api.name
                yield row

    # The workers' matches in turn, so that each batch asks every worker at once; each match is read once.
    with ThreadPoolExecutor(max_workers=len(workers())) as pool:
        pending = [matches(api, pool, ask_page(pool, api, 0)) for api in workers()]
        count = 0
        while pending:
            for each in list(pending):
                row = next(each, None)
                if row is None:
                    pending.remove(each)
                    continue
                count += 1
                if count > limit:
                    abort(400, description=f"The query matches more than {limit} messages, more than one export may hold; narrow it.")
                yield row


def _groups(rows):
    """Rows in groups of at most BATCH_MESSAGES and BATCH_BYTES of mail (a larger message goes alone)."""
    group, size = [], 0
    for row in rows:
        if group and (len(group) == BATCH_MESSAGES or size + row["size"] > BATCH_BYTES):
            yield group
            group, size = [], 0
        group.append(row)
        size += row["size"]
    if group:
        yield group


def _fetch(pool, group):
    """Start fetching a group's mail, one request per worker at once; returns (group, futures)."""
    by_worker = {}
    for row in group:  # worker_for needs the request's context, which the pool's threads lack
        by_worker.setdefault(worker_for(row["id"]), []).append(row["id"])
    return group, [pool.submit(api.raw_batch, wanted[at:at + client.MAX_PAGE])
                   for api, wanted in by_worker.items() for at in range(0, len(wanted), client.MAX_PAGE)]


def _fetched(group, futures):
    """(row, raw, verified) for each row of the group, in order."""
    found = {}
    for future in futures:
        found.update(future.result())
    for row in group:
        raw = found.get(row["id"])
        if raw is None:
            raise client.ArchiveApiError(f"export stopped: {row['id']} is no longer on {row.get('worker', 'its worker')}")
        yield row, raw, hashlib.sha256(raw).hexdigest() == row["sha256"]


def _messages(rows):
    """(row, raw, verified) for every row, the next group fetched while the caller writes this one."""
    with ThreadPoolExecutor(max(1, len(workers()))) as pool:
        pending = None
        for group in _groups(rows):
            started = _fetch(pool, group)
            if pending is not None:
                yield from _fetched(*pending)
            pending = started
        if pending is not None:
            yield from _fetched(*pending)


def _mbox_entry(row, raw: bytes) -> bytes:
    sender = (row.get("env_from") or "MAILER-DAEMON").replace(" ", "_") or "MAILER-DAEMON"
    stamp = time.asctime(time.gmtime(ids.unix_time_of(row["id"])))
    body = raw.replace(b"\r\n", b"\n")
    if b"From " in body:  # most mail has no line to escape, and the scan costs more than the rest
        body = _FROM_LINE.sub(rb">\1", body)
    return b"From %s %s\n%s%s\n" % (sender.encode("utf-8", "replace"), stamp.encode(), body, b"" if body.endswith(b"\n") else b"\n")


def _manifest_line(row, verified) -> bytes:
    out = io.StringIO()
    csv.writer(out).writerow([row["id"], row["sha256"], row.get("message_id", ""), row.get("worker", ""), row.get("size", ""),
                              "" if verified is None else ("yes" if verified else "NO")])
    return out.getvalue().encode("utf-8")


MANIFEST_HEADER = b"archive_id,sha256,message_id,worker,size,verified\r\n"


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
            for row, raw, verified in _messages(rows):
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


def _coalesced(chunks, size=1 << 18):
    """Fewer, larger writes: a message's mbox entry is often smaller than a network packet."""
    pending, held = [], 0
    for chunk in chunks:
        pending.append(chunk)
        held += len(chunk)
        if held >= size:
            yield b"".join(pending)
            pending, held = [], 0
    if pending:
        yield b"".join(pending)


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

    body = _coalesced(stream(kind, chained()))
    # The headers go out with the first chunk; made here, a failure before it (a worker lost, too many
    # matches) still gets a readable page. Later, a failure cuts the stream, and the browser reports
    # the download as failed.
    head = next(body, b"")

    def whole():
        yield head
        yield from body

    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    filename = f"archive-export-{stamp}." + {"zip": "zip", "mbox": "mbox", "manifest": "csv"}[kind]
    response = Response(stream_with_context(whole()), content_type=FORMATS[kind])
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    response.headers["X-Accel-Buffering"] = "no"  # nginx passes it on as it comes
    return response
