"""The cluster scenario's five workers: one of them stopped, the mail goes to the other four."""

import time

from helpers import docker, wait_system_running
from mailflow import make_messages, send, wait_archived


def test_with_worker2_stopped_mail_lands_on_the_other_four(site):
    docker("stop", "worker2")
    try:
        tag = f"failover{int(time.time())}"
        messages = make_messages(tag, 50)
        started = time.time()
        send(site.ip[site.gateways[0]], site.journal_address, messages)
        others = [w for w in site.workers if w != "worker2"]
        wanted, found = wait_archived(site, tag, messages, timeout=60, workers=others)
        print(f"50 messages with worker2 down archived in {time.time() - started:.1f} s")
        assert wanted - set(found) == set()
        assert all(len(c) == 1 for c in found.values())
    finally:
        docker("start", "worker2")
        wait_system_running("worker2")
