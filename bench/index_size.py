"""Index size designs, measured on the same messages: bench/search.py's generator (short text messages,
where per-message metadata weighs most), parsed by the store's own parse.extract.

    /usr/bin/python3 bench/index_size.py              # 100,000 messages
    /usr/bin/python3 bench/index_size.py -n 20000     # a quicker look

Builds each design in its own SQLite file under /var/tmp, VACUUMs it and prints its size against the raw
mail, per part (SQLite's dbstat), with the bytes per message:

* the metadata tables: today's (hex digests and IDs as text, indexes on Message-ID, arrival and
  retention) and a compact one (digests and IDs as BLOBs, Message-ID found through the full-text index,
  one index on a digest prefix);
* the full-text index: FTS5 detail=full (today), detail=column, columnsize=0, exact address tokens, and
  a split of the header fields (subject, addresses: detail=column) from the text (detail=none).
"""

import argparse
import hashlib
import os
import random
import re
import sqlite3
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

from search import corpus, message  # noqa: E402

TOKENIZER = "tokenize = 'unicode61 remove_diacritics 2'"
ADDRESS = re.compile(r"[\w.+-]+@[\w.-]+")

METADATA = {
    "today": """
CREATE TABLE messages (rowid INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, sha256 TEXT NOT NULL UNIQUE,
  body_sha256 TEXT NOT NULL, message_id TEXT NOT NULL, env_from TEXT NOT NULL, env_to TEXT NOT NULL, hdr_from TEXT NOT NULL,
  hdr_to TEXT NOT NULL, hdr_cc TEXT NOT NULL, subject TEXT NOT NULL, date INTEGER, size INTEGER NOT NULL,
  stored_size INTEGER NOT NULL, key_id TEXT NOT NULL, arrived INTEGER NOT NULL, retain_until INTEGER NOT NULL,
  parse_error TEXT NOT NULL, journal TEXT NOT NULL DEFAULT '');
CREATE INDEX messages_message_id ON messages (message_id);
CREATE INDEX messages_arrived ON messages (arrived);
CREATE INDEX messages_retain ON messages (retain_until);""",
    "compact": """
CREATE TABLE messages (rowid INTEGER PRIMARY KEY AUTOINCREMENT, id BLOB NOT NULL UNIQUE, sha256 BLOB NOT NULL,
  body_sha256 BLOB NOT NULL, message_id TEXT NOT NULL, env_from TEXT NOT NULL, env_to TEXT NOT NULL, hdr_from TEXT NOT NULL,
  hdr_to TEXT NOT NULL, hdr_cc TEXT NOT NULL, subject TEXT NOT NULL, date INTEGER, size INTEGER NOT NULL,
  stored_size INTEGER NOT NULL, key_id TEXT NOT NULL, arrived INTEGER NOT NULL, retain_until INTEGER NOT NULL,
  parse_error TEXT NOT NULL, journal TEXT NOT NULL DEFAULT '');
CREATE INDEX messages_sha ON messages (substr(sha256, 1, 8));
CREATE INDEX messages_retain ON messages (retain_until);""",
}
ARRIVALS = """
CREATE TABLE arrivals (spool_name TEXT PRIMARY KEY, message INTEGER NOT NULL, arrived INTEGER NOT NULL,
  transit TEXT NOT NULL) WITHOUT ROWID;
CREATE INDEX arrivals_message ON arrivals (message);"""


def exact_tokens(sender, recipients, message_id):
    """One token per whole address (and the Message-ID): 48 bits of BLAKE2b, so from:a@b.c is one lookup."""
    def token(kind, value):
        return "x" + hashlib.blake2b((kind + value.lower()).encode(), digest_size=6).hexdigest()
    return " ".join([token("f", a) for a in ADDRESS.findall(sender)] + [token("t", a) for a in ADDRESS.findall(recipients)]
                    + [token("m", message_id)])


