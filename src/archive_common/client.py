"""A client for the archive store's HTTP API, and the fan-out over many workers.

The modules, bench/ and (next) the web interface all talk to the workers
through this one client.  It uses the standard library only: the web
interface runs where Ansible is not installed.

Shared code (see src/README.md): it imports only the standard library; the
collection's modules use this very file through the link
plugins/module_utils/archive_client.py.
"""

import http.client
import json
import queue
import socket
import ssl
import threading
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote, urlsplit

# The store API's largest page.
MAX_PAGE = 1000

_contexts = {}
_contexts_lock = threading.Lock()


def tls_context(cafile=None):
    """One verifying TLS context per CA file and process: building one loads the CA bundle (about
    25 ms), and doing that per request made a fan-out over five workers three times slower."""
    with _contexts_lock:
        if cafile not in _contexts:
            _contexts[cafile] = ssl.create_default_context(cafile=cafile)
        return _contexts[cafile]


class ArchiveApiError(Exception):
    """One line naming the worker, the request and what went wrong.

    ``status`` is the HTTP status the worker answered, or None when it did not answer;
    ``reason`` is the worker's own error message, if it gave one.
    """

    def __init__(self, message, status=None, reason=""):
        super().__init__(message)
        self.status = status
        self.reason = reason


class ArchiveApi(object):
    """One worker's API: ``name`` for messages, ``url`` such as https://198.18.10.20:8025; ``cafile``: the site CA."""

    def __init__(self, name, url, token, timeout=5.0, server_id=None, cafile=None):
        if not token:
            raise ArchiveApiError("worker %s: no API token" % name)
        self.name = name
        self.url = url.rstrip("/")
        self.server_id = server_id
        self._timeout = timeout
        self._headers = {"Authorization": "Bearer " + token}
        parts = urlsplit(self.url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ArchiveApiError("worker %s: expected an https:// URL, found %r" % (name, url))
        self._host, self._port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
        self._context = tls_context(cafile) if parts.scheme == "https" else None
        # Kept-alive connections, reused by whichever thread asks next: a TLS handshake per request (or per
        # fan-out, whose threads are new each time) would cost more than the search.
        self._idle = queue.LifoQueue()

    def _new_connection(self):
        if self._context is not None:
            return http.client.HTTPSConnection(self._host, self._port, timeout=self._timeout, context=self._context)
        return http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)

    def close(self):
        """Close the kept-alive connections."""
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return

    def _request(self, path, method="GET", body=None, data=None, content_type="application/octet-stream"):
        """The answer's bytes to a request with ``body`` as JSON, or ``data`` as they are."""
        if body is not None:
            data, content_type = json.dumps(body).encode("utf-8"), "application/json"
        elif data is None and method == "POST":
            data = b""
        headers = dict(self._headers, **({"Content-Type": content_type} if data else {}))
        for attempt in (1, 2):  # a kept-alive connection the worker closed while idle is opened again, once
            try:
                if attempt == 2:
                    raise queue.Empty  # the retry's connection is a new one
                connection, reused = self._idle.get_nowait(), True
            except queue.Empty:
                connection, reused = self._new_connection(), False
            try:
                connection.request(method, path, body=data, headers=headers)
                response = connection.getresponse()
                payload = response.read()
                break
            except (http.client.HTTPException, OSError) as exc:
                connection.close()
                if reused and attempt == 1 and not isinstance(exc, socket.timeout):
                    self.close()  # a restarted worker closed every kept-alive connection, not only this one
                    continue
                raise self._failure(method, path, exc) from None
        if response.will_close:
            connection.close()
        else:
            self._idle.put(connection)
        if response.status >= 300:
            raise self._refusal(method, path, response.status, payload)
        return payload

    def _failure(self, method, path, exc):
        """The error for a request that got no answer."""
        return ArchiveApiError("%s: %s %s%s failed: %s" % (self.name, method, self.url, path, getattr(exc, "reason", None) or exc))

    def _refusal(self, method, path, status, payload):
        """The error for an answer of HTTP ``status`` >= 300, with the worker's own reason if it gave one."""
        try:
            reason = json.loads(payload.decode("utf-8"))["error"]
        except (ValueError, KeyError, TypeError):
            reason = ""
        return ArchiveApiError("%s: %s %s answered HTTP %s%s" % (self.name, method, path, status, (": " + reason) if reason else ""),
                               status, reason)

    def get_json(self, path):
        try:
            return json.loads(self._request(path).decode("utf-8"))
        except ValueError as exc:
            raise ArchiveApiError("%s: GET %s answered something other than JSON: %s" % (self.name, path, exc)) from None

    def search(self, query, limit=MAX_PAGE, offset=0, participants=(), brief=False, fields=()):
        """Matches, newest first; with ``participants``, only messages one of those addresses took part in;
        ``brief``: without attachments and arrival counts; ``fields``: only those (and the id)."""
        path = "/api/v1/search?q=%s&limit=%d&offset=%d%s" % (quote(query), limit, offset, "&brief=1" if brief else "")
        path += "&fields=" + quote(",".join(fields)) if fields else ""
        path += "".join("&participant=" + quote(address) for address in participants)
        return self.get_json(path)["results"]

    def stats(self):
        return self.get_json("/api/v1/stats")

    def message(self, archive_id):
        """The metadata of one message."""
        return self.get_json("/api/v1/messages/%s" % quote(archive_id))

    def raw(self, archive_id):
        """The message's bytes exactly as archived."""
        return self._request("/api/v1/messages/%s/raw" % quote(archive_id))

    def raw_batch(self, archive_ids):
        """{id: bytes} for many messages in one request (at most MAX_PAGE, and 64 MiB of mail); a missing one maps to None."""
        payload = self._request("/api/v1/messages/raw", "POST", {"ids": list(archive_ids)})
        found, at = {}, 0
        while at < len(payload):
            end = payload.index(b"\n", at)
            archive_id, length = payload[at:end].decode("ascii").split(" ")
            length = int(length)
            if length < 0:
                found[archive_id], at = None, end + 1
            else:
                found[archive_id], at = payload[end + 1:end + 1 + length], end + 2 + length
        return found

    def export(self, query, participants=(), limit=100000, fields=(), mail=True):
        """Every match of ``query`` (at most ``limit``) with its bytes, newest first, in one streamed answer: the
        request is sent now, so that several workers search at once; see ExportStream."""
        path = "/api/v1/export?q=%s&limit=%d&mail=%d" % (quote(query), limit, 1 if mail else 0)
        path += "&fields=" + quote(",".join(fields)) if fields else ""
        path += "".join("&participant=" + quote(address) for address in participants)
        return ExportStream(self, path, mail)

    def listing(self, since, until, page=MAX_PAGE):
        """Every message archived in [since, until): dicts with id, sha256, message_id, arrived, size."""
        after = ""
        while True:
            rows = self.get_json("/api/v1/list?since=%d&until=%d&after=%s&limit=%d" % (since, until, after, page))
            yield from rows["results"]
            if len(rows["results"]) < page:
                return
            after = rows["results"][-1]["id"]

    def known(self, digests):
        """{sha256: archive ID} of those of these messages (by sha256, at most MAX_PAGE) this worker holds."""
        answer = self._request("/api/v1/import/known", "POST", {"sha256": list(digests)})
        return json.loads(answer.decode("utf-8"))["known"]

    def import_batch(self, messages):
        """Store imported messages; each is a dict with ``raw`` (bytes), ``key``, ``dated`` and ``origin``
        (POST /api/v1/import). The worker answers once they are committed: a result per message, in order,
        {"status": "stored" | "duplicate" | "committed-before" | "rejected", "id": ..., "reason": ...}."""
        head = {"messages": [{"key": m["key"], "dated": m["dated"], "origin": m["origin"], "size": len(m["raw"]),
                              "sha256": m["sha256"]} for m in messages]}
        data = json.dumps(head, separators=(",", ":")).encode("utf-8") + b"\n" + b"".join(m["raw"] for m in messages)
        answer = self._request("/api/v1/import", "POST", data=data)
        return json.loads(answer.decode("utf-8"))["results"]

    def purge_probes(self, run):
        """Remove one delivery_check run's probes (the store writes an audit entry for each)."""
        answer = self._request("/api/v1/probes/%s/purge" % quote(run), method="POST")
        return json.loads(answer.decode("utf-8"))["purged"]

    def arrivals(self, archive_ids):
        """{archive ID: [{spool_name, arrived, transit}, ...]} of those of these messages the worker holds (scope dedupe)."""
        found = {}
        archive_ids = list(archive_ids)
        for start in range(0, len(archive_ids), MAX_PAGE):
            answer = self._request("/api/v1/arrivals", "POST", {"ids": archive_ids[start:start + MAX_PAGE]})
            found.update(json.loads(answer.decode("utf-8"))["arrivals"])
        return found

    def add_arrivals(self, archive_id, sha256, arrivals, source):
        """Record another worker's copy's arrivals on this message (``source``: that copy's worker and id)."""
        answer = self._request("/api/v1/messages/%s/arrivals" % quote(archive_id), "POST",
                               {"sha256": sha256, "arrivals": arrivals, "source": source})
        return json.loads(answer.decode("utf-8"))["added"]

    def remove_duplicate(self, archive_id, sha256, kept):
        """Remove this worker's copy of a message that ``kept`` (another worker and id) keeps; audited there."""
        answer = self._request("/api/v1/messages/%s/remove-duplicate" % quote(archive_id), "POST",
                               {"sha256": sha256, "kept": kept})
        return json.loads(answer.decode("utf-8"))["removed"]

    def holds(self):
        return json.loads(self._request("/api/v1/holds").decode("utf-8"))["holds"]

    def hold(self, address, reason, remove=False):
        """Add (or remove) a legal hold; the store audits it with this client's name."""
        path = "/api/v1/holds/remove" if remove else "/api/v1/holds"
        return json.loads(self._request(path, "POST", {"address": address, "reason": reason}).decode("utf-8"))["holds"]


