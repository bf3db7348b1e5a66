"""Read-only HTTP API for the cluster, with bearer-token auth.

    GET /health                       no auth; {"status": "ok"}
    GET /api/v1/stats                 counts, bytes, spool backlog, license
    GET /api/v1/search?q=...&limit=   metadata of matching messages, newest first
    GET /api/v1/messages/<id>         metadata, with the raw bytes as base64 if ?raw=1
    GET /api/v1/messages/<id>/raw     the raw bytes (message/rfc822)
    GET /api/v1/list?since=&until=&after=&limit=
                                      id, sha256, Message-ID and arrival time of the
                                      messages archived in [since, until), by id
    POST /api/v1/probes/<run>/purge   remove delivery_check's probes of one run
                                      (see retention.purge_probes); the only write
"""

import base64
import hmac
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable
from urllib.parse import parse_qs, urlsplit

from archive_store import __version__, retention
from archive_store.errors import StoreError
from archive_store.store import Store

log = logging.getLogger("archive_store.api")
MAX_LIMIT = 1000


def read_token(path: Path) -> str:
    try:
        token = Path(path).read_text(encoding="ascii").strip()
    except FileNotFoundError:
        raise StoreError(f"API token file {path}: expected it to exist, found nothing") from None
    if len(token) < 16:
        raise StoreError(f"API token file {path}: expected at least 16 characters, found {len(token)}")
    return token


class ApiServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address, store: Store, token: str, status: Callable[[], dict]) -> None:
        super().__init__(address, Handler)
        self.store = store
        self.token = token.encode("ascii")
        self.status = status
        self.lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    server: ApiServer
    server_version = f"archive-store/{__version__}"

    def log_message(self, fmt, *args):  # route access logs through logging
        log.debug("%s %s", self.address_string(), fmt % args)

    def _send(self, code: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if code == 401:
            self.send_header("WWW-Authenticate", 'Bearer realm="archive-store"')
        self.end_headers()
        self.wfile.write(body)

    def _json(self, code: int, obj) -> None:
        self._send(code, json.dumps(obj, sort_keys=True).encode("utf-8"))

    def _authorized(self) -> bool:
        header = self.headers.get("Authorization", "")
        scheme, token = header.partition(" ")[::2]
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode("ascii", "replace"), self.server.token)

    def do_GET(self):  # noqa: N802 (http.server's naming)
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        parts = [p for p in url.path.split("/") if p]
        if parts == ["health"]:
            return self._json(200, {"status": "ok"})
        if not self._authorized():
            return self._json(401, {"error": "missing or wrong bearer token"})
        try:
            with self.server.lock:
                return self._route(parts, query)
        except (StoreError, ValueError) as exc:
            return self._json(400, {"error": str(exc)})

    def do_POST(self):  # noqa: N802
        parts = [p for p in urlsplit(self.path).path.split("/") if p]
        if not self._authorized():
            return self._json(401, {"error": "missing or wrong bearer token"})
        if len(parts) != 5 or parts[:3] != ["api", "v1", "probes"] or parts[4] != "purge":
            return self._json(404, {"error": f"no such endpoint {self.path}"})
        try:
            with self.server.lock:
                writer = Store(self.server.store.config, recover=False)
                try:
                    removed = retention.purge_probes(writer, parts[3])
                finally:
                    writer.close()
        except StoreError as exc:
            return self._json(400, {"error": str(exc)})
        log.info("purged %d delivery-check probes of run %s for %s", len(removed), parts[3], self.address_string())
        return self._json(200, {"server_id": self.server.store.config.server_id, "purged": removed})

    def _route(self, parts, query):
        store = self.server.store
        if parts == ["api", "v1", "stats"]:
            stats = store.index.stats()
            stats.update(self.server.status())
            stats["server_id"] = store.config.server_id
            stats["version"] = __version__
            return self._json(200, stats)
        if parts == ["api", "v1", "search"]:
            limit = min(int(query.get("limit", ["50"])[0]), MAX_LIMIT)
            offset = int(query.get("offset", ["0"])[0])
            results = store.index.search(query.get("q", [""])[0], limit=limit, offset=offset)
            return self._json(200, {"server_id": store.config.server_id, "results": results})
        if parts == ["api", "v1", "list"]:
            rows = store.index.listing(since=int(query.get("since", ["0"])[0]),
                                       until=int(query.get("until", [str(2 ** 62)])[0]),
                                       after=query.get("after", [""])[0],
                                       limit=min(int(query.get("limit", ["1000"])[0]), 10 * MAX_LIMIT))
            return self._json(200, {"server_id": store.config.server_id, "results": rows})
        if len(parts) in (4, 5) and parts[:3] == ["api", "v1", "messages"]:
            archive_id = parts[3]
            row = store.index.get(archive_id)
            if row is None:
                return self._json(404, {"error": f"no message with id {archive_id}"})
            if len(parts) == 5 and parts[4] == "raw":
                return self._send(200, store.get_raw(archive_id), "message/rfc822")
            row["transit"] = store.index.transit(archive_id)
            if query.get("raw", ["0"])[0] == "1":
                row["raw_b64"] = base64.b64encode(store.get_raw(archive_id)).decode("ascii")
            return self._json(200, row)
        return self._json(404, {"error": f"no such endpoint {self.path}"})
