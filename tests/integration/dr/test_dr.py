"""The second gateway, the DR site, reconciliation and the backup and restore drill (dr scenario)."""

import hashlib
import re
import time

from conftest import playbook
from helpers import docker
from mailflow import listing, make_messages, reconcile, send, send_by_mx, wait_archived, wait_running
from module_runner import run_module


def once_everywhere(site, dr_site, tag, messages):
    """Wait until every message is archived once at the primary and once at the DR site; where, at each."""
    where = []
    for s in (site, dr_site):
        wanted, found = wait_archived(s, tag, messages, timeout=120)
        assert wanted - set(found) == set(), f"lost at {s.workers}"
        assert [sha for sha, copies in found.items() if len(copies) > 1] == [], f"duplicated at {s.workers}"
        where.append(found)
    return where


def test_the_dr_site_archives_through_its_own_gateway(dr_site):
    result = run_module("delivery_check", {
        "gateway": dr_site.ip[dr_site.gateways[0]], "recipient": dr_site.journal_address, "count": 20,
        "timeout": 60, "min_workers": 2, "remove_probes": True, "workers": dr_site.module_workers()})
    assert not result.get("failed"), result.get("msg")
    assert all(p["server_id_ok"] and p["sha256_ok"] for p in result["probes"])
    assert {dr_site.server_id[p["worker"]] for p in result["probes"]} <= {10, 11}


def test_with_one_gateway_stopped_journal_mail_fails_over_to_the_other(site, dr_site):
    docker("stop", "archive-gw")
    try:
        tag = f"failover{int(time.time())}"
        messages = make_messages(tag, 20)
        took = send_by_mx(site.ip[site.dns[0]], site.journal_domain, site.journal_address, messages)
        assert took == "archive-gw2.example.com"
        once_everywhere(site, dr_site, tag, messages)
    finally:
        docker("start", "archive-gw")
        wait_running("archive-gw", site.ip["archive-gw"])


def test_200_messages_reach_both_sites_and_reconciliation_finds_nothing_missing(site, dr_site):
    start = int(time.time()) - 2
    tag = f"both{start}"
    messages = make_messages(tag, 200)
    send(site.ip[site.gateways[0]], site.journal_address, messages)
    once_everywhere(site, dr_site, tag, messages)
    result = reconcile(site, dr_site, since=start, until=int(time.time()) + 2)
    assert result["in_sync"] is True, result["missing"]
    # Earlier tests' mail may also fall in the window; the 200 are there at least.
    assert result["counts"]["primary"] >= 200 and result["counts"]["dr"] >= 200


def test_reconciliation_finds_exactly_the_messages_deleted_on_a_dr_worker_and_resends_them(site, dr_site):
    start = int(time.time()) - 2
    tag = f"gap{start}"
    messages = make_messages(tag, 40)
    send(site.ip[site.gateways[0]], site.journal_address, messages)
    _primary, found = once_everywhere(site, dr_site, tag, messages)
    on_dr0 = sorted((row["id"], sha) for sha, copies in found.items() for worker, row in copies if worker == "dr-worker0")
    assert len(on_dr0) >= 5, f"only {len(on_dr0)} of 40 reached dr-worker0"
    victims = on_dr0[:5]
    # By hand, past the store: the index rows and the sealed objects go, no audit entry.
    script = ("import sys; from archive_store import config, store; s = store.Store(config.load(), recover=False)\n"
              "for i in sys.argv[1:]: s.index.remove(i); s.objects.delete(i)")
    contract = dr_site.contract["dr-worker0"]
    docker("exec", "dr-worker0", "setpriv", f"--reuid={contract['user']}", f"--regid={contract['user']}", "--init-groups",
           "env", f"PYTHONPATH={contract['lib_dir']}", "python3", "-c", script, *[i for i, _sha in victims])
    window = {"since": start, "until": int(time.time()) + 2}
    report = reconcile(site, dr_site, **window)
    assert sorted(m["sha256"] for m in report["missing"]["dr"]) == sorted(sha for _i, sha in victims)
    assert report["missing"]["primary"] == []
    assert all(m["worker"] in site.workers for m in report["missing"]["dr"])
    repaired = reconcile(site, dr_site, resend=True, **window)
    assert repaired["changed"] is True
    assert sorted(repaired["repaired"]["dr"]) == sorted(sha for _i, sha in victims)
    assert reconcile(site, dr_site, **window)["in_sync"] is True
    wanted, again = wait_archived(dr_site, tag, messages, timeout=30)
    assert wanted == set(again) and all(len(c) == 1 for c in again.values())


def test_backup_and_restore_drill_with_the_gap_closed_from_the_dr_site(site, dr_site):
    tag = f"before{int(time.time())}"
    before = make_messages(tag, 30)
    send(site.ip[site.gateways[0]], site.journal_address, before)
    once_everywhere(site, dr_site, tag, before)
    docker("exec", "worker2", "systemctl", "start", "archive-store-backup.service")
    backed_up = listing(site, "worker2")
    assert backed_up, "worker2 has archived nothing to back up"
    # Mail after the backup: some of it lands on worker2, and the backup lacks it.
    start = int(time.time()) - 2
    messages, after_on_w2 = [], set()
    for batch in range(5):  # until some of it has landed on worker2 (the MX choice is random)
        tag = f"after{start}b{batch}"
        more = make_messages(tag, 30)
        send(site.ip[site.gateways[0]], site.journal_address, more)
        found, _dr = once_everywhere(site, dr_site, tag, more)
        messages += more
        after_on_w2 |= {sha for sha, copies in found.items() if copies[0][0] == "worker2"}
        if after_on_w2:
            break
    assert after_on_w2, f"no message of {len(messages)} reached worker2"
    # Destroy worker2's store.
    docker("exec", "worker2", "sh", "-c", "systemctl stop archive-store && rm -rf /var/lib/archive-store/*")
    proc = playbook("playbooks/restore.yml", "-e", "target=worker2")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert re.search(r"verified (\d+) messages: \1 ok, 0 failed", proc.stdout), proc.stdout[-2000:]
    assert listing(site, "worker2") == backed_up
    # The gap: what worker2 stored after the backup is at the DR site only.
    window = {"since": start, "until": int(time.time()) + 2}
    report = reconcile(site, dr_site, **window)
    assert {m["sha256"] for m in report["missing"]["primary"]} == after_on_w2
    assert report["missing"]["dr"] == []
    repaired = reconcile(site, dr_site, resend=True, **window)
    assert set(repaired["repaired"]["primary"]) == after_on_w2
    assert reconcile(site, dr_site, **window)["in_sync"] is True
    archived = {sha for w in site.workers for _id, sha in listing(site, w, start)}
    assert {hashlib.sha256(raw).hexdigest() for raw in messages} <= archived
