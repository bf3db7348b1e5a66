"""kill -9 the ingest at each step of a batch, again and again: nothing lost, nothing doubled.

The store kills itself at a named step (archive_store/crashpoints.py), so every
kill lands where the test says, on every run: no race with a drain that ends early.
"""

import hashlib
import os
import random
import signal
import subprocess
import sys

from helpers import store_environment

MESSAGES = 600
BATCH = 40
# One kill at each step of the ingest, some in the first batch, some later, some mid-batch.
KILLS = [("intent", 1), ("object", 7), ("committed", 1), ("ingested", 1),
         ("object", 55), ("intent", 3), ("committed", 2), ("ingested", 3), ("object", 1)]


def drain(env, crash_at=None):
    environment = store_environment()
    if crash_at:
        environment["ARCHIVE_STORE_CRASH_AT"] = crash_at
    return subprocess.run([sys.executable, "-m", "archive_store", "-c", str(env.conf_path), "drain"],
                          env=environment, capture_output=True, check=False, timeout=300)


def test_kill_9_at_every_ingest_step_loses_and_duplicates_nothing(env):
    env.write_conf(batch_size=BATCH)
    rng = random.Random(1234)
    sent = {}
    for n in range(MESSAGES):
        body = os.urandom(rng.randint(100, 20000)).hex().encode()
        raw = b"Subject: crash %d\r\nMessage-ID: <crash-%d@test>\r\n\r\n%s\r\n" % (n, n, body)
        env.deliver(raw)
        sent[hashlib.sha256(raw).hexdigest()] = raw
    # Also one message delivered twice: it must stay one message with two arrivals.
    env.deliver(raw)

    for step, count in KILLS:
        proc = drain(env, f"{step}:{count}")
        assert proc.returncode == -signal.SIGKILL, (
            f"the drain was to be killed at {step}:{count} but exited {proc.returncode}: {proc.stderr.decode()[-500:]}")
    assert list((env.spool / "new").iterdir()), "the kills should leave mail in the spool"
    finished = drain(env)
    assert finished.returncode == 0, finished.stderr.decode()[-500:]

    assert not list((env.spool / "new").iterdir())
    store = env.store(readonly=True)
    stats = store.index.stats()
    assert stats["messages"] == MESSAGES
    assert stats["arrivals"] == MESSAGES + 1
    stored = {}
    for archive_id in store.index.all_ids():
        raw = store.get_raw(archive_id)
        stored[hashlib.sha256(raw).hexdigest()] = raw
    assert stored == sent
    on_disk = list(store.objects.all_ids())
    assert sorted(on_disk) == sorted(store.index.all_ids()), "orphaned or missing objects"
    assert not (env.config().data_dir / "intent").exists()
    assert env.cli("verify", "--all").returncode == 0
    print(f"killed {len(KILLS)} times at {', '.join(f'{s}:{n}' for s, n in KILLS)}; {MESSAGES} messages stored once each")


def test_a_malformed_crash_point_is_refused_in_one_line(env):
    proc = drain(env, "somewhere:1")
    assert proc.returncode != 0
    assert proc.stderr.decode().strip().splitlines()[-1].startswith("ARCHIVE_STORE_CRASH_AT: expected <step>:<n>")
