"""The store: sealed objects on disk plus their index.

Ingest order, which makes a kill -9 at any point lose and duplicate nothing:

1. write the IDs about to be created to ``intent`` (fsync);
2. write each sealed object (temp file, fsync, rename) and fsync its dir;
3. commit messages, FTS rows and arrivals in one SQLite transaction;
4. remove ``intent``; the caller then removes the spool files.

On start, objects named in a leftover ``intent`` whose ID is not in the
index are deleted: their spool files still exist and will be ingested again.
A spool file whose name is already in ``arrivals`` was committed before the
crash and is simply removed.

Attachment blobs (blobs.py): a batch's new blobs are named in ``intent``
and written (fsync) before the objects that refer to them; the index
records each reference in the batch's transaction. A blob file with no
row in the index is deleted at the start after a crash (it is named in
``intent``). A removal drops the message's rows and references in one
transaction, then deletes its object, then the files of the blobs no
message refers to any more, then their rows; a start after a crash
finishes the last two. Ingest and removal hold ``blobs.lock`` (flock)
from looking a blob up to committing, so no removal deletes a blob that a
batch being written counts on.
"""

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, List, Optional, Tuple

from archive_common import ids, participants
from archive_store import blobs, crashpoints
from archive_store.config import Config
from archive_store.crypto import Keyring
from archive_store.errors import IntegrityError, StoreError
from archive_store.index import LAYOUT, Index, OldLayout
from archive_store.objects import ObjectStore, fsync_dir, fsync_dirs
from archive_store.parse import extract
from archive_store.spool import Arrival
from archive_store.textract import Extracted, Extractor

log = logging.getLogger("archive_store")
# Bodies of the attachment blobs read last, kept decrypted for the next message that refers to them.
BLOB_CACHE_BYTES = 32 << 20
# Messages a task of get_raw_many reads: enough to make a task worth its cost, few enough that the pool reads
# a 500-message batch eight at a time.
READ_CHUNK = 25


@dataclass
class Outcome:
    spool_name: str
    archive_id: str
    message_id: str
    size: int
    stored_size: int
    status: str  # stored | duplicate | committed-before

    def log_line(self) -> str:
        return (
            f"status={self.status} id={self.archive_id} message_id={self.message_id or '-'} "
            f"size={self.size} stored={self.stored_size} spool={self.spool_name}"
        )


def _pack(meta: dict, raw: bytes) -> bytes:
    return json.dumps(meta, separators=(",", ":"), sort_keys=True).encode("utf-8") + b"\n" + raw


def _unpack(payload: bytes) -> Tuple[dict, bytes]:
    head, raw = payload.partition(b"\n")[::2]
    return json.loads(head), raw


