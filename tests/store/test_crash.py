"""kill -9 the ingest process mid-batch, again and again: nothing lost, nothing doubled."""

import hashlib
import os
import random
import signal
import subprocess
import sys
import time

from conftest import STORE_SRC

MESSAGES = 600


def test_kill_9_mid_ingest_loses_and_duplicates_nothing(env):
    env.write_conf(batch_size=40)
    rng = random.Random(1234)
    sent = {}
    for n in range(MESSAGES):
        body = os.urandom(rng.randint(100, 20000)).hex().encode()
        raw = b"Subject: crash %d\r\nMessage-ID: <crash-%d@test>\r\n\r\n%s\r\n" % (n, n, body)
        env.deliver(raw)
        sent[hashlib.sha256(raw).hexdigest()] = raw
    # Also one message delivered twice: it must stay one message with two arrivals.
    env.deliver(raw)

    kills = 0
    cmd = [sys.executable, "-m", "archive_store", "-c", str(env.conf_path), "drain"]
    pyenv = dict(os.environ, PYTHONPATH=str(STORE_SRC))
    deadline = time.time() + 120
    while list((env.spool / "new").iterdir()) and time.time() < deadline:
        proc = subprocess.Popen(cmd, env=pyenv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.15, 0.6))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
    assert kills >= 3, "the drain finished before it could be killed often enough"
    env.cli("drain")

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
    print(f"killed {kills} times; {MESSAGES} messages stored once each")
