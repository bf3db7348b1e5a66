"""Import old mail into a site's workers, resumably: what the command line and the Ansible module share.

    items (mailsources.py) -> already in the state file?  -> already present
                           -> skipped / failed by the source -> counted, failures listed
                           -> batches: does any worker hold these bytes (POST /api/v1/import/known)?
                                 yes -> already present
                                 no  -> the worker sha256 mod N (POST /api/v1/import), committed before it answers

Every worker is asked, so bytes archived anywhere in the site (journaled or
imported) are not imported twice; the same bytes always go to the same
worker, whose own duplicate check catches two imports racing.  The state
file gets a line per message once a worker has committed it (or found it
present), so a run stopped by Ctrl-C or a lost worker goes on where it
stopped; a message sent but not recorded is found by its digest, or by its
key (committed-before), on the next run.

Shared code (see src/README.md): standard library only, no imports of the
other shared modules (the caller passes the workers and the items), and the
Ansible module sees this file through plugins/module_utils/archive_importer.py.
"""

import collections
import hashlib
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor

BATCH_MESSAGES = 200
BATCH_BYTES = 16 * 1024 * 1024
IN_FLIGHT = 3


class ImportStopped(Exception):
    """The run stopped before the end of the source (a worker failed); str() says why, in one line."""


class Summary(object):
    """What a run did, counted as it goes."""

    def __init__(self):
        self.read = 0
        self.imported = 0
        self.imported_bytes = 0
        self.present = 0
        self.skipped = collections.Counter()
        self.failed = collections.Counter()
        self.stopped = ""

    def as_dict(self):
        return {"read": self.read, "imported": self.imported, "imported_bytes": self.imported_bytes,
                "already_present": self.present, "skipped": dict(self.skipped), "failed": dict(self.failed),
                "skipped_total": sum(self.skipped.values()), "failed_total": sum(self.failed.values()),
                "stopped": self.stopped}

    def lines(self):
        """The summary a person reads at the end."""
        out = ["read %d, imported %d (%.1f MB), already present %d, skipped %d, failed %d" % (
            self.read, self.imported, self.imported_bytes / 1e6, self.present, sum(self.skipped.values()),
            sum(self.failed.values()))]
        out += ["  skipped %d: %s" % (n, reason) for reason, n in sorted(self.skipped.items())]
        out += ["  failed %d: %s" % (n, reason) for reason, n in sorted(self.failed.items())]
        if self.stopped:
            out.append("stopped: %s; run the same command again to go on" % self.stopped)
        return out


class State(object):
    """The source's state file: a JSON line per message a worker holds, appended and fsynced per batch;
    and beside it (``<state>.failures``) the failures of the last run, one line each."""

    def __init__(self, path):
        self.path = path
        self.done = set()
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, mode=0o700, exist_ok=True)
        try:
            with open(path, "rb") as handle:
                for line in handle:
                    try:
                        self.done.add(json.loads(line)["key"])
                    except (ValueError, KeyError, TypeError):
                        continue  # a line cut off by a crash: its message is found again by digest
        except FileNotFoundError:
            pass
        self._handle = open(path, "ab")
        self._failures = open(path + ".failures", "w", encoding="utf-8")
        self._lock = threading.Lock()

    def record(self, entries):
        """Append (key, status, worker, id) entries durably."""
        if not entries:
            return
        data = b"".join(json.dumps({"key": k, "status": s, "worker": w, "id": i}, sort_keys=True).encode("utf-8") + b"\n"
                        for k, s, w, i in entries)
        with self._lock:
            self._handle.write(data)
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self.done.update(entry[0] for entry in entries)

    def failure(self, line):
        with self._lock:
            self._failures.write(line + "\n")
            self._failures.flush()

    def close(self):
        self._handle.close()
        self._failures.close()


def state_path(state_dir, kind, location):
    """The state file of a source: one per source kind and location, under ``state_dir``."""
    digest = hashlib.sha256(("%s\0%s" % (kind, location)).encode("utf-8", "surrogateescape")).hexdigest()[:16]
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in os.path.basename(location.rstrip("/")) or kind)
    return os.path.join(state_dir, "%s-%s-%s.state" % (kind, name[:40], digest))


