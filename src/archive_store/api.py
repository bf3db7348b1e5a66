"""The workers' HTTPS API: one credential per client, with scopes (access.py), every read logged.

    GET  /api/v1/stats                 read     counts, bytes, spool backlog, license
    GET  /api/v1/search?q=...&limit=&offset=&participant=...&brief=1&fields=
                                       read     metadata of matching messages, newest first; with
                                                participant= (repeatable), only the messages one of
                                                those addresses took part in (participants.py); with
                                                brief=1, without attachments and arrival counts; with
                                                fields=a,b (of SEARCH_FIELDS), only those and the id
    GET  /api/v1/messages/<id>         read     metadata (imported_from: who imported it, from where,
                                                when; "" for journaled mail), the raw bytes as base64 if ?raw=1
    GET  /api/v1/messages/<id>/raw     read     the raw bytes (message/rfc822)
    POST /api/v1/messages/raw          read     {"ids": [...]} (at most 1000, their messages at most
                                                MAX_BATCH_BYTES together): the raw bytes of each, framed
                                                as "<id> <length>\n<bytes>\n" (length -1: no such message)
    GET  /api/v1/export?q=...&participant=...&limit=&fields=&mail=1
                                       read     every match of a query (at most limit, MAX_EXPORT) in one
                                                streamed answer, newest first: a JSON line {"matches": n},
                                                then per message a JSON line of its fields (as search's
                                                brief=1 and fields=, with size) and, with mail=1, its size
                                                in bytes and a newline;
                                                last {"end": n}, or {"error": ...} if it had to stop
    GET  /api/v1/list?since=&until=&after=&limit=
                                       read     id, sha256, Message-ID and arrival time of the
                                                messages archived in [since, until), by id
    POST /api/v1/probes/<run>/purge    probes   remove delivery_check's probes of one run
                                                (see retention.purge_probes)
    GET  /api/v1/holds                 holds    the legal holds
    POST /api/v1/holds                 holds    {"address", "reason"}: add a hold
    POST /api/v1/holds/remove          holds    {"address", "reason"}: remove a hold
    POST /api/v1/import                import   imported messages, stored before the answer (see
                                                _import): a JSON line describing each, then their bytes
    POST /api/v1/import/known          import   {"sha256": [...]} (at most 1000): which of these
                                                messages this worker holds, {"known": {sha256: id}}
    GET  /api/v1/metrics               metrics  Prometheus's text format (metrics.py)

The API speaks TLS only (the site CA's certificate for this worker).
``GET /health`` answers, without credentials, on the plain-HTTP health
listener, which binds a loopback address only (config.health_listen).
"""

import base64
import hashlib
import itertools
import json
import logging
import re
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable
from urllib.parse import parse_qs, urlsplit

from archive_common.client import batches, started_ahead
from archive_store import __version__, access, metrics, retention
from archive_store.errors import Refused, StoreError
from archive_store.index import COLUMNS as SEARCH_FIELDS
from archive_store.spool import Arrival
from archive_store.store import Store

log = logging.getLogger("archive_store.api")
MAX_LIMIT = 1000
MAX_BODY = 64 * 1024
MAX_BATCH_BYTES = 64 * 1024 * 1024
# An export's matches on one worker (the interface's own limit is 100,000 on the whole site), and how much mail
# it reads ahead of what it has sent.
MAX_EXPORT = 100000
EXPORT_READ_MESSAGES = 200
EXPORT_READ_BYTES = 4 * 1024 * 1024
HANDSHAKE_TIMEOUT = 30
# An import batch's bytes of mail (one message may be larger: the store's max_message_bytes), and its description.
MAX_IMPORT_BYTES = 64 * 1024 * 1024
MAX_IMPORT_HEAD = 1024 * 1024
_IMPORT_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
_ORIGIN_FIELDS = ("kind", "source", "folder", "position")


