"""Durable files for sealed messages; the path derives from the ID alone.

    objects/<server_id>/<seconds bits 31-16>/<seconds bits 15-4>/<id>.m
    objects/blobs/<sha256 0-1>/<sha256 2-3>/<sha256>.b     (attachment bodies stored once, blobs.py)

A leaf directory covers 16 seconds of arrivals.  Every write goes to a
temporary file that is fsynced and renamed; directories touched by a batch
are fsynced before the batch's metadata is committed.
"""

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Iterator

from archive_common import ids


# fsync waits on the disk, not the CPU; several in flight let the filesystem
# commit them together, which is most of the ingest rate.
WRITERS = 8


class ObjectStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._root = str(self.root)
        # The ingest's pool: Store runs each new message's seal-and-write in it.
        self.pool = ThreadPoolExecutor(max_workers=WRITERS, thread_name_prefix="object-writer")

    def path_for(self, archive_id: str) -> Path:
        return Path(self._path(archive_id))

    def _path(self, archive_id: str) -> str:
        # A string, not a Path: an export reads thousands of objects a second, and pathlib's joins were a
        # quarter of a read's time.
        return os.path.join(self._root, archive_id[24:26], archive_id[8:12], archive_id[12:15], archive_id + ".m")

    def write(self, archive_id: str, blob: bytes) -> Path:
        """Write and fsync one object; return its directory (fsync it later)."""
        path = self.path_for(archive_id)
        directory = path.parent
        if not directory.is_dir():
            _make_dirs_durably(directory)
        tmp = directory / f".{archive_id}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(blob)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
        return directory

    def read(self, archive_id: str) -> bytes:
        with open(self._path(archive_id), "rb", buffering=0) as f:
            return f.readall()

    def read_many(self, archive_ids: Iterable[str]) -> Iterator[bytes]:
        """The objects' bytes in the order asked, read several at a time: an export's
        reads wait on the disk, one small file each, and a queue of them is faster."""
        return self.pool.map(self.read, archive_ids)

    def exists(self, archive_id: str) -> bool:
        return self.path_for(archive_id).exists()

    def delete(self, archive_id: str) -> None:
        path = self.path_for(archive_id)
        try:
            path.unlink()
        except FileNotFoundError:
            return
        fsync_dir(path.parent)

    # -- attachment blobs (blobs.py): objects/blobs/<sha256[0:2]>/<sha256[2:4]>/<sha256>.b -----------------
    def blob_path(self, sha256: str) -> Path:
        return self.root / "blobs" / sha256[:2] / sha256[2:4] / f"{sha256}.b"

    def write_blob(self, sha256: str, sealed: bytes) -> Path:
        """Write and fsync one blob under a name of its own, then rename it into place (two writers of the
        same blob both succeed); return its directory (fsync it later)."""
        path = self.blob_path(sha256)
        if not path.parent.is_dir():
            _make_dirs_durably(path.parent)
        tmp = path.parent / f".{sha256}.{os.getpid()}.{threading.get_ident()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(sealed)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
        return path.parent

    def read_blob(self, sha256: str) -> bytes:
        return self.blob_path(sha256).read_bytes()

    def delete_blob(self, sha256: str) -> None:
        path = self.blob_path(sha256)
        try:
            path.unlink()
        except FileNotFoundError:
            return
        fsync_dir(path.parent)

    def all_blobs(self) -> Iterator[str]:
        root = self.root / "blobs"
        if not root.is_dir():
            return
        for _dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in sorted(filenames):
                if name.endswith(".b") and len(name) == 66:
                    yield name[:-2]

    def all_ids(self) -> Iterator[str]:
        """Every stored ID, in time order within each worker's tree."""
        if not self.root.is_dir():
            return
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames.sort()
            for name in sorted(filenames):
                if name.endswith(".m") and ids.is_valid(name[:-2]):
                    yield name[:-2]


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dirs(directories: Iterable[Path]) -> None:
    for directory in set(directories):
        fsync_dir(directory)


def _make_dirs_durably(directory: Path) -> None:
    missing = []
    while not directory.exists():
        missing.append(directory)
        directory = directory.parent
    for path in reversed(missing):
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
        fsync_dir(path.parent)
