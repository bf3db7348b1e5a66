# -*- coding: utf-8 -*-
# Copyright: mailarchive.cluster maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A small client for the archive store's read-only HTTP API."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import socket
from concurrent.futures import ThreadPoolExecutor
from urllib.error import HTTPError, URLError
from urllib.parse import quote

from ansible.module_utils.urls import Request, make_context


_TLS_CONTEXT = []


def _tls_context():
    """One TLS context per process: making one loads the CA bundle (about 25 ms), which open_url does
    on every request, even for http URLs, and which made a fan-out over five workers 3x slower."""
    if not _TLS_CONTEXT:
        _TLS_CONTEXT.append(make_context())
    return _TLS_CONTEXT[0]


# Archive IDs start with a TAI64N label: 8 bytes of seconds, 4 of nanoseconds.
TAI64_EPOCH = 2 ** 62 + 10
# delivery_check's probes carry Message-IDs of this form (run token, number).
PROBE_MESSAGE_ID = "<probe-%s-%d@mailarchive.invalid>"


def archive_id_time(archive_id):
    """Unix time (seconds, with fraction) at which a worker stored the message with this ID."""
    return int(archive_id[0:16], 16) - TAI64_EPOCH + int(archive_id[16:24], 16) / 1e9


def archive_id_server(archive_id):
    """The server_id of the worker that stored the message with this ID."""
    return int(archive_id[24:26], 16)


def is_probe(message_id):
    """Whether a Message-ID is one of delivery_check's probes."""
    return message_id.startswith("<probe-") and message_id.endswith("@mailarchive.invalid>")


class ArchiveApiError(Exception):
    """One line naming the worker, the request and what went wrong."""


def archive_api_argument_spec():
    """The options of the archive_api doc fragment, for a module's argument_spec."""
    return dict(
        workers=dict(type="list", elements="dict", required=True, options=dict(
            name=dict(type="str", required=True),
            url=dict(type="str", required=True),
            server_id=dict(type="int", required=True),
            token=dict(type="str", no_log=True),
        )),
        api_token=dict(type="str", no_log=True),
        api_timeout=dict(type="float", default=5),
    )


def worker_apis(params):
    """An ArchiveApi per entry of the archive_api doc fragment's O(workers), with O(api_token) as fallback."""
    apis = []
    for spec in params["workers"]:
        token = spec.get("token") or params.get("api_token")
        if not token:
            raise ArchiveApiError("worker %s: no API token (set workers[].token or api_token)" % spec["name"])
        apis.append(ArchiveApi(spec["name"], spec["url"], token, params["api_timeout"], spec.get("server_id")))
    return apis


def search_all(apis, query, limit=50, offset=0):
    """Search every worker at once; the newest matches cluster-wide, ``offset`` to ``offset + limit``.

    Each worker returns its own newest ``offset + limit``; the merge orders them by archive ID, which
    starts with the time the message was stored. Each result names its ``worker``. The first worker
    that fails raises ArchiveApiError: a search that silently left out a worker would be wrong.
    """
    with ThreadPoolExecutor(max_workers=len(apis)) as pool:
        answers = [(api, pool.submit(api.search, query, offset + limit)) for api in apis]
        merged = []
        for api, answer in answers:
            for row in answer.result():
                row["worker"] = api.name
                merged.append(row)
    merged.sort(key=lambda row: row["id"], reverse=True)
    return merged[offset:offset + limit]


class ArchiveApi(object):
    def __init__(self, name, url, token, timeout=5.0, server_id=None):
        self.name = name
        self.url = url.rstrip("/")
        self.server_id = server_id
        self._http = Request(headers={"Authorization": "Bearer " + token}, timeout=timeout, follow_redirects="none",
                             context=_tls_context())

    def _request(self, path, method="GET"):
        try:
            response = self._http.open(method, self.url + path, data=b"" if method == "POST" else None)
            try:
                return response.read()
            finally:
                response.close()
        except HTTPError as exc:
            raise ArchiveApiError("%s: %s %s answered HTTP %s" % (self.name, method, path, exc.code))
        except (URLError, socket.timeout, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ArchiveApiError("%s: %s %s%s failed: %s" % (self.name, method, self.url, path, reason))

    def _get(self, path):
        return self._request(path)

    def get_json(self, path):
        return json.loads(self._get(path).decode("utf-8"))

    def search(self, query, limit=1000):
        return self.get_json("/api/v1/search?q=%s&limit=%d" % (quote(query), limit))["results"]

    def stats(self):
        return self.get_json("/api/v1/stats")

    def raw(self, archive_id):
        return self._get("/api/v1/messages/%s/raw" % archive_id)

    def listing(self, since, until, page=1000):
        """Every message archived in [since, until): dicts with id, sha256, message_id, arrived, size."""
        after = ""
        while True:
            rows = self.get_json("/api/v1/list?since=%d&until=%d&after=%s&limit=%d" % (since, until, after, page))
            yield from rows["results"]
            if len(rows["results"]) < page:
                return
            after = rows["results"][-1]["id"]

    def purge_probes(self, run):
        """Remove one delivery_check run's probes (the store writes an audit entry for each)."""
        return json.loads(self._request("/api/v1/probes/%s/purge" % quote(run), method="POST").decode("utf-8"))["purged"]
