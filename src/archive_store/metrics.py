"""The store's Prometheus metrics, served at GET /api/v1/metrics (the ``metrics`` scope).

Counters and histograms are counted as things happen (ingest, API, policy); the rest is read
when Prometheus scrapes (StoreCollector): the index's totals, the spool, the license,
maintenance, the sizes on disk and the times of the last ``verify --all`` and backup.

Why on the API's port, behind its TLS and a token of its own, and not on a plain port of its
own: the API already has the site CA's certificate, per-client tokens and an nftables rule that
names its clients, so Prometheus is one more client (``monitor-<host>``, scope ``metrics``) and
no second listener needs guarding; Prometheus reads bearer tokens and CA files natively.

Names follow Prometheus's conventions: base units (seconds, bytes), counters end in _total,
timestamps are seconds since the epoch (the alert rules turn them into ages and days).
"""

import os
import re
import shutil
import time
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

from archive_store import __version__

REGISTRY = CollectorRegistry(auto_describe=True)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

INGESTED = Counter("archive_store_ingested_messages_total", "Spool files ingested, by outcome (stored: a new message; "
                   "duplicate: the same bytes again, recorded as one more arrival).", ["outcome"], registry=REGISTRY)
INGESTED_BYTES = Counter("archive_store_ingested_bytes_total", "Raw bytes of the messages stored.", registry=REGISTRY)
INGEST_ERRORS = Counter("archive_store_ingest_errors_total", "Ingest failures by kind (deferred: a batch failed to "
                        "commit and stays in the spool; unreadable: a spool file could not be read; stopped: "
                        "ingest stopped on a store error).", ["kind"], registry=REGISTRY)
INGEST_LATENCY = Histogram("archive_store_ingest_latency_seconds", "From delivery into the spool to the message's commit.",
                           buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600), registry=REGISTRY)
API_REQUESTS = Counter("archive_store_api_requests_total", "API requests by endpoint and HTTP status.",
                       ["endpoint", "code"], registry=REGISTRY)
API_LATENCY = Histogram("archive_store_api_request_duration_seconds", "Time to answer an API request, by endpoint.",
                        ["endpoint"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10), registry=REGISTRY)
POLICY_ANSWERS = Counter("archive_store_policy_answers_total", "The policy service's answers to postfix "
                         "(DUNNO: take the mail; 451: license or maintenance; 452: disk).", ["code"], registry=REGISTRY)

# The API's endpoints as a bounded label: the path with IDs and run names taken out.
_ENDPOINTS = (
    (re.compile(r"^/api/v1/messages/raw$"), "messages/raw"),
    (re.compile(r"^/api/v1/messages/[^/]+/raw$"), "messages/:id/raw"),
    (re.compile(r"^/api/v1/messages/[^/]+$"), "messages/:id"),
    (re.compile(r"^/api/v1/probes/[^/]+/purge$"), "probes/:run/purge"),
    (re.compile(r"^/api/v1/(stats|search|export|list|holds|holds/remove|import|import/known|metrics)$"), None),
)


def endpoint_label(path: str) -> str:
    """A bounded name for the request's endpoint ("other" for anything unknown)."""
    path = path.split("?", 1)[0].rstrip("/")
    for pattern, name in _ENDPOINTS:
        match = pattern.match(path)
        if match:
            return name or match.group(1)
    return "other"


def policy_code(action: str) -> str:
    return action.split(" ", 1)[0]


def _mtime(path: Path):
    try:
        return path.stat().st_mtime
    except OSError:
        return None


class StoreCollector:
    """What Prometheus reads at each scrape, from the index, the spool, the license and the files."""

    def __init__(self, store, ingestor) -> None:
        self.store = store
        self.ingestor = ingestor

    def describe(self):
        return []  # collected afresh at every scrape

    def collect(self):
        config, status = self.store.config, self.ingestor.status()
        stats = self.store.index.stats()
        yield _gauge("archive_store_info", "The store's version and server_id.", 1,
                     {"version": __version__, "server_id": str(config.server_id)})
        yield _gauge("archive_store_messages", "Messages in the index.", stats["messages"])
        yield _gauge("archive_store_arrivals", "Arrivals recorded (a duplicate is one more arrival of a message).", stats["arrivals"])
        yield _gauge("archive_store_raw_bytes", "Raw bytes of the messages stored (as sent).", stats["raw_bytes"])
        yield _gauge("archive_store_sealed_bytes", "Bytes of the sealed objects (compressed and encrypted).", stats["stored_bytes"])
        yield _gauge("archive_store_index_bytes", "Size of the index on disk: its database, write-ahead log and closed shards.",
                     self.store.index.files_bytes())
        yield _gauge("archive_store_index_shards", "Closed, read-only shards of the full-text index.", stats["index_shards"])
        yield _gauge("archive_store_last_arrival_timestamp_seconds", "When the newest message arrived.", stats["last_arrival"] or 0)
        yield _gauge("archive_store_spool_messages", "Spool files waiting to be ingested.", status["spool_backlog"])
        oldest = status["spool_oldest"]
        yield _gauge("archive_store_spool_oldest_age_seconds", "Age of the oldest spool file waiting (0: none).",
                     max(0.0, time.time() - oldest) if oldest else 0)
        yield _gauge("archive_store_license_valid", "1 while the license lets this worker ingest, else 0.", int(status["license"] is not None))
        if status["license"]:
            yield _gauge("archive_store_license_expiry_timestamp_seconds", "When the license expires.", status["license"]["expiry"])
        yield _gauge("archive_store_maintenance", "1 while the worker is in maintenance (drained, answering 451).",
                     int(bool(status["maintenance"])))
        yield _gauge("archive_store_ingesting", "1 while ingest runs without error, else 0.", int(status["ingesting"]))
        for name, path in (("data", config.data_dir), ("spool", config.spool_dir)):
            try:
                usage = shutil.disk_usage(path)
            except OSError:
                continue
            yield _gauge("archive_store_filesystem_free_bytes", "Free bytes on the store's filesystems.", usage.free, {"filesystem": name})
            yield _gauge("archive_store_filesystem_size_bytes", "Size of the store's filesystems.", usage.total, {"filesystem": name})
        yield _gauge("archive_store_first_arrival_timestamp_seconds", "When the oldest message arrived (0: none yet).",
                     self.store.index.first_arrival() or 0)
        for what, path in (("verify", config.verified_file), ("backup", config.backed_up_file)):
            stamp = _mtime(path)
            if stamp is not None:
                yield _gauge(f"archive_store_last_{what}_timestamp_seconds", f"When the last successful {what} finished.", stamp)


def _gauge(name, documentation, value, labels=None):
    family = GaugeMetricFamily(name, documentation, labels=list(labels or {}))
    family.add_metric(list((labels or {}).values()), value)
    return family


def register(store, ingestor) -> None:
    REGISTRY.register(StoreCollector(store, ingestor))


def exposition() -> bytes:
    return generate_latest(REGISTRY)


def mark_done(path: Path) -> None:
    """Record a successful verify --all or backup: the file's time is what the metrics report."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(time.strftime("%Y-%m-%dT%H:%M:%SZ\n", time.gmtime()), encoding="ascii")
    os.replace(tmp, path)