class Importer(object):
    """Send a source's messages to ``apis`` (archive_client.ArchiveApi, or anything with name, known() and
    import_batch()); ``progress(messages, nbytes)`` is called as items are handled."""

    def __init__(self, apis, state, progress=None, check_only=False, batch_messages=BATCH_MESSAGES,
                 batch_bytes=BATCH_BYTES):
        if not apis:
            raise ImportStopped("no workers to import into")
        self.apis = list(apis)
        self.state = state
        self.progress = progress or (lambda messages, nbytes: None)
        self.check_only = check_only
        self.batch_messages = batch_messages
        self.batch_bytes = batch_bytes
        self.summary = Summary()
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=IN_FLIGHT)  # batches
        self._requests = ThreadPoolExecutor(max_workers=IN_FLIGHT * len(self.apis))  # their requests to the workers

    def run(self, items, stop_on=()):
        """Import every item; return the Summary. Ctrl-C (KeyboardInterrupt), a failing worker and the
        exceptions ``stop_on`` (the source's own: it cannot be read on) end the run after the batches in
        flight are answered, with Summary.stopped saying why."""
        batch, size, pending = [], 0, []
        try:
            for item in items:
                self.summary.read += 1
                if item.status != "message":
                    self._not_imported(item)
                    continue
                if item.key in self.state.done:
                    self._count(present=1)
                    self.progress(1, len(item.raw))
                    continue
                batch.append((item, hashlib.sha256(item.raw).hexdigest()))
                size += len(item.raw)
                if len(batch) >= self.batch_messages or size >= self.batch_bytes:
                    pending = self._submit(pending, batch)
                    batch, size = [], 0
            if batch:
                pending = self._submit(pending, batch)
            self._wait(pending, 0)
        except KeyboardInterrupt:
            self.summary.stopped = "interrupted (Ctrl-C)"
            self._wait(pending, 0, quiet=True)
        except (ImportStopped,) + tuple(stop_on) as exc:
            self.summary.stopped = str(exc)
            self._wait(pending, 0, quiet=True)
        finally:
            self._pool.shutdown(wait=True)
            self._requests.shutdown(wait=True)
        return self.summary

    def _submit(self, pending, batch):
        pending = self._wait(pending, IN_FLIGHT - 1)
        return pending + [self._pool.submit(self._send, batch)]

    def _wait(self, pending, keep, quiet=False):
        """Wait until at most ``keep`` batches are in flight; a batch's failure stops the run (unless quiet)."""
        while len(pending) > keep:
            future = pending.pop(0)
            try:
                future.result()
            except ImportStopped:
                if not quiet:
                    raise
        return pending

    def _not_imported(self, item):
        if item.status == "skipped":
            self._count(skipped=item.reason.split(":")[0])
        else:
            self._count(failed=item.reason.split(":")[0])
            self.state.failure("%s: %s" % (item.where(), item.reason))
        self.progress(1, 0)

    def _count(self, present=0, imported=0, nbytes=0, skipped=None, failed=None):
        with self._lock:
            self.summary.present += present
            self.summary.imported += imported
            self.summary.imported_bytes += nbytes
            if skipped:
                self.summary.skipped[skipped] += 1
            if failed:
                self.summary.failed[failed] += 1

    def _send(self, batch):
        """One batch: ask every worker what it holds, send the rest, record what they committed."""
        digests = [sha for _item, sha in batch]
        known = {}
        for api, answer in [(api, self._requests.submit(self._ask, api, digests)) for api in self.apis]:
            for sha, archive_id in answer.result().items():
                known.setdefault(sha, (api.name, archive_id))
        records, groups = [], collections.defaultdict(list)
        for item, sha in batch:
            if sha in known:
                records.append((item.key, "present", known[sha][0], known[sha][1]))
                self._count(present=1)
                self.progress(1, len(item.raw))
            elif self.check_only:
                self._count(imported=1, nbytes=len(item.raw))
                self.progress(1, len(item.raw))
            else:
                groups[self.apis[int(sha, 16) % len(self.apis)]].append((item, sha))
        self.state.record(records)
        answers = [(api, group, self._requests.submit(self._store, api, group)) for api, group in groups.items()]
        failure = None
        for api, group, answer in answers:
            try:
                self._recorded(api, group, answer.result())
            except ImportStopped as exc:
                failure = failure or exc
        if failure:
            raise failure

    @staticmethod
    def _ask(api, digests):
        try:
            return api.known(digests)
        except Exception as exc:  # the client's one-line error, whatever went wrong
            raise ImportStopped("worker %s cannot say which messages it holds: %s" % (api.name, exc)) from None

    @staticmethod
    def _store(api, group):
        messages = [{"raw": item.raw, "sha256": sha, "key": item.key, "dated": item.dated, "origin": item.origin}
                    for item, sha in group]
        try:
            return api.import_batch(messages)
        except Exception as exc:
            raise ImportStopped("worker %s did not take a batch of %d messages: %s" % (api.name, len(group), exc)) from None

    def _recorded(self, api, group, results):
        records = []
        for (item, _sha), result in zip(group, results):
            status = result.get("status")
            if status == "stored":
                records.append((item.key, "imported", api.name, result["id"]))
                self._count(imported=1, nbytes=len(item.raw))
            elif status in ("duplicate", "committed-before"):
                records.append((item.key, "present", api.name, result["id"]))
                self._count(present=1)
            else:
                reason = "refused by the worker: %s" % (result.get("reason") or status)
                self._count(failed="refused by the worker")
                self.state.failure("%s: %s" % (item.where(), reason))
            self.progress(1, len(item.raw))
        self.state.record(records)