class Store:
    def __init__(self, config: Config, readonly: bool = False, recover: bool = True, open_index: bool = True) -> None:
        self.config = config
        self.readonly = readonly
        if not readonly:
            config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            config.objects_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.objects = ObjectStore(config.objects_dir)
        self.keys = Keyring.load(config.key_file)
        self.index: Optional[Index] = None
        self.intent = config.data_dir / "intent"
        self.blob_lock_file = config.data_dir / "blobs.lock"
        self._blob_cache: "OrderedDict[str, bytes]" = OrderedDict()
        self._blob_cache_size = 0
        self._blob_cache_lock = threading.Lock()
        self._extractor: Optional[Extractor] = None
        self._extractor_lock = threading.Lock()
        if not open_index:  # prepare_layout(): the live index belongs to the running service
            return
        try:
            self._open_index()
        except OldLayout as exc:
            if readonly:  # for stats alone; the rest says what to do
                self.index = Index(config.db_path, readonly=True, legacy=True)
            else:
                self._upgrade(exc)
        if recover and not readonly:  # a second writer beside a running ingest must not
            self.recover()              # take the ingest's open batch for a crashed one

    @property
    def prepared_path(self) -> Path:
        """Where ``prepare_layout`` builds this release's index beside an earlier release's live one."""
        return self.config.db_path.with_name(self.config.db_path.name + f".layout{LAYOUT}")

    def _upgrade(self, old: OldLayout) -> None:
        """Replace an index of an earlier release: by the one ``prepare_layout`` built beside it (then only what
        was stored or purged since is brought up to date), or else by a rebuild from the objects."""
        if self.prepared_path.exists():
            log.warning("%s; taking the index prepared beside it (%s)", old, self.prepared_path)
            self._swap_in(self.prepared_path)
            added, removed = self.reconcile_index()
            log.warning("index upgraded: %d messages stored since it was prepared added, %d rows removed", added, removed)
            return
        log.warning("%s; rebuilding it from the stored objects", old)
        log.warning("index rebuilt: %d messages", self.reindex())

    def prepare_layout(self) -> int:
        """Build this release's index from the objects beside the live index, which an earlier release's service
        still writes to; the upgraded service takes it at its start.  Returns the messages indexed."""
        return self._build(self.prepared_path)

    def _open_index(self) -> None:
        self.index = Index(self.config.db_path, readonly=self.readonly, shard_messages=self.config.index_shard_messages)
        self.index.text_of = self._text_of

    def _text_of(self, archive_id: str) -> str:
        """A message's body text, for phrase checks (its headers are in the index; attachments are not read)."""
        return extract(self.get_raw(archive_id), self.config.index_body_bytes).body_text

    def close(self) -> None:
        if self.index is not None:
            self.index.close()
        if self._extractor is not None:
            self._extractor.close()

    # -- crash recovery -----------------------------------------------------
    def recover(self) -> List[str]:
        """Delete objects and blobs of a batch that was cut off before its commit, and the blobs of a
        removal that was cut off before they were deleted."""
        with self.blob_lock():
            self._forget_blobs(self.index.unreferenced_blobs())
            try:
                planned = self.intent.read_text(encoding="ascii").split()
            except FileNotFoundError:
                return []
            committed = self.index.has_ids([i for i in planned if ids.is_valid(i)])
            removed = [i for i in planned if i not in committed and ids.is_valid(i)]
            for archive_id in removed:
                self.objects.delete(archive_id)
            new_blobs = [entry[5:] for entry in planned if entry.startswith("blob:")]
            known = self.index.known_blobs(new_blobs)
            for sha256 in new_blobs:
                if sha256 not in known:
                    self.objects.delete_blob(sha256)
            self.intent.unlink()
            fsync_dir(self.config.data_dir)
        if removed:
            log.warning("recovered from an interrupted batch: removed %d uncommitted objects", len(removed))
        return removed

    @contextlib.contextmanager
    def blob_lock(self):
        """Hold blobs.lock (flock): between an ingest's blob lookup and its commit, and a removal's commit and
        its blob deletion; every Store of every process on this data directory takes it."""
        fd = os.open(self.blob_lock_file, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _forget_blobs(self, shas: List[str]) -> None:
        for sha256 in shas:
            self.objects.delete_blob(sha256)
        self.index.forget_blobs(shas)

    def remove(self, archive_id: str) -> None:
        """Drop a message: its rows and references, its object, then the blobs no message refers to any more.
        The caller audits first (reindex skips audited IDs)."""
        with self.blob_lock():
            unreferenced = self.index.remove(archive_id)
            self.objects.delete(archive_id)
            crashpoints.reach("removed")
            self._forget_blobs(unreferenced)

    def _write_intent(self, archive_ids: List[str]) -> None:
        tmp = self.intent.with_suffix(".tmp")
        with open(tmp, "w", encoding="ascii") as handle:
            handle.write("\n".join(archive_ids) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.rename(tmp, self.intent)
        fsync_dir(self.config.data_dir)

    # -- ingest ---------------------------------------------------------------
    def ingest(self, arrivals: List[Arrival], now: Optional[float] = None) -> List[Outcome]:
        """Store a batch durably; return one outcome per arrival, in order."""
        now = int(time.time() if now is None else now)
        committed = self.index.known_spool_names(a.spool_name for a in arrivals)
        outcomes: List[Optional[Outcome]] = []
        fresh: List[Tuple[int, str, str, Arrival]] = []  # (outcome slot, id, sha256, arrival)
        by_sha = {}
        arrival_rows = []
        merged_recipients: dict = {}  # sha256 -> envelope recipients of its later copies
        # Pass 1, cheap: digests, duplicates and the IDs this batch will create.
        for arrival in arrivals:
            if arrival.spool_name in committed:
                outcomes.append(Outcome(arrival.spool_name, committed[arrival.spool_name], "-", len(arrival.raw), 0, "committed-before"))
                continue
            sha = hashlib.sha256(arrival.raw).hexdigest()
            arrival_rows.append((arrival.spool_name, sha, now, "\n".join(arrival.transit)))
            known = by_sha.get(sha) or self.index.rowid_by_sha(sha)
            if known:
                outcomes.append(Outcome(arrival.spool_name, known[1], "-", len(arrival.raw), 0, "duplicate"))
                # The same bytes for other recipients (a journaling server's copy per recipient): theirs too.
                merged_recipients.setdefault(sha, []).extend(self._recipients(arrival.env_to))
                continue
            archive_id = ids.new_id(self.config.server_id)
            by_sha[sha] = (None, archive_id)
            fresh.append((len(outcomes), archive_id, sha, arrival))
            outcomes.append(None)
        # Pass 2: parse, seal, write and fsync each new message in the worker
        # pool: hashing, zstd and AES release the GIL, fsync waits on the disk.
        new_rows: List[dict] = []
        with self.blob_lock() if fresh else contextlib.nullcontext():
            if fresh:
                splits = list(self.objects.pool.map(lambda entry: blobs.split(entry[3].raw, self.config.blob_min_bytes), fresh))
                bodies = {sha: body for split in splits for sha, body in split[2].items()}
                new_blobs = sorted(set(bodies) - self.index.known_blobs(bodies))
                self._write_intent([entry[1] for entry in fresh] + [f"blob:{sha}" for sha in new_blobs])
                crashpoints.reach("intent")
                fsync_dirs(self.objects.pool.map(lambda sha: self._write_blob(sha, bodies[sha]), new_blobs))
                prepared = self.objects.pool.map(lambda pair: self._prepare(*pair[0][1:], now, pair[1]), zip(fresh, splits))
                directories = []
                for (slot, archive_id, _sha, arrival), (row, directory) in zip(fresh, prepared):
                    new_rows.append(row)
                    directories.append(directory)
                    outcomes[slot] = Outcome(arrival.spool_name, archive_id, row["message_id"], row["size"], row["stored_size"], "stored")
                fsync_dirs(directories)
            for row in new_rows:  # a copy in the same batch: indexed with the first, searchable by them too
                extra = [a for a in merged_recipients.pop(row["sha256"], []) if a not in row["env_to"].split("\n")]
                if extra:
                    row["env_to"] = "\n".join(row["env_to"].split("\n") + extra).strip("\n")
                    row["fts_recipients"] += " " + " ".join(extra)
            if arrival_rows:
                self.index.commit_batch(new_rows, arrival_rows, merged_recipients)
                crashpoints.reach("committed")
            if fresh:  # under the lock: another writer's recover() then never sees a batch in flight
                self.intent.unlink()
        return outcomes

    def _write_blob(self, sha256: str, body: bytes) -> Path:
        directory = self.objects.write_blob(sha256, self.keys.seal(sha256, body))
        crashpoints.reach("blob")
        return directory

    def _read_blob(self, sha256: str) -> bytes:
        """A blob's body, from the small cache of the last ones read (a signature image recurs in every
        message of its sender) or from disk."""
        with self._blob_cache_lock:
            body = self._blob_cache.get(sha256)
            if body is not None:
                self._blob_cache.move_to_end(sha256)
                return body
        try:
            body = self.keys.open(sha256, self.objects.read_blob(sha256))
        except FileNotFoundError:
            raise IntegrityError(f"blob {sha256}: expected at {self.objects.blob_path(sha256)}, found nothing") from None
        if len(body) <= BLOB_CACHE_BYTES // 16:
            with self._blob_cache_lock:
                self._blob_cache[sha256] = body
                self._blob_cache_size += len(body)
                while self._blob_cache_size > BLOB_CACHE_BYTES:
                    self._blob_cache_size -= len(self._blob_cache.popitem(last=False)[1])
        return body

    def _prepare(self, archive_id: str, sha: str, arrival: Arrival, now: int, split) -> Tuple[dict, Path]:
        """Index row and durable object of one new message (``split``: blobs.split of its bytes, whose blobs
        are durable); returns (row, its directory)."""
        row = self._row(archive_id, sha, arrival, now)
        skeleton, references, _bodies = split
        meta = self._object_meta(row, arrival)
        if references:
            meta["parts"] = references
        row["blobs"] = sorted({(r["sha256"], r["size"]) for r in references})
        blob = self.keys.seal(archive_id, _pack(meta, skeleton))
        row["stored_size"] = len(blob)
        directory = self.objects.write(archive_id, blob)
        crashpoints.reach("object")
        return row, directory

    def _row(self, archive_id: str, sha: str, arrival: Arrival, now: int, retain_until: Optional[int] = None) -> dict:
        parsed = extract(arrival.raw, self.config.index_body_bytes, self._attachment_text, self.config.extract_text_chars)
        recipients = self._recipients(arrival.env_to + parsed.recipients)
        journal_sender = parsed.journal["sender"] if parsed.journal else ""
        return {
            "id": archive_id,
            "sha256": sha,
            "body_sha256": parsed.body_sha256,
            "message_id": parsed.message_id,
            "env_from": arrival.env_from,
            "env_to": "\n".join(recipients),
            "hdr_from": parsed.hdr_from,
            "hdr_to": parsed.hdr_to,
            "hdr_cc": parsed.hdr_cc,
            "subject": parsed.subject,
            "date": parsed.date,
            "size": len(arrival.raw),
            "stored_size": 0,
            "key_id": self.keys.active,
            "arrived": now,
            "retain_until": retain_until or self._retained_from(parsed.date, arrival, now) + self.config.retention_days * 86400,
            "parse_error": parsed.parse_error,
            "journal": json.dumps(parsed.journal, sort_keys=True) if parsed.journal else "",
            "notes": "\n".join(arrival.notes),
            "attachments": parsed.attachments,
            "fts_sender": f"{parsed.hdr_from} {arrival.env_from} {journal_sender}",
            "fts_recipients": f"{parsed.hdr_to} {parsed.hdr_cc} {' '.join(recipients)}",
            "fts_body": parsed.body_text,
            "fts_attachments": f"{parsed.attachment_names}\n{parsed.attachment_text}",
        }

    def _attachment_text(self, name: str, content_type: str, data: bytes, limit: int) -> Extracted:
        """An attachment's text from the extraction processes, started at the first attachment."""
        with self._extractor_lock:
            if self._extractor is None:
                self._extractor = Extractor(self.config.extract_workers, self.config.extract_seconds, self.config.extract_memory_mb)
        return self._extractor.extract(name, content_type, data, limit)

    def _recipients(self, addresses: List[str]) -> List[str]:
        """The envelope recipients worth recording: the archive's own addresses left out, an address extension
        on one of them (``archive+alice=example.com@...``, see the README's journaling section) read as the
        recipient it names, each address once."""
        own = {tuple(address.rsplit("@", 1)) for address in self.config.own_addresses}
        recorded: List[str] = []
        for address in addresses:
            address = participants.normalise(address)
            local, _at, domain = address.rpartition("@")
            base, plus, extension = local.partition("+")
            if (base, domain) in own:
                user, equals, user_domain = extension.rpartition("=")
                address = f"{user}@{user_domain}" if plus and equals and user and user_domain else ""
            if address and address not in recorded:
                recorded.append(address)
        return recorded

    @staticmethod
    def _retained_from(date: Optional[int], arrival: Arrival, now: int) -> int:
        """When retention starts counting: journaled mail at its arrival; imported mail at its own
        Date, else when its source received it (``dated``), never later than now."""
        if arrival.origin is None:
            return now
        return min(now, date or arrival.dated or now)

    @staticmethod
    def _object_meta(row: dict, arrival: Arrival) -> dict:
        """What travels inside the sealed object, so reindex needs nothing else."""
        meta = {
            "v": 1,
            "sha256": row["sha256"],
            "env_from": arrival.env_from,
            "env_to": arrival.env_to,
            "arrived": row["arrived"],
            "retain_until": row["retain_until"],
            "spool_name": arrival.spool_name,
            "transit": arrival.transit,
        }
        if arrival.origin is not None:
            meta["origin"] = arrival.origin
        if arrival.notes:
            meta["notes"] = arrival.notes
        return meta

    # -- reading ----------------------------------------------------------------
    def open_object(self, archive_id: str) -> Tuple[dict, bytes]:
        """(the object's metadata, the message's bytes), its blobs put back, its sha256 checked."""
        _check_id(archive_id)
        try:
            blob = self.objects.read(archive_id)
        except FileNotFoundError:
            raise StoreError(f"id {archive_id}: no stored object at {self.objects.path_for(archive_id)}") from None
        return self._opened(archive_id, blob)

    def _opened(self, archive_id: str, sealed: bytes) -> Tuple[dict, bytes]:
        meta, raw = _unpack(self.keys.open(archive_id, sealed))
        if meta.get("parts"):
            try:
                raw = blobs.join(raw, meta["parts"], self._read_blob)
            except IntegrityError as exc:
                raise IntegrityError(f"id {archive_id}: {exc}") from None
        digest = hashlib.sha256(raw).hexdigest()
        if digest != meta["sha256"]:
            raise IntegrityError(f"id {archive_id}: expected sha256 {meta['sha256']}, read {digest}")
        return meta, raw

    def get_raw(self, archive_id: str) -> bytes:
        return self.open_object(archive_id)[1]

    def get_raw_many(self, archive_ids: List[str]) -> Iterator[Tuple[str, bytes]]:
        """(id, raw bytes) of each, in order, the files read ahead several at a time. The reads start at
        once, so a caller may ask for its next group before it takes this one's messages."""
        for archive_id in archive_ids:
            _check_id(archive_id)

        def read(chunk):
            return [self.objects.read(i) for i in chunk]

        # The files are read in the pool, a few dozen a task: a cold read waits on the disk, so several run at
        # once, and a warm one is cheaper than a task of its own. They are decrypted, reassembled and checked
        # in the caller's thread, in order: done in the pool, that work's many short releases of the GIL made
        # its threads contend, at twice one thread's CPU (1,000 short messages: 114-167 ms against 55-58).
        chunks = [archive_ids[at:at + READ_CHUNK] for at in range(0, len(archive_ids), READ_CHUNK)]
        return self._opened_many(chunks, self.objects.pool.map(read, chunks))

    def _opened_many(self, chunks, sealed_chunks) -> Iterator[Tuple[str, bytes]]:
        try:
            for chunk, sealed in zip(chunks, sealed_chunks):
                for archive_id, blob in zip(chunk, sealed):
                    yield archive_id, self._opened(archive_id, blob)[1]
        except FileNotFoundError as exc:
            raise StoreError(f"no stored object at {exc.filename}") from None

    def verify(self, archive_id: str) -> None:
        """Decrypt and re-hash one message; raise IntegrityError on any mismatch."""
        row = self.index.get(archive_id)
        if row is None:
            raise IntegrityError(f"id {archive_id}: not in the index")
        meta, raw = self.open_object(archive_id)
        digest = hashlib.sha256(raw).hexdigest()
        if digest != row["sha256"] or digest != meta["sha256"]:
            raise IntegrityError(f"id {archive_id}: expected sha256 {row['sha256']}, found {digest}")
        if len(raw) != row["size"]:
            raise IntegrityError(f"id {archive_id}: expected {row['size']} bytes, found {len(raw)}")

    def verify_all(self) -> Iterable[Tuple[str, Optional[str]]]:
        """Yield (id, error or None) for every indexed and every stored object."""
        indexed = self.index.all_ids()
        for archive_id in indexed:
            try:
                self.verify(archive_id)
                yield archive_id, None
            except StoreError as exc:
                yield archive_id, str(exc)
        known = set(indexed) | self.purged_ids()
        for archive_id in self.objects.all_ids():
            if archive_id not in known and not self._in_flight(archive_id):
                yield archive_id, f"id {archive_id}: object on disk but not in the index (run reindex)"
        for problem in self.blob_problems():
            yield "blobs", problem

    def blob_problems(self) -> List[str]:
        """Blobs that messages refer to but are missing, and blob files no message refers to (a running batch's
        new blobs aside): one line each. Empty when every reference has its blob and every blob a reference."""
        rows = self.index.blob_rows()
        on_disk = set(self.objects.all_blobs())
        problems = [f"blob {sha}: referred to by {refs} messages, missing at {self.objects.blob_path(sha)}"
                    for sha, refs in sorted(rows.items()) if refs and sha not in on_disk]
        stray = [sha for sha in sorted(on_disk) if not rows.get(sha) and f"blob:{sha}" not in self._intent_entries()]
        if stray:  # a batch may have committed them since the rows were read
            rows = self.index.blob_rows()
            problems += [f"blob {sha}: on disk at {self.objects.blob_path(sha)}, referred to by no message"
                         for sha in stray if not rows.get(sha)]
        return problems

    def _intent_entries(self) -> List[str]:
        try:
            return self.intent.read_text(encoding="ascii").split()
        except FileNotFoundError:
            return []

    def _in_flight(self, archive_id: str) -> bool:
        """Whether a running ingest wrote this object and has not committed it yet, or just did."""
        return archive_id in self._intent_entries() or self.index.get(archive_id) is not None

    def purged_ids(self) -> set:
        """IDs the audit log says were purged."""
        try:
            with open(self.config.audit_log, encoding="utf-8") as handle:
                return {e["id"] for e in map(json.loads, handle) if e.get("action") == "purge"}
        except FileNotFoundError:
            return set()

    # -- blobs of messages stored whole --------------------------------------------
    def convert(self, archive_id: str) -> int:
        """Store a message stored whole (before blobs, or with another threshold) as skeleton and blobs: the
        blobs made durable and referred to, then the object rewritten. Returns the bytes the object shrank by;
        0 when it has nothing to cut. Cut off at any point, the message still reads back whole."""
        meta, raw = self.open_object(archive_id)
        if meta.get("parts"):
            return 0
        skeleton, references, bodies = blobs.split(raw, self.config.blob_min_bytes)
        if not references:
            return 0
        meta["parts"] = references
        sealed = self.keys.seal(archive_id, _pack(meta, skeleton))
        before = self.objects.path_for(archive_id).stat().st_size
        with self.blob_lock():
            new_blobs = sorted(set(bodies) - self.index.known_blobs(bodies))
            fsync_dirs([self._write_blob(sha, bodies[sha]) for sha in new_blobs])
            self.index.refer(archive_id, sorted({(r["sha256"], r["size"]) for r in references}), len(sealed))
            crashpoints.reach("converted")
            fsync_dir(self.objects.write(archive_id, sealed))
        return before - len(sealed)

    # -- reindex ------------------------------------------------------------------
    def _index_objects(self, target: Index, archive_ids: Iterable[str]) -> int:
        """Add the rows of these sealed objects to ``target``, in batches."""
        count = 0
        batch_rows, batch_arrivals = [], []
        batch = min(1000, self.config.index_shard_messages or 1000)  # shards close at their size, as when ingested
        for archive_id in archive_ids:
            meta, raw = self.open_object(archive_id)
            arrival = Arrival(raw=raw, spool_name=meta["spool_name"], env_from=meta["env_from"],
                              env_to=meta["env_to"], transit=meta["transit"], origin=meta.get("origin"),
                              notes=meta.get("notes", []))
            row = self._row(archive_id, meta["sha256"], arrival, meta["arrived"], meta["retain_until"])
            row["blobs"] = sorted({(r["sha256"], r["size"]) for r in meta.get("parts", [])})
            row["stored_size"] = self.objects.path_for(archive_id).stat().st_size
            row["key_id"] = Keyring.key_id_of(self.objects.read(archive_id))
            batch_rows.append(row)
            batch_arrivals.append((arrival.spool_name, row["sha256"], row["arrived"], "\n".join(arrival.transit)))
            count += 1
            if len(batch_rows) >= batch:
                target.commit_batch(batch_rows, batch_arrivals)
                batch_rows, batch_arrivals = [], []
        target.commit_batch(batch_rows, batch_arrivals)
        return count

    def _live_ids(self) -> Iterable[str]:
        """IDs of the objects on disk, deleting those a cut-off purge left behind."""
        purged = self.purged_ids()
        for archive_id in self.objects.all_ids():
            if archive_id in purged:  # a purge was cut off between index and object
                self.objects.delete(archive_id)
                continue
            yield archive_id

    def reindex(self) -> int:
        """Rebuild the whole index from the sealed objects alone."""
        fresh = self.config.db_path.with_name(self.config.db_path.name + ".rebuild")
        count = self._build(fresh)
        self._swap_in(fresh)
        return count

    def _build(self, path: Path) -> int:
        """A complete index of the objects on disk at ``path`` (what was there is replaced)."""
        for leftover in (path, Path(str(path) + "-wal"), Path(str(path) + "-shm")):
            if leftover.exists():
                leftover.unlink()
        target = Index(path, shard_messages=self.config.index_shard_messages)
        count = self._index_objects(target, self._live_ids())
        target.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        target.close()
        return count

    def _swap_in(self, path: Path) -> None:
        db = self.config.db_path
        if self.index is not None:
            self.index.close()
        os.rename(path, db)
        for suffix in ("-wal", "-shm"):
            stale = Path(str(db) + suffix)
            if stale.exists():
                stale.unlink()
        fsync_dir(db.parent)
        self._open_index()
        replaced = self.index.collect_other_shards()
        if replaced:
            log.warning("index shards of the replaced index deleted: %s", " ".join(replaced))

    def reconcile_index(self) -> Tuple[int, int]:
        """Bring an older index (a restored backup) up to the objects on disk.

        Objects the index does not know are added; rows whose object was
        purged (per the audit log) or is gone are removed.  Returns
        (added, removed).
        """
        on_disk = set(self._live_ids())
        known = set(self.index.all_ids())
        for archive_id in known - on_disk:
            self.remove(archive_id)
        added = self._index_objects(self.index, sorted(on_disk - known))
        return added, len(known - on_disk)


def _check_id(archive_id: str) -> None:
    if not ids.is_valid(archive_id):
        raise StoreError(f"id {archive_id!r}: expected 36 hex characters")