class ExportStream(object):
    """One worker's answer to GET /api/v1/export, read as it comes.

    ``begin()`` waits for the worker's search and returns how many messages match; iterating then gives
    (row, raw) for each (raw is None without mail). A failure at any point raises ArchiveApiError naming
    the worker, and so does an answer that ends before its last line: it never yields fewer messages
    silently.
    """

    # The longest JSON line a worker sends: one message's fields, or an error.
    MAX_LINE = 1 << 20

    def __init__(self, api, path, mail):
        self.api, self.path, self.mail = api, path, mail
        self.matches, self.count = None, 0
        self._response = self._socket = None
        self._connection = api._new_connection()  # its own: the answer ends when the worker closes it
        try:
            self._connection.request("GET", path, headers=api._headers)
        except (http.client.HTTPException, OSError) as exc:
            self._failed(exc)
        # The socket, kept: once the answer begins, the connection hands it to the response, and close() must
        # shut it down to wake a thread blocked reading it (closing it alone does not).
        self._socket = self._connection.sock

    def _failed(self, exc):
        self._finish()
        raise self.api._failure("GET", self.path, exc) from None

    def _line(self):
        try:
            line = self._response.readline(self.MAX_LINE)
            return json.loads(line) if line.endswith(b"\n") else None
        except (http.client.HTTPException, OSError) as exc:
            self._failed(exc)
        except ValueError:
            return None

    def begin(self):
        """The number of matches, once the worker has searched; a refused query raises with status 400."""
        try:
            self._response = self._connection.getresponse()
        except (http.client.HTTPException, OSError) as exc:
            self._failed(exc)
        if self._response.status >= 300:
            payload = self._response.read()
            self._finish()
            raise self.api._refusal("GET", "/api/v1/export", self._response.status, payload)
        head = self._line()
        if not isinstance(head, dict) or not isinstance(head.get("matches"), int):
            self._cut("its first line")
        self.matches = head["matches"]
        return self.matches

    def _cut(self, where):
        self._finish()
        raise ArchiveApiError("%s: the export's answer ended or broke at %s, after %d of %s messages"
                              % (self.api.name, where, self.count, self.matches))

    def __iter__(self):
        while True:
            line = self._line()
            if not isinstance(line, dict):
                self._cut("message %d" % (self.count + 1))
            if "end" in line or "error" in line:
                self._finish()
                if "error" in line or line["end"] != self.count or self.count != self.matches:
                    raise ArchiveApiError("%s: the export stopped after %d of %d messages: %s" % (
                        self.api.name, self.count, self.matches, line.get("error", "the worker's count differs")))
                return
            raw = None
            if self.mail:
                try:
                    raw = self._response.read(line["size"] + 1)
                except (http.client.HTTPException, OSError) as exc:
                    self._failed(exc)
                if len(raw) != line["size"] + 1 or not raw.endswith(b"\n"):
                    self._cut("the bytes of %s" % line.get("id"))
                raw = raw[:-1]
            self.count += 1
            yield line, raw

    def close(self):
        """Stop reading, from any thread: a thread blocked in this answer wakes with an error, and the worker
        stops sending. (The answer itself is closed by the thread reading it, in _finish: http.client's
        objects are not for two threads at once.)"""
        if self._socket is not None:
            try:
                self._socket.shutdown(socket.SHUT_RDWR)
            except OSError:  # closed already, or never connected
                pass
            self._socket.close()
        self._connection.close()

    def _finish(self):
        self.close()
        if self._response is not None:
            self._response.close()


