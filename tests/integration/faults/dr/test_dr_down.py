"""The DR site down under load (dr scenario, make test-faults)."""

import time

from helpers import docker
from mailflow import Load, make_messages, reconcile, summary, wait_archived, wait_running
from module_runner import run_module


def test_the_dr_site_down_under_load_delays_its_copies_and_loses_nothing(site, dr_site):
    """dr-archive-gw stops during 400 messages: the primary archives every one at once; the primary
    gateways keep the DR copies queued, and once the DR gateway is back and the queues are flushed
    (postqueue -f, as an operator would rather than wait for postfix's backoff) the DR site has every
    message (once, after its duplicate pass if the stop cut a reply), and reconcile finds the two sites in sync."""
    started = time.time()
    tag = f"drdown{int(started)}"
    messages = make_messages(tag, 400, size=2000)
    load = Load(site.ip[site.gateways[0]], site.journal_address, messages, pause=0.02)
    load.start()
    while len(load.acked) < 50:
        time.sleep(0.2)
    docker("stop", "dr-archive-gw")
    try:
        load.join(300)
        assert not load.is_alive() and len(load.acked) == len(messages) and load.retries == 0
        _wanted, found = wait_archived(site, tag, messages, timeout=180)
        assert summary("DR site down, primary", messages, found, started) == (0, 0)
        queued = docker("exec", site.gateways[0], "postqueue", "-j").stdout.count(dr_site.journal_address)
        assert queued > 0, "the primary gateway kept no copies for the DR site"
    finally:
        docker("start", "dr-archive-gw")
        wait_running("dr-archive-gw", dr_site.ip[dr_site.gateways[0]])
    for gateway in site.gateways:
        docker("exec", gateway, "postqueue", "-f")
    _wanted, found = wait_archived(dr_site, tag, messages, timeout=300)
    lost, duplicated = summary(f"DR site down, DR copies ({queued} were queued on {site.gateways[0]})", messages,
                               found, started)
    assert lost == 0
    if duplicated:
        # dr-archive-gw stopped after queueing a copy but before its 250 reached archive-gw, which sent it again
        # (RFC 1047): the DR site's duplicate pass, which its timer runs hourly, keeps one.
        result = run_module("dedupe", {"workers": dr_site.module_workers(), "since": int(started) - 5})
        assert not result.get("failed"), result.get("msg")
        print(f"the DR site's duplicate pass: {len(result['duplicates'])} found, {len(result['removed'])} removed, "
              f"gateway queue IDs {sorted({d['queue_id'] for d in result['duplicates']})}")
        _wanted, found = wait_archived(dr_site, tag, messages, timeout=60)
        assert summary("DR site down, DR copies after the duplicate pass", messages, found, started) == (0, 0)
    report = reconcile(site, dr_site, since=int(started) - 5, until=int(time.time()) + 2)
    assert report["in_sync"] is True, report["missing"]
