"""The mailarchive.cluster worker's archive store.

Postfix on the worker accepts mail and delivers it into a Maildir spool;
the store ingests from there, keeps every message byte for byte (zstd,
then AES-256-GCM), indexes it in SQLite/FTS5 and serves a read-only API.
"""

from archive_common.license import RELEASE_DATE  # the store's release date

__version__ = "0.1.0"
__all__ = ["RELEASE_DATE", "__version__"]