def started_ahead(items, start):
    """(item, start(item)) for each item, the next item's start() called before this one is handed out, so that
    its work (a request, the reading of files) runs while the caller uses this one."""
    pending = None
    for item in items:
        started = item, start(item)
        if pending is not None:
            yield pending
        pending = started
    if pending is not None:
        yield pending


def batches(rows, most_messages, most_bytes):
    """Rows (dicts with a "size") in groups of at most ``most_messages`` and ``most_bytes`` of mail; a larger
    message goes alone."""
    group, size = [], 0
    for row in rows:
        if group and (len(group) == most_messages or size + row["size"] > most_bytes):
            yield group
            group, size = [], 0
        group.append(row)
        size += row["size"]
    if group:
        yield group


def site_apis(path, timeout=300):
    """(an ArchiveApi per worker, the whole file) of a site file: JSON with {"workers": [{"name", "url",
    "server_id", "ca_file"}], "token_file"}, as playbooks/import.yml and the worker role write it.
    Raises ArchiveApiError with one line naming the file and what is wrong."""
    try:
        with open(path, encoding="utf-8") as handle:
            site = json.load(handle)
        with open(site["token_file"], encoding="utf-8") as handle:
            token = handle.read().strip()
        apis = [ArchiveApi(w["name"], w["url"], token, timeout=timeout, server_id=w.get("server_id"), cafile=w.get("ca_file"))
                for w in site["workers"]]
    except OSError as exc:
        raise ArchiveApiError("site file %s: %s: %s" % (path, exc.filename or path, exc.strerror or exc)) from None
    except (ValueError, KeyError, TypeError) as exc:
        raise ArchiveApiError("site file %s: expected JSON with workers[] (name, url) and token_file, "
                              "found a problem with %s" % (path, exc)) from None
    except ArchiveApiError as exc:
        raise ArchiveApiError("site file %s: %s" % (path, exc)) from None
    return apis, site


