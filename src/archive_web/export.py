"""Export selected messages, or every match of a query, as a zip of .eml files or as one mbox file.

The export is streamed, so the interface's memory does not grow with it and no mail touches its disk:
- a query's matches come in one answer from each worker (GET /api/v1/export, client.ExportStream), all
  asked for at once and read as they come: each worker searches once and sends every match's fields
  followed by its bytes;
- ticked messages are fetched in batches of up to BATCH_MESSAGES messages or BATCH_BYTES of mail (a
  request to each worker holding some, client.MAX_PAGE at most each), the next batch fetched while
  this one is written out.

    zip       <archive ID>.eml for each message, exactly as archived, then manifest.csv
    mbox      mboxrd (a ">" added to lines starting with ">*From "), LF line endings
    manifest  manifest.csv alone (from the metadata; no mail is read)

Ticked messages come in the order ticked; a query's matches as the workers send them, each worker's
newest first, the workers interleaved (every match is read once, without a merge).

manifest.csv lists archive_id, sha256, message_id, worker, size and, for the mail exported,
whether its bytes hashed to the stored sha256.  An export refused before its first byte (a
worker that does not answer, a query the store refuses, more matches than export_max_messages)
gets a readable page; one that fails part-way (a worker stops answering, or its answer breaks
off) aborts the download (the transfer ends without its last chunk, so the browser reports it
failed). Either way the audit trail records export_failed.
"""

import csv
import functools
import hashlib
import io
import queue
import re
import threading
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor

from flask import Blueprint, Response, abort, g, request, stream_with_context
from werkzeug.exceptions import HTTPException

from archive_common import client, ids, participants
from archive_web.context import audit, require, settings, worker_for, workers
from archive_web.search import participants_of, store_query

bp = Blueprint("export", __name__)
FORMATS = {"zip": "application/zip", "mbox": "application/mbox", "manifest": "text/csv; charset=utf-8"}
BATCH_MESSAGES = 2500  # about 500 a worker on a five-worker site: per request, the mail outweighs the round trip
# Mail of one batch. Two batches are in memory at once (one written, the next fetched), each twice while its
# answer is split into messages: at 24 MiB, an export of the realistic mix (median 20 kB) reached 200 MB of RSS.
BATCH_BYTES = 8 * 1024 * 1024
# What a worker's reader hands over at once: a queue's handover per message cost more than the message.
HAND_OVER_MESSAGES = 200
HAND_OVER_BYTES = 1024 * 1024
# What an export needs of a query's rows (the mbox From line, the manifest): under a third of a full row's
# JSON, which the workers encode and this process decodes thousands of times.
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


def _chosen_rows(chosen):
    """The metadata rows of the ticked IDs, in their order; another person's message is 404, and audited."""
    for archive_id in chosen:
        api = worker_for(archive_id)
        row = api.message(archive_id)
        if not g.user.sees_all_mail and not participants.involves(row, g.user.addresses):
            audit("denied", id=archive_id, wanted="export")
            abort(404)
        row["worker"] = api.name
        yield row


def _query_messages(form, with_mail):
    """(row, raw, verified) for every match of the form's query: one streamed request per worker, all at once,
    their messages as they come (raw None without mail). Every worker must answer, and the total must be
    within the limit, before this yields anything."""
    limit = settings().export_max_messages
    try:
        query = store_query(form)
    except ValueError as exc:
        abort(400, description=str(exc))
    mine, streams, failed, refused = participants_of(g.user), [], [], None
    try:
        for api in workers():  # every request goes out first: the workers search at the same time
            try:
                streams.append(api.export(query, mine, limit, ROW_FIELDS, mail=with_mail))
            except client.ArchiveApiError as exc:
                failed.append(str(exc))
        for each in streams:
            try:
                each.begin()
            except client.ArchiveApiError as exc:
                refused = exc.reason if exc.status == 400 else refused
                failed.append(str(exc))
        if refused is not None:
            abort(400, description=f"The archive could not run this export: {refused}")
        if failed:  # an export that silently lacked a worker's mail would be wrong
            raise client.ArchiveApiError("export refused, not every worker answers: " + "; ".join(failed))
        if sum(each.matches for each in streams) > limit:
            abort(400, description=f"The query matches more than {limit} messages, more than one export may hold; narrow it.")
        yield from _as_they_come(streams)
    finally:
        for each in streams:
            each.close()


def _as_they_come(streams):
    """(row, raw, verified) from every stream, whichever worker has some ready: a thread per worker reads its
    answer and hands its messages over a batch at a time, so a worker that is busy for a moment holds up
    none of the others (taking them in turn made the export wait on whichever was slowest at each step)."""
    arrived, stop = queue.Queue(maxsize=2 * len(streams)), threading.Event()

    def hand_over(item):
        while not stop.is_set():
            try:
                return arrived.put(item, timeout=0.5)
            except queue.Full:
                continue

    def read(each):
        batch, size = [], 0
        try:
            for row, raw in each:
                row["worker"] = each.api.name
                batch.append((row, raw))
                size += row["size"]
                if len(batch) == HAND_OVER_MESSAGES or size >= HAND_OVER_BYTES:
                    hand_over(batch)
                    batch, size = [], 0
            hand_over(batch)
            hand_over(None)
        except (client.ArchiveApiError, OSError, ValueError) as exc:  # ValueError: its connection closed under it
            hand_over(exc)

    readers = [threading.Thread(target=read, args=(each,), name=f"export-{each.api.name}", daemon=True) for each in streams]
    for reader in readers:
        reader.start()
    try:
        finished = 0
        while finished < len(readers):
            batch = arrived.get()
            if batch is None:
                finished += 1
            elif isinstance(batch, Exception):
                raise batch
            else:
                for row, raw in batch:
                    yield row, raw, None if raw is None else hashlib.sha256(raw).hexdigest() == row["sha256"]
    finally:
        stop.set()  # a reader still going (the download was cut, or another worker failed) stops handing over