FULL_TEXT = {
    # name: (DDL, [(insert SQL, row -> values)])
    "detail=full (today)": (
        f"CREATE VIRTUAL TABLE fts USING fts5(subject, sender, recipients, body, attachments, content='', {TOKENIZER});",
        [("INSERT INTO fts (rowid, subject, sender, recipients, body) VALUES (?,?,?,?,?)",
          lambda r: (r["subject"], r["hdr_from"], r["hdr_to"], r["body"]))]),
    "detail=column": (
        f"CREATE VIRTUAL TABLE fts USING fts5(subject, sender, recipients, body, attachments, content='', detail=column, {TOKENIZER});",
        [("INSERT INTO fts (rowid, subject, sender, recipients, body) VALUES (?,?,?,?,?)",
          lambda r: (r["subject"], r["hdr_from"], r["hdr_to"], r["body"]))]),
    "detail=column, columnsize=0, exact addresses": (
        f"CREATE VIRTUAL TABLE fts USING fts5(subject, sender, recipients, body, attachments, exact, content='', detail=column, "
        f"columnsize=0, {TOKENIZER});",
        [("INSERT INTO fts (rowid, subject, sender, recipients, body, exact) VALUES (?,?,?,?,?,?)",
          lambda r: (r["subject"], r["hdr_from"], r["hdr_to"], r["body"], exact_tokens(r["hdr_from"], r["hdr_to"], r["message_id"])))]),
    "headers detail=column + text detail=none": (
        f"CREATE VIRTUAL TABLE fts_head USING fts5(subject, sender, recipients, exact, content='', detail=column, columnsize=0, {TOKENIZER});"
        f"CREATE VIRTUAL TABLE fts_text USING fts5(body, content='', detail=none, columnsize=0, {TOKENIZER});",
        [("INSERT INTO fts_head (rowid, subject, sender, recipients, exact) VALUES (?,?,?,?,?)",
          lambda r: (r["subject"], r["hdr_from"], r["hdr_to"], exact_tokens(r["hdr_from"], r["hdr_to"], r["message_id"]))),
         ("INSERT INTO fts_text (rowid, body) VALUES (?,?)", lambda r: (r["body"],))]),
}


def build(path, ddl, inserts, rows):
    if path.exists():
        path.unlink()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(ddl)
    for start in range(0, len(rows), 5000):
        conn.execute("BEGIN")
        for number, row in enumerate(rows[start:start + 5000], start + 1):
            for sql, values in inserts:
                conn.execute(sql, (number,) + values(row) if "rowid" in sql else values(row))
        conn.execute("COMMIT")
    conn.execute("VACUUM")
    parts = dict(conn.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name"))
    conn.close()
    size = path.stat().st_size
    path.unlink()
    return size, parts


def metadata_values(row, compact):
    digest = bytes.fromhex if compact else str
    return (digest(row["id"]), digest(row["sha256"]), digest(row["body_sha256"]), row["message_id"], row["hdr_from"], row["hdr_to"],
            row["subject"], row["date"], row["size"], row["size"] * 6 // 10, "k1a2b3c4d5e6f7a8b", 1795500000, 1795500000 + 2557 * 86400)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--messages", type=int, default=100000)
    parser.add_argument("--dir", default="/var/tmp")
    args = parser.parse_args()
    from archive_common import ids
    from archive_store.parse import extract

    words, cum_weights, senders = corpus()
    rng = random.Random(0)
    rows, raw_bytes = [], 0
    for number in range(args.messages):
        raw = message(rng, words, cum_weights, senders, number)
        raw_bytes += len(raw)
        parsed = extract(raw)
        rows.append({"id": ids.new_id(9), "sha256": hashlib.sha256(raw).hexdigest(), "body_sha256": parsed.body_sha256,
                     "message_id": parsed.message_id, "hdr_from": parsed.hdr_from, "hdr_to": parsed.hdr_to,
                     "subject": parsed.subject, "date": parsed.date, "size": len(raw), "body": parsed.body_text})
    print(f"{len(rows)} messages, raw {raw_bytes / 1e6:.1f} MB ({raw_bytes / len(rows):.0f} B each)")
    path = Path(args.dir) / f"index-size-{os.getpid()}.sqlite"
    insert = ("INSERT INTO messages (id, sha256, body_sha256, message_id, env_from, env_to, hdr_from, hdr_to, hdr_cc, subject, date,"
              " size, stored_size, key_id, arrived, retain_until, parse_error) VALUES (?,?,?,?,'','',?,?,'',?,?,?,?,?,?,?,'')")
    arrivals = ("INSERT INTO arrivals (spool_name, message, arrived, transit) VALUES (?,?,?,'')",
                lambda r: (f"bench-{r['size']}-{r['id'][-10:]}", 1, 1795500000))
    for name, ddl in METADATA.items():
        size, parts = build(path, ddl + ARRIVALS, [(insert, lambda r, c=(name == "compact"): metadata_values(r, c)), arrivals], rows)
        detail = ", ".join(f"{part} {pages / len(rows):.0f}" for part, pages in sorted(parts.items(), key=lambda p: -p[1]) if pages > 8192)
        print(f"metadata {name:8}: {size / raw_bytes:.3f} of raw, {size / len(rows):4.0f} B/message ({detail})")
    for name, (ddl, inserts) in FULL_TEXT.items():
        size, parts = build(path, ddl, inserts, rows)
        print(f"full text {name:45}: {size / raw_bytes:.3f} of raw, {size / len(rows):4.0f} B/message")


if __name__ == "__main__":
    main()