def tls_context(cert_file, key_file) -> ssl.SSLContext:
    """The server's TLS settings: TLS 1.2 or later, this worker's certificate (and the CA chain after it)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(cert_file), str(key_file))
    except FileNotFoundError as exc:
        raise StoreError(f"API certificate: expected {exc.filename or cert_file} to exist, found nothing") from None
    except ssl.SSLError as exc:
        raise StoreError(f"API certificate {cert_file} with key {key_file}: {exc.reason or exc}") from None
    return context


class ApiServer(ThreadingHTTPServer):
    """HTTPS; the handshake runs in the request's thread, so a slow client holds up nobody."""

    daemon_threads = True

    def __init__(self, address, store: Store, clients, status: Callable[[], dict], context: ssl.SSLContext,
                 access_log: access.AccessLog, importer: Callable[[list], list] = None) -> None:
        super().__init__(address, Handler)
        self.store = store
        self.importer = importer  # service.Ingestor.import_batch: stores arrivals, returns their outcomes
        self.clients = clients
        self.status = status
        self.context = context
        self.access_log = access_log
        self.lock = threading.Lock()

    def get_request(self):
        sock, address = super().get_request()
        sock.settimeout(HANDSHAKE_TIMEOUT)
        return self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), address

    def finish_request(self, request, client_address):
        try:
            request.do_handshake()
        except (ssl.SSLError, OSError) as exc:
            log.info("TLS handshake with %s failed: %s", client_address[0], getattr(exc, "reason", None) or exc)
            return
        super().finish_request(request, client_address)


class HealthServer(ThreadingHTTPServer):
    """Plain HTTP on loopback: GET /health and nothing else, for the role's readiness wait."""

    daemon_threads = True

    def __init__(self, address) -> None:
        super().__init__(address, HealthHandler)


class _Base(BaseHTTPRequestHandler):
    server_version = f"archive-store/{__version__}"
    # An answer goes out at once: with Nagle's algorithm a kept-alive connection waited for the client's
    # delayed ACK (40 ms) before the second TLS record, which tripled the fan-out search's time.
    disable_nagle_algorithm = True
    # Headers and body leave in one write (one TLS record for most answers); handle_one_request flushes.
    wbufsize = 1 << 16

    def log_message(self, fmt, *args):  # route access logs through logging
        log.debug("%s %s", self.address_string(), fmt % args)

    def _send(self, code: int, body: bytes, content_type: str = "application/json") -> None:
        self.answered = code
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if code == 401:
            self.send_header("WWW-Authenticate", 'Bearer realm="archive-store"')
        self.end_headers()
        self.wfile.write(body)

    def _json(self, code: int, obj) -> None:
        self._send(code, json.dumps(obj, sort_keys=True).encode("utf-8"))


class HealthHandler(_Base):
    def do_GET(self):  # noqa: N802 (http.server's naming)
        if urlsplit(self.path).path.rstrip("/") == "/health":
            return self._json(200, {"status": "ok"})
        return self._json(404, {"error": "this listener serves /health only; the API speaks HTTPS"})


