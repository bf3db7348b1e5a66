"""The full-text index split by time (index.py, "Shards"): closed shards are read-only files, searches read them
newest first and answer exactly as one index would, removals and ``reindex`` keep them right, and a kill -9
while a shard closes loses nothing."""

import json
import random
import signal
import stat
import subprocess
import sys

import pytest

from archive_store.errors import StoreError
from archive_store.spool import Arrival
from helpers import store_environment

SHARD = 20
WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf"]
PEOPLE = ["ann@a.example", "bob@b.example", "cy@c.example", "di@d.example"]


def message(n: int, rng: random.Random) -> bytes:
    sender, rcpt = rng.sample(PEOPLE, 2)
    body = " ".join(rng.choices(WORDS, k=12)) + f" unique{n} floor price"
    return (f"From: {sender}\r\nTo: {rcpt}\r\nSubject: note {n} {rng.choice(WORDS)}\r\nMessage-ID: <shard-{n}@test>\r\n"
            f"Date: Mon, 0{1 + n % 9} Mar 2026 10:00:00 +0000\r\n\r\n{body}\r\n").encode()


def load(store, count: int, batch: int = 10, first: int = 0):
    rng = random.Random(first)
    for start in range(first, first + count, batch):
        store.ingest([Arrival(raw=message(n, rng), spool_name=f"s-{n}", env_to=[]) for n in range(start, min(start + batch, first + count))])


QUERIES = ["alpha", "unique3", "unique47", "from:ann@a.example", "to:bob@b.example bravo", "subject:note", '"floor price"',
           "alpha after:2026-03-04", "unique5 before:2026-03-09", "charl*", "msgid:shard-33@test", "subject:golf delta"]


def message_ids(rows):
    return [row["message_id"] for row in rows]


def test_closed_shards_answer_as_one_index_would(env, tmp_path):
    env.write_conf(index_shard_messages=SHARD)
    sharded = env.store()
    load(sharded, 75)
    shards = sharded.index.shards()
    assert [(s["first_rowid"], s["last_rowid"]) for s in shards] == [(41, 60), (21, 40), (1, 20)], "one shard per 20 messages, newest first"
    for shard in shards:
        path = sharded.config.shards_dir / shard["file"]
        assert stat.S_IMODE(path.stat().st_mode) == 0o400, f"{path}: a closed shard is read-only"
    assert sharded.index.conn.execute("SELECT count(*) FROM fts WHERE fts MATCH 'unique70'").fetchone()[0] == 1
    assert sharded.index.conn.execute("SELECT count(*) FROM fts WHERE fts MATCH 'unique7'").fetchone()[0] == 0, "live rows only"

    from storeenv import StoreEnv
    plain_env = StoreEnv(tmp_path / "plain")
    plain_env.write_conf(index_shard_messages=0)
    plain = plain_env.store()
    load(plain, 75)
    assert not plain.index.shards()

    for query in QUERIES:
        for offset, limit in ((0, 50), (0, 5), (12, 10), (50, 50), (3, 100)):
            want = message_ids(plain.index.search(query, limit=limit, offset=offset))
            got = message_ids(sharded.index.search(query, limit=limit, offset=offset))
            assert got == want, f"{query!r} offset {offset} limit {limit}: sharded {got}, one index {want}"
        for person in PEOPLE[:2]:
            want = message_ids(plain.index.search(query, limit=100, involving=[person]))
            assert message_ids(sharded.index.search(query, limit=100, involving=[person])) == want, f"{query!r} for {person}"
    assert len(sharded.index.search("alpha", limit=100)) > 40, "the common word reaches into every shard"


def test_a_later_copys_recipient_is_found_in_a_closed_shard(env):
    env.write_conf(index_shard_messages=SHARD)
    store = env.store()
    load(store, 45)
    first = store.index.search("msgid:shard-3@test")[0]
    assert not store.index.search("unique3", involving=["zed@z.example"])
    raw = store.get_raw(first["id"])
    store.ingest([Arrival(raw=raw, spool_name="s-3-again", env_to=["zed@z.example"])])
    found = store.index.search("unique3", involving=["zed@z.example"])
    assert [row["id"] for row in found] == [first["id"]], "the added recipient's scope reaches the closed shard"
    assert [row["id"] for row in store.index.search("", involving=["zed@z.example"])] == [first["id"]]


def test_a_shard_whose_messages_are_all_removed_is_deleted(env):
    env.write_conf(index_shard_messages=SHARD)
    store = env.store()
    load(store, 50)
    oldest = store.index.shards()[-1]
    path = store.config.shards_dir / oldest["file"]
    ids = [r[0].hex() for r in store.index.conn.execute("SELECT id FROM messages WHERE rowid <= ?", (oldest["last_rowid"],))]
    for archive_id in ids[:-1]:
        store.remove(archive_id)
    assert path.exists(), "a shard with one message left stays"
    assert [r["message_id"] for r in store.index.search("unique19")] == ["<shard-19@test>"]
    assert store.index.search("unique3") == [], "a removed message's postings never show"
    store.remove(ids[-1])
    assert not path.exists()
    assert oldest["number"] not in [s["number"] for s in store.index.shards()]
    assert len(store.index.search("alpha", limit=100)) == len(store.index.search("alpha", limit=100, offset=0))
    assert store.index.search("unique19") == []


