"""Search benchmark: load N messages into one store through the store's own
ingest code (Store.ingest: parse, seal, fsync, index), then time queries.

Prints load rate, p50/p95 of single-word and from:+word queries, and the
index size as a ratio of the raw size. Resumable: a store already holding
messages is topped up to N.
"""

import argparse
import itertools
import logging
import random
import statistics
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "ta", "vo", "shi", "pe", "da", "gu", "zen", "fa", "rix", "bo", "tel"]


def vocabulary(rng, size):
    words = set()
    while len(words) < size:
        words.add("".join(rng.choice(SYLLABLES) for _n in range(rng.randint(2, 4))))
    return sorted(words)


def setup(base: Path, shard_messages=None):
    """The store under ``base`` (made on first use; ``shard_messages`` sets its ``index_shard_messages``). The
    store is imported here: the message generator and the queries are used without it (bench/cluster_search.py)."""
    from archive_store import config as configuration, crypto
    from archive_store.store import Store

    base.mkdir(parents=True, exist_ok=True)
    conf = base / "store.conf"
    if not conf.exists():
        (base / "spool" / "Maildir" / "new").mkdir(parents=True, exist_ok=True)
        conf.write_text(f"[store]\nserver_id = 9\nhostname = archive.example.com\ndata_dir = {base / 'data'}\n"
                        f"spool_dir = {base / 'spool' / 'Maildir'}\nlicense_file = {base / 'license'}\n"
                        f"key_file = {base / 'store.key'}\nbatch_size = 1000\n")
        crypto.generate(base / "store.key")
    if shard_messages is not None:
        lines = [line for line in conf.read_text().splitlines() if not line.startswith("index_shard_messages")]
        conf.write_text("\n".join(lines + [f"index_shard_messages = {shard_messages}"]) + "\n")
    return Store(configuration.load(conf))


def corpus():
    """The vocabulary, its Zipf-like cumulative weights (as in real text) and 5,000 senders: always the same."""
    rng = random.Random(42)
    words = vocabulary(rng, 20000)
    cum_weights = list(itertools.accumulate(1 / (rank + 1) for rank in range(len(words))))
    senders = [f"{rng.choice(words)}.{rng.choice(words)}@{rng.choice(words)}.example" for _n in range(5000)]
    return words, cum_weights, senders


def message(rng, words, cum_weights, senders, number):
    """Message ``number`` of the sequence that ``random.Random(0)`` generates from message 0 on."""
    subject = " ".join(rng.choices(words, cum_weights=cum_weights, k=rng.randint(3, 8)))
    body = " ".join(rng.choices(words, cum_weights=cum_weights, k=rng.randint(40, 200)))
    body = "\r\n".join(body[i:i + 76] for i in range(0, len(body), 76))
    sender = senders[int(rng.paretovariate(1.2)) % len(senders)]
    rcpt = rng.choice(senders)
    return (f"From: {sender}\r\nTo: {rcpt}\r\nSubject: {subject}\r\nMessage-ID: <bench-{number}@bench.example>\r\n"
            f"Date: Mon, 02 Mar 2026 10:{number % 60:02d}:00 +0000\r\n\r\n{body}\r\n").encode()


MIX_WORD = "realmix"  # in every realistic message's subject, in no generated vocabulary (no syllable starts "re")


def realistic(words, cum_weights, senders, number):
    """Message ``number`` of the realistic mix, the same bytes on every machine: a text body and its HTML
    alternative, and a size drawn near real mail (log-normal, median 20 kB, cut at 10 MB) made up by an
    incompressible attachment (random bytes, base64) when the text falls short of it."""
    from email.message import EmailMessage

    rng = random.Random(f"mix-{number}")
    msg = EmailMessage()
    msg["From"] = senders[int(rng.paretovariate(1.2)) % len(senders)]
    msg["To"] = ", ".join(rng.sample(senders, rng.randint(1, 3)))
    msg["Subject"] = " ".join([MIX_WORD] + rng.choices(words, cum_weights=cum_weights, k=rng.randint(3, 8)))
    msg["Date"] = f"Tue, 03 Mar 2026 11:{number % 60:02d}:00 +0000"
    msg["Message-ID"] = f"<mix-{number}@bench.example>"
    text = " ".join(rng.choices(words, cum_weights=cum_weights, k=rng.randint(40, 400)))
    msg.set_content(text)
    msg.add_alternative(f"<html><body><p>{text}</p></body></html>", subtype="html")
    size = min(int(rng.lognormvariate(9.9, 1.3)), 10_000_000)  # e**9.9 = 19,930 bytes
    short = (size - len(bytes(msg))) * 3 // 4  # base64 is 4/3 of the bytes it carries
    if short > 0:
        msg.add_attachment(rng.randbytes(short), maintype="application", subtype="octet-stream",
                           filename=f"attachment-{number}.bin")
    for depth, part in enumerate(part for part in msg.walk() if part.is_multipart()):
        part.set_boundary(f"=_mix-{number}-{depth}")  # not the library's random one
    return bytes(msg)