class Handler(_Base):
    server: ApiServer
    # Clients keep their connection (and its TLS session) for many requests; idle ones are closed after this.
    protocol_version = "HTTP/1.1"
    timeout = HANDSHAKE_TIMEOUT

    def _client(self, scope: str, *alternatives: str):
        """The authenticated client holding ``scope`` (or one of ``alternatives``); otherwise answer 401 or 403
        and return None."""
        client = access.authenticate(self.server.clients, self.headers.get("Authorization", ""))
        if client is None:
            self._json(401, {"error": "missing or wrong bearer token"})
            return None
        if not client.scopes & {scope, *alternatives}:
            wanted = " or ".join(repr(s) for s in (scope, *alternatives))
            log.warning("client %s from %s lacks scope %s for %s", client.name, self.client_address[0], wanted, self.path)
            self._json(403, {"error": f"client {client.name} lacks the scope {wanted} that {urlsplit(self.path).path} needs"})
            return None
        return client

    def _read_body(self, limit: int = MAX_BODY) -> bytes:
        """The request's body, read whole before anything is answered, so that a kept-alive connection stays in step."""
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= limit:
            self.close_connection = True
            raise StoreError(f"request body: expected a Content-Length of at most {limit} bytes, "
                             f"found {self.headers.get('Content-Length')!r}")
        data = self.rfile.read(length)
        if len(data) != length:
            self.close_connection = True
            raise StoreError(f"request body: expected {length} bytes, the connection ended after {len(data)}")
        return data

    @staticmethod
    def _json_object(data: bytes) -> dict:
        try:
            body = json.loads(data or b"{}")
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise StoreError("request body: expected a JSON object, found something else")
        return body

    def do_GET(self):  # noqa: N802 (http.server's naming)
        self._counted(self._get)

    def do_POST(self):  # noqa: N802
        self._counted(self._post)

    def _counted(self, answer) -> None:
        """Answer, and count the request by endpoint and status, with its time."""
        started, self.answered = time.perf_counter(), 500
        try:
            answer()
        finally:
            endpoint = metrics.endpoint_label(self.path)
            metrics.API_REQUESTS.labels(endpoint, str(self.answered)).inc()
            metrics.API_LATENCY.labels(endpoint).observe(time.perf_counter() - started)

    def _get(self):
        url = urlsplit(self.path)
        parts = [p for p in url.path.split("/") if p]
        if parts == ["api", "v1", "metrics"]:
            return self._metrics()
        if parts == ["api", "v1", "list"]:  # IDs and digests, no mail: the duplicate pass lists too
            client = self._client("read", "dedupe")
        else:
            client = self._client("holds" if parts == ["api", "v1", "holds"] else "read")
        if client is None:
            return None
        if parts == ["api", "v1", "export"]:
            return self._export(client, parse_qs(url.query))
        try:
            with self.server.lock:
                return self._route(client, parts, parse_qs(url.query))
        except (StoreError, ValueError) as exc:
            return self._json(400, {"error": str(exc)})

    def _post(self):
        parts = [p for p in urlsplit(self.path).path.split("/") if p]
        importing = parts == ["api", "v1", "import"]
        client = self._client("import") if importing else None  # before reading a large body
        if importing and client is None:
            self.close_connection = True
            return None
        try:
            body = self._read_body(MAX_IMPORT_HEAD + max(MAX_IMPORT_BYTES, self.server.store.config.max_message_bytes)
                                   if importing else MAX_BODY)
        except StoreError as exc:
            return self._json(413, {"error": str(exc)})
        if importing:
            return self._import(client, body)
        if parts == ["api", "v1", "import", "known"]:
            return self._known(body)
        if len(parts) == 5 and parts[:3] == ["api", "v1", "probes"] and parts[4] == "purge":
            return self._purge_probes(parts[3])
        if parts in (["api", "v1", "holds"], ["api", "v1", "holds", "remove"]):
            return self._change_hold(body, remove=len(parts) == 4)
        if parts == ["api", "v1", "messages", "raw"]:
            return self._raw_batch(body)
        if parts == ["api", "v1", "arrivals"] or (len(parts) == 5 and parts[:3] == ["api", "v1", "messages"]
                                                  and parts[4] in ("arrivals", "remove-duplicate")):
            return self._dedupe(parts, body)
        return self._json(404, {"error": f"no such endpoint {self.path}"})

    def _metrics(self):
        if self._client("metrics") is None:
            return None
        with self.server.lock:  # the collector reads the index through the API's connection
            body = metrics.exposition()
        return self._send(200, body, metrics.CONTENT_TYPE)

    def _writer(self, change):
        """Run ``change(store)`` on a writable store under the API's lock."""
        with self.server.lock:
            writer = Store(self.server.store.config, recover=False)
            try:
                return change(writer)
            finally:
                writer.close()

    def _purge_probes(self, run):
        client = self._client("probes")
        if client is None:
            return None
        try:
            removed = self._writer(lambda writer: retention.purge_probes(writer, run))
        except StoreError as exc:
            return self._json(400, {"error": str(exc)})
        log.info("purged %d delivery-check probes of run %s for %s at %s", len(removed), run, client.name,
                 self.client_address[0])
        return self._json(200, {"server_id": self.server.store.config.server_id, "purged": removed})

    def _change_hold(self, data, remove):
        client = self._client("holds")
        if client is None:
            return None
        config = self.server.store.config
        try:
            body = self._json_object(data)
            address, reason = str(body.get("address", "")), str(body.get("reason", "")).strip()
            if not reason:
                raise StoreError("hold: expected a reason, found nothing")
            holds = retention.Holds(config.holds_file, config.audit_log)
            with self.server.lock:
                (holds.remove if remove else holds.add)(address, reason, client=client.name, client_address=self.client_address[0])
        except StoreError as exc:
            return self._json(400, {"error": str(exc)})
        return self._json(200, {"server_id": config.server_id, "holds": holds.load()})

    def _raw_batch(self, data):
        """Many messages' bytes in one answer: an export fetches thousands, and a request each cost more than the mail."""
        client = self._client("read")
        if client is None:
            return None
        store = self.server.store
        try:
            wanted = self._json_object(data).get("ids")
            if not isinstance(wanted, list) or not all(isinstance(i, str) for i in wanted) or not 0 < len(wanted) <= MAX_LIMIT:
                raise StoreError(f"raw batch: expected {{\"ids\": [...]}} with 1 to {MAX_LIMIT} archive IDs")
            with self.server.lock:  # the index's connection is the API's, one thread at a time
                sizes = store.index.sizes(wanted)
            total = sum(sizes.values())
            if total > MAX_BATCH_BYTES:
                raise StoreError(f"raw batch: expected at most {MAX_BATCH_BYTES} bytes of mail per request, "
                                 f"these {len(wanted)} messages hold {total}; ask for fewer")
            held = [i for i in dict.fromkeys(wanted) if i in sizes]
            # The objects are read outside the lock: written once and never changed, they need none, and an
            # export's next batch or another person's search need not wait for this one's reads.
            found = dict(store.get_raw_many(held))
            parts = []
            for archive_id in wanted:
                raw = found.get(archive_id)
                parts.append(b"%s %d\n" % (archive_id.encode("ascii", "replace"), -1 if raw is None else len(raw)))
                if raw is not None:
                    parts += [raw, b"\n"]
        except StoreError as exc:
            return self._json(400, {"error": str(exc)})
        self._logged(client, "get raw", ids=held)
        return self._send(200, b"".join(parts), "application/octet-stream")

    def _export(self, client, query):
        """A whole export's share of this worker in one answer: the matches' fields, each followed by its bytes.

        One search collects the matches (a page at a time, each page searched again from the newest, cost
        three times as much on 2,000 matches), then the objects are read a few hundred at a time, outside the
        lock, and written as they come. The answer has no length: it ends when the connection closes, and
        its last line says whether it is whole.
        """
        store = self.server.store
        try:
            limit = int(query.get("limit", [str(MAX_EXPORT)])[0])
            if not 0 < limit <= MAX_EXPORT:
                raise StoreError(f"export: expected a limit of 1 to {MAX_EXPORT} messages, found {limit}")
            text, involving = query.get("q", [""])[0], query.get("participant", [])
            fields = _fields(query.get("fields", [""])[0])
            fields += ("size",) if fields and "size" not in fields else ()
            with_mail = query.get("mail", ["1"])[0] == "1"
            with self.server.lock:
                rows = store.index.search(text, limit=limit + 1, involving=involving, brief=True)
            if len(rows) > limit:
                raise StoreError(f"export {text!r}: matches more than {limit} messages on this worker; narrow it")
        except (StoreError, ValueError) as exc:
            return self._json(400, {"error": str(exc)})
        self.answered, self.close_connection = 200, True
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        sent = []
        try:
            self.wfile.write(b'{"matches": %d}\n' % len(rows))
            # The next group's files are read while this one is sent.
            for group, found in started_ahead(batches(rows, EXPORT_READ_MESSAGES, EXPORT_READ_BYTES), lambda group: (
                    store.get_raw_many([row["id"] for row in group]) if with_mail else iter(()))):
                for row, (_id, raw) in itertools.zip_longest(group, found, fillvalue=(None, None)):
                    self.wfile.write(json.dumps({name: row[name] for name in fields} if fields else row).encode("utf-8") + b"\n")
                    if raw is not None:
                        self.wfile.write(raw + b"\n")
                    sent.append(row["id"])
            self.wfile.write(b'{"end": %d}\n' % len(sent))
        except StoreError as exc:  # an object retention removed meanwhile: the client stops, naming it
            self.wfile.write(json.dumps({"error": str(exc)}).encode("utf-8") + b"\n")
        except OSError as exc:
            log.info("export for %s at %s cut off after %d messages: %s", client.name, self.client_address[0], len(sent), exc)
        finally:  # what was sent, in entries of MAX_LIMIT IDs, as the raw batch logs them
            for at in range(0, max(len(sent), 1), MAX_LIMIT):
                self._logged(client, "get raw" if with_mail else f"search q={text!r} export", ids=sent[at:at + MAX_LIMIT])
        return None

    def _dedupe(self, parts, data):
        """The site-wide duplicate pass's endpoints (scope dedupe): arrivals of messages; arrivals recorded on the
        kept copy; the extra copy removed. Each change is audited by the store with this client's name."""
        client = self._client("dedupe")
        if client is None:
            return None
        by = {"client": client.name, "client_address": self.client_address[0]}
        try:
            body = self._json_object(data)
            if parts[-1] == "arrivals" and len(parts) == 3:
                wanted = body.get("ids")
                if not isinstance(wanted, list) or not all(isinstance(i, str) for i in wanted) or not 0 < len(wanted) <= MAX_LIMIT:
                    raise StoreError(f"arrivals: expected {{\"ids\": [...]}} with 1 to {MAX_LIMIT} archive IDs")
                with self.server.lock:
                    found = self.server.store.index.arrivals_of(wanted)
                self._logged(client, "arrivals", ids=sorted(found))
                return self._json(200, {"server_id": self.server.store.config.server_id, "arrivals": found})
            archive_id, sha256 = parts[3], str(body.get("sha256", ""))
            if parts[4] == "arrivals":
                source = body.get("source") if isinstance(body.get("source"), dict) else {}
                added = self._writer(lambda writer: retention.add_arrivals(
                    writer, archive_id, sha256, body.get("arrivals"), from_worker=str(source.get("worker", "")),
                    from_id=str(source.get("id", "")), **by))
                return self._json(200, {"server_id": self.server.store.config.server_id, "added": added})
            kept = body.get("kept") if isinstance(body.get("kept"), dict) else {}
            removed = self._writer(lambda writer: retention.remove_duplicate(writer, archive_id, sha256, kept, **by))
        except StoreError as exc:
            return self._json(400, {"error": str(exc)})
        log.info("removed %s, a duplicate delivery of %s on %s, for %s at %s", archive_id, kept["id"], kept["worker"],
                 client.name, self.client_address[0])
        return self._json(200, {"server_id": self.server.store.config.server_id, "removed": removed})

    def _import(self, client, data):
        """Store imported messages; answer each one's outcome once the batch is committed.

        The body is one JSON line, then the messages' bytes one after another::

            {"messages": [{"size": 20481, "sha256": "<hex>", "key": "<the source's key for it>",
                           "dated": 1262304000, "origin": {"kind": "mbox", "source": "old.mbox",
                           "folder": "", "position": "byte 1234"}}, ...]}\n<bytes><bytes>...

        ``key`` names the message within its source for good (the importer derives it from the source and
        the position): a batch sent again after a lost answer finds its messages committed before.
        Each result is {"status": "stored" | "duplicate" | "committed-before" | "rejected", "id", "reason"}.
        """
        config = self.server.store.config
        try:
            if self.server.importer is None:
                raise Refused("this server takes no imports")
            arrivals, results = self._import_arrivals(client, data, config.max_message_bytes)
            taken = [position for position, arrival in enumerate(arrivals) if arrival is not None]
            outcomes = self.server.importer([arrivals[p] for p in taken]) if taken else []
        except Refused as exc:
            return self._json(503, {"error": str(exc)})
        except StoreError as exc:
            return self._json(400, {"error": str(exc)})
        for position, outcome in zip(taken, outcomes):
            results[position] = {"status": outcome.status, "id": outcome.archive_id}
        stored = [r["id"] for r in results if r["status"] == "stored"]
        self._logged(client, "import", ids=stored, count=len(results))
        return self._json(200, {"server_id": config.server_id, "results": results})

    def _import_arrivals(self, client, data, largest):
        """(arrivals, results) of an import body: an arrival per message to store, or None with its result set."""
        head, newline, rest = data.partition(b"\n")
        try:
            described = json.loads(head)["messages"] if newline and len(head) <= MAX_IMPORT_HEAD else None
        except (ValueError, KeyError, TypeError):
            described = None
        if not isinstance(described, list) or not 0 < len(described) <= MAX_LIMIT:
            raise StoreError(f"import: expected a JSON line {{\"messages\": [...]}} of 1 to {MAX_LIMIT} messages, then their bytes")
        arrivals, results, at, now = [], [], 0, int(time.time())
        for number, entry in enumerate(described):
            where = f"import: message {number}"
            if not isinstance(entry, dict) or not isinstance(entry.get("size"), int) or entry["size"] < 0:
                raise StoreError(f"{where}: expected an object with its size in bytes")
            key, origin = entry.get("key"), entry.get("origin")
            if not isinstance(key, str) or not _IMPORT_KEY.match(key):
                raise StoreError(f"{where}: expected a key of 1 to 128 letters, digits, '.', '_', ':' or '-'")
            if not isinstance(origin, dict) or not all(isinstance(origin.get(f, ""), str) and len(origin.get(f, "")) <= 1024
                                                       for f in _ORIGIN_FIELDS):
                raise StoreError(f"{where}: expected an origin with {', '.join(_ORIGIN_FIELDS)} as strings")
            dated = entry.get("dated")
            if dated is not None and not isinstance(dated, int):
                raise StoreError(f"{where}: expected dated as seconds since the epoch, or null")
            raw = rest[at:at + entry["size"]]
            at += entry["size"]
            if len(raw) != entry["size"] or hashlib.sha256(raw).hexdigest() != entry.get("sha256"):
                raise StoreError(f"{where}: its bytes do not match the size and sha256 described; nothing was stored")
            if len(raw) > largest:
                arrivals.append(None)
                results.append({"status": "rejected", "id": "",
                                "reason": f"{len(raw)} bytes, more than this store's limit of {largest}"})
                continue
            origin = {f: origin.get(f, "") for f in _ORIGIN_FIELDS}
            origin["client"] = client.name
            # The key names a position within one source; with the digest, the same key from another source (or
            # changed bytes at that position) is a new arrival, while a retry of this one is committed-before.
            arrivals.append(Arrival(raw=raw, spool_name=f"import:{client.name}:{key}:{entry['sha256'][:16]}", origin=origin,
                                    dated=dated, transit=[_import_line(origin, now)]))
            results.append(None)
        if at != len(rest):
            raise StoreError(f"import: the messages described take {at} bytes, the body carries {len(rest)}; nothing was stored")
        return arrivals, results

    def _known(self, data):
        """Which of these messages (by sha256) this worker holds: the importer's check before it sends."""
        client = self._client("import")
        if client is None:
            return None
        try:
            wanted = self._json_object(data).get("sha256")
            if not isinstance(wanted, list) or not all(isinstance(d, str) for d in wanted) or not 0 < len(wanted) <= MAX_LIMIT:
                raise StoreError(f"known: expected {{\"sha256\": [...]}} with 1 to {MAX_LIMIT} digests")
            with self.server.lock:
                known = {digest: found[1] for digest in wanted for found in [self.server.store.index.rowid_by_sha(digest)] if found}
        except StoreError as exc:
            return self._json(400, {"error": str(exc)})
        return self._json(200, {"server_id": self.server.store.config.server_id, "known": known})

    def _logged(self, client, endpoint, **what):
        self.server.access_log.write(client, self.client_address[0], endpoint, **what)

    def _route(self, client, parts, query):
        store = self.server.store
        if parts == ["api", "v1", "stats"]:
            stats = store.index.stats()
            stats.update(self.server.status())
            stats["server_id"] = store.config.server_id
            stats["version"] = __version__
            return self._json(200, stats)
        if parts == ["api", "v1", "holds"]:
            holds = retention.Holds(store.config.holds_file, store.config.audit_log).load()
            return self._json(200, {"server_id": store.config.server_id, "holds": holds})
        if parts == ["api", "v1", "search"]:
            limit = min(int(query.get("limit", ["50"])[0]), MAX_LIMIT)
            offset = int(query.get("offset", ["0"])[0])
            text, involving = query.get("q", [""])[0], query.get("participant", [])
            fields = _fields(query.get("fields", [""])[0])
            results = store.index.search(text, limit=limit, offset=offset, involving=involving,
                                         brief=query.get("brief", ["0"])[0] == "1")
            if fields:  # an export reads thousands of rows and needs five of their fields
                results = [{name: row[name] for name in fields} for row in results]
            self._logged(client, f"search q={text!r} offset={offset}" + (f" participants={involving!r}" if involving else ""),
                         ids=[r["id"] for r in results])
            return self._json(200, {"server_id": store.config.server_id, "results": results})
        if parts == ["api", "v1", "list"]:
            since, until = int(query.get("since", ["0"])[0]), int(query.get("until", [str(2 ** 62)])[0])
            rows = store.index.listing(since=since, until=until, after=query.get("after", [""])[0],
                                       limit=min(int(query.get("limit", ["1000"])[0]), 10 * MAX_LIMIT))
            self._logged(client, f"list since={since} until={until}", count=len(rows))
            return self._json(200, {"server_id": store.config.server_id, "results": rows})
        if len(parts) in (4, 5) and parts[:3] == ["api", "v1", "messages"]:
            return self._message(client, parts, query)
        return self._json(404, {"error": f"no such endpoint {self.path}"})

    def _message(self, client, parts, query):
        store = self.server.store
        archive_id = parts[3]
        row = store.index.get(archive_id)
        if row is None:
            return self._json(404, {"error": f"no message with id {archive_id}"})
        if len(parts) == 5 and parts[4] == "raw":
            raw = store.get_raw(archive_id)
            self._logged(client, "get raw", ids=[archive_id])
            return self._send(200, raw, "message/rfc822")
        row["transit"] = store.index.transit(archive_id)
        row["imported_from"] = imported_from(row["transit"])
        with_raw = query.get("raw", ["0"])[0] == "1"
        if with_raw:
            row["raw_b64"] = base64.b64encode(store.get_raw(archive_id)).decode("ascii")
        self._logged(client, "get raw" if with_raw else "get metadata", ids=[archive_id])
        return self._json(200, row)


def _fields(asked: str) -> tuple:
    """The search's ``fields=`` (comma-separated names of SEARCH_FIELDS), the id always first; () for all."""
    names = [name for name in asked.split(",") if name]
    unknown = [name for name in names if name not in SEARCH_FIELDS]
    if unknown:
        raise StoreError(f"search: fields {', '.join(unknown)} unknown; expected some of {', '.join(SEARCH_FIELDS)}")
    return tuple(dict.fromkeys(["id"] + names)) if names else ()


def _import_line(origin: dict, now: int) -> str:
    """The arrival's transit line of an imported message: who imported it, from where, when."""
    where = " ".join(f"{field} {origin[field]}" for field in ("folder", "position") if origin[field])
    return (f"imported by {origin['client']} from {origin['kind'] or 'unknown'} {origin['source'] or '-'}"
            f"{' ' + where if where else ''}; {time.strftime('%a, %d %b %Y %H:%M:%S +0000', time.gmtime(now))}")


def imported_from(transit) -> str:
    """Who imported a message, from where and when (the first arrival's line from _import_line); "" for journaled mail."""
    return transit[0][len("imported "):] if transit and transit[0].startswith("imported by ") else ""