def test_reindex_builds_shards_and_deletes_the_old_ones(env):
    env.write_conf(index_shard_messages=SHARD)
    store = env.store()
    load(store, 45)
    before = {s["file"] for s in store.index.shards()}
    answers = {q: message_ids(store.index.search(q, limit=100)) for q in QUERIES}
    store.reindex()
    after = {s["file"] for s in store.index.shards()}
    assert len(after) == 2 and not after & before, "the rebuild has shards of its own"
    assert {p.name for p in store.config.shards_dir.iterdir()} == after, "the replaced index's shards are deleted"
    assert {q: message_ids(store.index.search(q, limit=100)) for q in QUERIES} == answers


def test_a_missing_shard_is_a_clear_error_not_fewer_results(env):
    env.write_conf(index_shard_messages=SHARD)
    store = env.store()
    load(store, 30)
    shard = store.index.shards()[0]
    store.close()
    (env.config().shards_dir / shard["file"]).unlink()
    store = env.store()
    assert store.index.search("unique25", limit=1), "a page the live rows fill never reaches the shard"
    with pytest.raises(StoreError, match=r"index shard .*messages 1-20\): expected a file, found none; run `archive_store reindex`"):
        store.index.search("alpha", limit=100)


def test_kill_9_while_a_shard_closes_loses_nothing(env):
    env.write_conf(index_shard_messages=SHARD, batch_size=10)
    for n, raw in enumerate(message(n, random.Random(n)) for n in range(35)):
        env.deliver(raw, name=f"{n:04d}.V1I1M1.worker0")
    environment = store_environment()
    environment["ARCHIVE_STORE_CRASH_AT"] = "shard:1"
    proc = subprocess.run([sys.executable, "-m", "archive_store", "-c", str(env.conf_path), "drain"], env=environment,
                          capture_output=True, check=False, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-500:]
    config = env.config()
    left = list(config.shards_dir.iterdir())
    assert len(left) == 1 and left[0].name.endswith("-00001.sqlite"), f"the renamed, unrecorded shard: {left}"
    finished = env.cli("drain")
    assert finished.returncode == 0
    store = env.store(readonly=True)
    shards = store.index.shards()
    assert len(shards) == 1 and shards[0]["first_rowid"] == 1 and shards[0]["last_rowid"] >= SHARD, "closed again after the kill"
    assert [p.name for p in config.shards_dir.iterdir()] == [shards[0]["file"]]
    assert store.index.stats()["messages"] == 35
    for n in range(35):
        assert message_ids(store.index.search(f"unique{n}")) == [f"<shard-{n}@test>"], f"message {n} findable"


def test_the_shards_command_closes_and_lists(env):
    env.write_conf(index_shard_messages=0)
    store = env.store()
    load(store, 15)
    store.close()
    closed = env.cli("shards", "--close").stdout.decode()
    assert "closed shard" in closed and "messages 1-15" in closed, closed
    listing = env.cli("shards").stdout.decode()
    assert "    1 rows 1-15 15 messages stored" in listing, listing
    assert listing.strip().endswith("1 closed shards; every never (0) messages"), listing
    assert "nothing to close" in env.cli("shards", "--close").stdout.decode()
    assert json.loads(env.cli("stats").stdout)["index_shards"] == 1
    assert message_ids(env.store(readonly=True).index.search("unique4")) == ["<shard-4@test>"]


def test_a_restore_from_a_snapshot_taken_before_a_shard_closed_finds_everything(env):
    """The backup role snapshots the index first and copies the shard files after: a shard closed in between is
    in the copy but not in the snapshot. The restore's reindex --missing deletes it and indexes its messages again."""
    env.write_conf(index_shard_messages=SHARD)
    store = env.store()
    load(store, 25)
    assert env.cli("snapshot", "--out", str(env.base / "index.snapshot")).returncode == 0
    load(store, 30, first=25)
    assert len(store.index.shards()) == 2
    store.close()
    env.put_back_snapshot(env.base / "index.snapshot")
    assert env.cli("reindex", "--missing").returncode == 0
    store = env.store()
    assert len(list(env.config().shards_dir.iterdir())) == len(store.index.shards())
    assert store.index.stats()["messages"] == 55
    for n in range(55):
        assert message_ids(store.index.search(f"unique{n}")) == [f"<shard-{n}@test>"], f"message {n} findable"


def test_an_index_of_the_previous_release_gains_shards_at_its_first_writable_open(env):
    """The release before this one wrote layout 2 without the shards table: opened for reading it answers as before,
    its first writable open adds the table, and its next batch past the size closes everything live into shard 1."""
    env.write_conf(index_shard_messages=0)
    store = env.store()
    load(store, 25)
    store.index.conn.executescript("DROP TABLE shards; DROP TABLE index_meta;")
    store.close()
    reader = env.store(readonly=True)
    assert reader.index.shards() == [] and message_ids(reader.index.search("unique7")) == ["<shard-7@test>"]
    reader.close()
    env.write_conf(index_shard_messages=SHARD)
    store = env.store()
    load(store, 5, first=25)
    assert [(s["first_rowid"], s["last_rowid"]) for s in store.index.shards()] == [(1, 30)]
    for n in (0, 7, 24, 29):
        assert message_ids(store.index.search(f"unique{n}")) == [f"<shard-{n}@test>"]