def selected(form, kind):
    """(row, raw, verified) for each message the form asks for: the ticked IDs in their order, or every match
    of its query; raw and verified are None for a manifest, which reads no mail."""
    chosen = form.getlist("id")
    if not chosen:
        return _query_messages(form, kind != "manifest")
    limit = settings().export_max_messages
    if len(chosen) > limit:
        abort(400, description=f"At most {limit} messages can be exported at once; {len(chosen)} were selected.")
    rows = _chosen_rows(chosen)
    return ((row, None, None) for row in rows) if kind == "manifest" else _messages(rows)


def _fetch(pool, group):
    """Start fetching a group's mail, one request per worker at once; returns the requests' futures."""
    by_worker = {}
    for row in group:  # worker_for needs the request's context, which the pool's threads lack
        by_worker.setdefault(worker_for(row["id"]), []).append(row["id"])
    return [pool.submit(api.raw_batch, wanted[at:at + client.MAX_PAGE])
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
        for group, futures in client.started_ahead(client.batches(rows, BATCH_MESSAGES, BATCH_BYTES),
                                                   lambda group: _fetch(pool, group)):
            yield from _fetched(group, futures)


@functools.lru_cache(maxsize=4096)
def _stamp(second: int) -> bytes:
    """An mbox From line's date; a worker stores many messages a second, so most are asked for again."""
    return time.asctime(time.gmtime(second)).encode()


def _mbox_entry(row, raw: bytes) -> bytes:
    sender = (row.get("env_from") or "MAILER-DAEMON").replace(" ", "_") or "MAILER-DAEMON"
    body = raw.replace(b"\r\n", b"\n")
    if b"From " in body:  # most mail has no line to escape, and the scan costs more than the rest
        body = _FROM_LINE.sub(rb">\1", body)
    return b"From %s %s\n%s%s\n" % (sender.encode("utf-8", "replace"), _stamp(int(ids.unix_time_of(row["id"]))), body,
                                    b"" if body.endswith(b"\n") else b"\n")


class _Manifest:
    """manifest.csv: a line per message exported, written by one CSV writer (one per line cost more than the mbox)."""

    HEADER = ("archive_id", "sha256", "message_id", "worker", "size", "verified")

    def __init__(self):
        self._out = io.StringIO()
        self._writer = csv.writer(self._out)
        self._writer.writerow(self.HEADER)
        self.digest = hashlib.sha256()

    def add(self, row, verified) -> None:
        self._writer.writerow((row["id"], row["sha256"], row.get("message_id", ""), row.get("worker", ""), row.get("size", ""),
                               "" if verified is None else ("yes" if verified else "NO")))

    def drain(self) -> bytes:
        """The lines written since the last drain (the header first), added to the digest of the whole."""
        data = self._out.getvalue().encode("utf-8")
        self._out.seek(0)
        self._out.truncate()
        self.digest.update(data)
        return data


def stream(kind: str, messages):
    """The export's bytes, as they are made from (row, raw, verified) ``messages``; audits its start and its end."""
    exported, manifest, held = [], _Manifest(), []  # held: the zip's manifest lines so far
    sink = _Sink()
    archive = zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) if kind == "zip" else None
    complete = False
    try:
        for row, raw, verified in messages:
            exported.append(row["id"])
            manifest.add(row, verified)
            if kind == "manifest":
                yield manifest.drain()
            elif archive is not None:
                archive.writestr(f"{row['id']}.eml", raw)
                yield sink.drain()
            else:
                yield _mbox_entry(row, raw)
            if kind != "manifest" and len(exported) % 1000 == 0:
                lines = manifest.drain()
                if archive is not None:  # the zip's copy, written last
                    held.append(lines)
        if kind == "manifest":
            yield manifest.drain()  # the header alone, when nothing matched
        elif archive is not None:
            archive.writestr("manifest.csv", b"".join(held) + manifest.drain())
            archive.close()
            yield sink.drain()
        complete = True
    finally:
        manifest.drain()
        audit("export_done" if complete else "export_failed", format=kind, count=len(exported), ids=exported,
              manifest_sha256=manifest.digest.hexdigest() if kind != "manifest" else None)


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
    messages = selected(request.form, kind)
    try:  # a worker that is down, a refused query or too many matches fail here, before any byte is sent
        first = next(messages, None)
    except (HTTPException, client.ArchiveApiError) as exc:
        audit("export_failed", format=kind, count=0, reason=getattr(exc, "description", None) or str(exc))
        raise

    def chained():
        if first is not None:
            yield first
            yield from messages

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