def queries(words, senders, count):
    """``count`` single-word queries (common, middling and rare words) and ``count`` from:+word queries."""
    qrng = random.Random(7)
    common = words[:50]
    middle = words[500:5000]
    rare = words[10000:]
    single = [qrng.choice(common) for _n in range(count // 3)] + \
             [qrng.choice(middle) for _n in range(count // 3)] + [qrng.choice(rare) for _n in range(count // 3)]
    from_word = [f"from:{qrng.choice(senders[:500])} {qrng.choice(middle)}" for _n in range(count // 2)] + \
                [f"from:{qrng.choice(senders[:500])} {qrng.choice(common)}" for _n in range(count // 2)]
    return single, from_word


def percentiles(times):
    """p50, p95 and max of a list of times."""
    times = sorted(times)
    return statistics.median(times), times[int(0.95 * (len(times) - 1))], times[-1]


def timed(store, queries):
    times = []
    for query in queries:
        started = time.perf_counter()
        store.index.search(query, limit=50)
        times.append((time.perf_counter() - started) * 1000)
    return percentiles(times)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", "--messages", type=int, default=1_000_000)
    parser.add_argument("--dir", default="/var/tmp/archive-search-bench")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--shard-messages", type=int, help="the store's index_shard_messages (0: one full-text index;"
                        " by default what its store.conf says, else the store's default)")
    parser.add_argument("--optimize", action="store_true", help="at the end, time FTS5 'optimize' of the live full-text rows")
    args = parser.parse_args()
    from archive_store.spool import Arrival

    logging.basicConfig(format="  %(message)s")
    logging.getLogger("archive_store.index").setLevel(logging.INFO)  # each shard closed, and how long it took
    words, cum_weights, senders = corpus()
    store = setup(Path(args.dir), args.shard_messages)
    have = store.index.stats()["messages"]
    rng_load = random.Random(0)
    for number in range(have):  # a top-up goes on with the same sequence (bench/cluster_search.py relies on it)
        message(rng_load, words, cum_weights, senders, number)
    started = time.time()
    loaded = 0
    while have + loaded < args.messages:
        batch = []
        for _n in range(min(1000, args.messages - have - loaded)):
            number = have + loaded + len(batch)
            batch.append(Arrival(raw=message(rng_load, words, cum_weights, senders, number), spool_name=f"bench-{number}"))
        store.ingest(batch)
        loaded += len(batch)
        if loaded % 50000 == 0:
            print(f"  loaded {have + loaded} ({loaded / (time.time() - started):.0f} msg/s)", flush=True)
    if loaded:
        print(f"loaded {loaded} messages in {time.time() - started:.0f} s ({loaded / (time.time() - started):.0f} msg/s) through Store.ingest")
    stats = store.index.stats()
    index_bytes = store.index.files_bytes()
    objects_bytes = stats["stored_bytes"]

    single, from_word = queries(words, senders, args.queries)
    timed(store, single[:20])  # warm the page cache the way a running server is warm
    print(f"store: {stats['messages']} messages, raw {stats['raw_bytes'] / 1e9:.2f} GB, "
          f"objects {objects_bytes / 1e9:.2f} GB, index {index_bytes / 1e9:.2f} GB "
          f"(index/raw {index_bytes / stats['raw_bytes']:.2f}); {stats['index_shards']} closed shards")
    for label, batch in (("single word", single), ("from:+word", from_word)):
        p50, p95, worst = timed(store, batch)
        print(f"{label:12} ({len(batch)} queries, limit 50): p50 {p50:6.1f} ms  p95 {p95:6.1f} ms  max {worst:6.1f} ms")
    if args.optimize:
        live = store.index.conn.execute("SELECT count(*) FROM messages WHERE rowid >= ?",
                                        (store.index.shards()[0]["last_rowid"] + 1 if stats["index_shards"] else 1,)).fetchone()[0]
        started = time.time()
        store.index.conn.execute("INSERT INTO fts (fts) VALUES ('optimize')")
        print(f"FTS5 optimize of the live full text ({live} messages): {time.time() - started:.1f} s")


if __name__ == "__main__":
    main()
