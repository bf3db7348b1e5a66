"""The ingest loop: spool -> store, gated by the license."""

import concurrent.futures
import errno
import sqlite3
import logging
import threading
import time
from typing import Optional

from archive_common import license as licensing
from archive_common.license import LicenseError
from archive_store import crashpoints, metrics
from archive_store.config import Config
from archive_store.errors import Refused, StoreError
from archive_store.policy import decide, maintenance
from archive_store.spool import Maildir, from_postfix, spool_time
from archive_store.store import Store

log = logging.getLogger("archive_store")
LICENSE_RECHECK_S = 60


def _reason(exc) -> str:
    return f"{exc.strerror} ({errno.errorcode.get(exc.errno, '?')})" if isinstance(exc, OSError) else str(exc)


class Ingestor:
    def __init__(self, config: Config, store: Store) -> None:
        self.config = config
        self.store = store
        self.spool = Maildir(config.spool_dir)
        self.license: Optional[licensing.License] = None
        self.license_error = ""
        self.last_error = ""
        self.stored = 0
        self.duplicates = 0
        self._license_checked = 0.0
        self._license_mtime = None
        self._removing = set()
        self._removals = set()
        # One writer at a time: the spool's batches and the API's imports share the store (and its intent file).
        self.lock = threading.Lock()

    def check_license(self, force: bool = False, report: bool = True) -> bool:
        """Re-read the license when it changed or a minute passed; log changes once."""
        try:
            mtime = self.config.license_file.stat().st_mtime
        except OSError:
            mtime = None
        now = time.time()
        if not force and mtime == self._license_mtime and now - self._license_checked < LICENSE_RECHECK_S:
            return self.license is not None
        self._license_checked, self._license_mtime = now, mtime
        try:
            lic = licensing.load(self.config.license_file, self.config.server_id, self.config.hostname)
        except LicenseError as exc:
            if report and str(exc) != self.license_error:
                log.error("refusing to ingest, mail stays in the spool: %s", exc)
            self.license, self.license_error = None, str(exc)
            return False
        if self.license is None:
            log.info("license valid: customer=%s server_id=%d expires in %.1f days",
                     lic.customer, lic.server_id, lic.days_left())
            warning = licensing.expiry_warning(lic)
            if warning:
                log.warning(warning)
        self.license, self.license_error = lic, ""
        return True

    def drain_once(self) -> int:
        """Ingest one batch from the spool; return how many spool files it took."""
        if not self.check_license():
            return 0
        arrivals = self._read_batch()
        if not arrivals:
            return 0
        try:
            self._ingest(arrivals)
        except (OSError, sqlite3.Error) as exc:
            self.last_error = f"ingest deferred: {_reason(exc)}; mail stays in the spool"
            log.error(self.last_error)
            metrics.INGEST_ERRORS.labels("deferred").inc()
            return 0
        committed = time.time()
        for arrival in arrivals:
            delivered = spool_time(arrival.spool_name)
            if delivered:
                metrics.INGEST_LATENCY.observe(max(0.0, committed - delivered))
        crashpoints.reach("ingested")
        self._remove_later([a.spool_name for a in arrivals])
        self.last_error = ""
        return len(arrivals)

    def _ingest(self, arrivals) -> list:
        """Store a batch under the writer's lock, log and count each outcome; on a fault, undo the batch and raise."""
        with self.lock:
            try:
                outcomes = self.store.ingest(arrivals)
            except (OSError, sqlite3.Error):
                self.store.recover()
                raise
        for arrival, outcome in zip(arrivals, outcomes):
            log.info(outcome.log_line())
            self.stored += outcome.status == "stored"
            self.duplicates += outcome.status == "duplicate"
            metrics.INGESTED.labels(outcome.status).inc()
            if outcome.status == "stored":
                metrics.INGESTED_BYTES.inc(len(arrival.raw))
        return outcomes

    def import_batch(self, arrivals) -> list:
        """Store imported messages (POST /api/v1/import) durably and return their outcomes.

        Refused as a whole, with the reason, when journaled mail would be
        refused too (maintenance, license, disk space: policy.decide), or when
        the store cannot write; a refused batch leaves nothing behind.
        """
        refusal = self.policy_answer(sum(len(a.raw) for a in arrivals))
        if refusal != "DUNNO":
            raise Refused(refusal.split(" ", 2)[2])
        try:
            return self._ingest(arrivals)
        except (OSError, sqlite3.Error) as exc:
            metrics.INGEST_ERRORS.labels("deferred").inc()
            raise Refused(f"cannot store the batch now: {_reason(exc)}") from None

    def policy_answer(self, size) -> str:
        """What the policy service would answer journaled mail of ``size`` bytes now (policy.decide): DUNNO or a 4xx."""
        return decide(self.config, lambda: self.license_error or ("" if self.license else "no valid license"),
                      {"request": "smtpd_access_policy", "size": str(size)})

    def store_received(self, arrivals) -> list:
        """Store messages received over LMTP or SMTP (receiver.py) durably; Refused, with the reason, on a store fault."""
        try:
            outcomes = self._ingest(arrivals)
        except (OSError, sqlite3.Error) as exc:
            self.last_error = f"ingest deferred: {_reason(exc)}; senders keep their mail"
            log.error(self.last_error)
            metrics.INGEST_ERRORS.labels("deferred").inc()
            raise Refused(f"cannot store now: {_reason(exc)}") from None
        self.last_error = ""
        return outcomes

    def _read_batch(self) -> list:
        """Read the next batch of spool files into arrivals.

        A file listed but gone when read was committed by an earlier batch and
        removed meanwhile; when a whole batch is such files the spool is listed
        again, so drain never stops while mail waits. An unreadable file stays
        in the spool and is logged.
        """
        limit = self.config.batch_size
        while True:
            names = [n for n in self.spool.pending(limit + len(self._removing)) if n not in self._removing][:limit]
            arrivals, vanished = [], 0
            for name in names:
                try:
                    data = self.spool.read(name)
                except FileNotFoundError:
                    vanished += 1
                    continue
                except OSError as exc:
                    log.error("status=error spool=%s cannot read it (%s); it stays in the spool", name, exc.strerror)
                    metrics.INGEST_ERRORS.labels("unreadable").inc()
                    continue
                arrivals.append(from_postfix(data, name, self.config.transit_hosts))
            if arrivals or not vanished:
                return arrivals

    def _remove_later(self, names) -> None:
        """Remove committed spool files in the store's pool while the next batch is read.

        Safe in any order and after any crash: a spool file whose name is in
        the index already is recognised and removed on the next pass.
        """
        self._removing.update(names)
        future = self.store.objects.pool.submit(self.spool.remove, names)
        self._removals.add(future)

        def removed(done):
            self._removing.difference_update(names)
            self._removals.discard(done)
        future.add_done_callback(removed)

    def drain(self) -> int:
        """Ingest until the spool is empty (or ingest is refused); return once ingested files are removed."""
        total = 0
        while True:
            took = self.drain_once()
            if not took:
                concurrent.futures.wait(list(self._removals))
                return total
            total += took

    def run(self, stop: threading.Event, idle_sleep: float = 0.2) -> None:
        self.spool.ensure()
        backoff = idle_sleep
        while not stop.is_set():
            try:
                took = self.drain_once()
            except StoreError as exc:
                self.last_error = str(exc)
                log.error("ingest stopped for now: %s", exc)
                metrics.INGEST_ERRORS.labels("stopped").inc()
                took = 0
            if took:
                backoff = idle_sleep
                continue
            stop.wait(backoff)
            backoff = min(backoff * 2, 5.0) if self.last_error or self.license is None else idle_sleep

    def status(self) -> dict:
        lic = self.license.as_dict() if self.license else None
        backlog, oldest = self.spool.waiting()
        return {
            "ingesting": self.license is not None and not self.last_error,
            "license": lic,
            "license_error": self.license_error,
            "last_error": self.last_error,
            "spool_backlog": backlog,
            "spool_oldest": oldest,
            "maintenance": maintenance(self.config),
            "stored_since_start": self.stored,
            "duplicates_since_start": self.duplicates,
        }
