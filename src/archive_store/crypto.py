"""Sealing: zstd compression, then AES-256-GCM with a random nonce.

A sealed object is

    b"MAS1" | len(key_id) (1 byte) | key_id | nonce (12 bytes) | ciphertext+tag

and the archive ID is bound to it as associated data, so an object moved to
another ID's path fails to open.  The key file holds one key per line,
``<key_id> <base64 key>``; the last line is the key new objects use, older
lines keep older objects readable after a rotation.
"""

import base64
import os
import secrets
import threading
from pathlib import Path

import zstandard
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from archive_store.errors import IntegrityError, StoreError

MAGIC = b"MAS1"
NONCE_BYTES = 12


class Keyring:
    def __init__(self, keys: dict, active: str) -> None:
        self._ciphers = {key_id: AESGCM(key) for key_id, key in keys.items()}
        self.active = active
        # zstd (de)compressor objects must not be shared between threads.
        self._local = threading.local()

    def _zstd(self):
        local = self._local
        if not hasattr(local, "compressor"):
            local.compressor = zstandard.ZstdCompressor(level=3)
            local.decompressor = zstandard.ZstdDecompressor()
        return local

    @classmethod
    def load(cls, path: Path) -> "Keyring":
        try:
            lines = Path(path).read_text(encoding="ascii").split("\n")
        except FileNotFoundError:
            raise StoreError(f"key file {path}: expected it to exist (run 'archive_store keygen'), found nothing") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise StoreError(f"key file {path}: expected a readable key file, found {type(exc).__name__}") from None
        keys = {}
        active = None
        for number, line in enumerate(lines, 1):
            if not line.strip() or line.startswith("#"):
                continue
            try:
                key_id, b64 = line.split()
                key = base64.b64decode(b64, validate=True)
            except ValueError:
                raise StoreError(f"key file {path} line {number}: expected '<key_id> <base64 key>', found something else") from None
            if len(key) != 32:
                raise StoreError(f"key file {path} line {number}: expected a 256-bit key, found {len(key) * 8} bits")
            keys[key_id] = key
            active = key_id
        if active is None:
            raise StoreError(f"key file {path}: expected at least one key, found none")
        return cls(keys, active)

    def seal(self, archive_id: str, payload: bytes) -> bytes:
        key_id = self.active.encode("ascii")
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._ciphers[self.active].encrypt(nonce, self._zstd().compressor.compress(payload), MAGIC + archive_id.encode("ascii"))
        return MAGIC + bytes([len(key_id)]) + key_id + nonce + sealed

    def open(self, archive_id: str, blob: bytes) -> bytes:
        if blob[:4] != MAGIC:
            raise IntegrityError(f"object {archive_id}: expected magic {MAGIC!r}, found {blob[:4]!r}")
        id_len = blob[4]
        key_id = blob[5:5 + id_len].decode("ascii", "replace")
        nonce = blob[5 + id_len:5 + id_len + NONCE_BYTES]
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise IntegrityError(f"object {archive_id}: expected a key in the key file, found key id {key_id!r} missing")
        try:
            compressed = cipher.decrypt(nonce, blob[5 + id_len + NONCE_BYTES:], MAGIC + archive_id.encode("ascii"))
        except InvalidTag:
            raise IntegrityError(f"object {archive_id}: authentication tag does not verify (corrupt, or moved from another ID)") from None
        return self._zstd().decompressor.decompress(compressed)

    @staticmethod
    def key_id_of(blob: bytes) -> str:
        return blob[5:5 + blob[4]].decode("ascii", "replace")


def generate(path: Path, rotate: bool = False) -> str:
    """Create the key file (mode 0600), or append a new active key with rotate."""
    path = Path(path)
    if path.exists() and not rotate:
        raise StoreError(f"key file {path}: already exists; use --rotate to add a new key")
    key_id = secrets.token_hex(4)
    line = f"{key_id} {base64.b64encode(secrets.token_bytes(32)).decode('ascii')}\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, line.encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    return key_id


def merge(path: Path, other: Path) -> list:
    """Add the keys of ``other`` (a restored key file) that ``path`` lacks, as older keys.

    The active key of ``path`` stays active; objects sealed with any key of
    either file open afterwards.  Returns the key ids added.
    """
    path, other = Path(path), Path(other)
    Keyring.load(other)  # refuse a damaged file before touching the live one
    mine = path.read_text(encoding="ascii").splitlines() if path.exists() else []
    have = {line.split()[0] for line in mine if line.strip() and not line.startswith("#")}
    added = [line for line in other.read_text(encoding="ascii").splitlines()
             if line.strip() and not line.startswith("#") and line.split()[0] not in have]
    if not added:
        return []
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, ("\n".join(added + mine) + "\n").encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return [line.split()[0] for line in added]