def search_all(apis, query, limit=50, offset=0):
    """Search every worker at once; the newest matches cluster-wide, ``offset`` to ``offset + limit``.

    Each worker returns its own newest ``offset + limit``; the merge orders them by archive ID, which
    starts with the time the message was stored. Each result names its ``worker``. The first worker
    that fails raises ArchiveApiError: a search that silently left out a worker would be wrong.
    """
    if not apis:
        raise ArchiveApiError("no workers to search")
    if limit < 1 or offset < 0 or offset + limit > MAX_PAGE:
        raise ArchiveApiError("limit must be at least 1, offset at least 0, and offset + limit at most %d; got %d and %d"
                              % (MAX_PAGE, limit, offset))
    with ThreadPoolExecutor(max_workers=len(apis)) as pool:
        answers = [(api, pool.submit(api.search, query, offset + limit)) for api in apis]
        merged = []
        for api, answer in answers:
            for row in answer.result():
                row["worker"] = api.name
                merged.append(row)
    merged.sort(key=lambda row: row["id"], reverse=True)
    return merged[offset:offset + limit]


def search_page(apis, query, positions=None, limit=50, participants=()):
    """One page of the newest matches cluster-wide, for paging to any depth.

    ``positions`` maps each worker's name to how many of its own matches the earlier pages took
    (``{}`` for the first page). Each worker returns its next ``limit`` matches from there; the merge
    keeps the newest ``limit`` by archive ID and moves each worker's position on by the rows it gave.
    Returns ``(rows, positions, more, failed)``: ``failed`` maps each worker that did not answer to the
    reason, and its position stays where it was; the caller must say that the page is incomplete.
    A query the store rejects raises ArchiveApiError with status 400 and the store's reason.
    """
    if not apis:
        raise ArchiveApiError("no workers to search")
    if not 1 <= limit <= MAX_PAGE:
        raise ArchiveApiError("limit must be between 1 and %d, got %d" % (MAX_PAGE, limit))
    positions = dict(positions or {})
    answers, failed = {}, {}
    with ThreadPoolExecutor(max_workers=len(apis)) as pool:
        pending = [(api, pool.submit(api.search, query, limit, positions.get(api.name, 0), participants)) for api in apis]
        for api, answer in pending:
            try:
                answers[api.name] = answer.result()
            except ArchiveApiError as exc:
                if exc.status == 400:  # the query itself is wrong: every worker would say the same
                    raise
                failed[api.name] = str(exc)
    merged = sorted(((row["id"], name, row) for name, rows in answers.items() for row in rows), reverse=True)[:limit]
    taken = {}
    for _id, name, row in merged:
        row["worker"] = name
        taken[name] = taken.get(name, 0) + 1
    more = any(len(rows) > taken.get(name, 0) or len(rows) == limit for name, rows in answers.items())
    for name, count in taken.items():
        positions[name] = positions.get(name, 0) + count
    return [row for _id, _name, row in merged], positions, more, failed
