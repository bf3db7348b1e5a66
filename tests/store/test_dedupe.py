"""The site-wide duplicate pass (archive_common/dedupe.py) over two served stores."""

import hashlib
import json

import pytest

from archive_common import dedupe
from archive_common.client import ArchiveApi, ArchiveApiError
from archive_store.access import token_hash
from storeenv import StoreEnv

WINDOW = (0, 2 ** 40)


def sha(raw):
    return hashlib.sha256(raw).hexdigest()


def message(number, to="rcpt@example.com"):
    return (f"From: Sender <sender@example.org>\r\nTo: {to}\r\nSubject: dedupe test {number}\r\n"
            f"Message-ID: <dedupe{number}@example.org>\r\n\r\nBody {number}.\r\n").encode()


@pytest.fixture
def site(tmp_path):
    """Two stores (server_id 0 and 1) sharing one dedupe token; ``fill`` delivers, ingests and serves."""
    envs = [StoreEnv(tmp_path / f"w{server_id}", server_id=server_id) for server_id in (0, 1)]
    for env in envs[1:]:
        env.clients_path.write_text(env.clients_path.read_text().replace(token_hash(env.dedupe_token),
                                                                         token_hash(envs[0].dedupe_token)))
    yield envs
    for env in envs:
        env.stop()


def serve(envs, deliveries):
    """``deliveries``: (worker index, raw, gateway queue ID[, envelope recipient]), in order; each store ingests
    its own, then serves."""
    for index, raw, gateway_id, *recipient in deliveries:
        envs[index].deliver(raw, gateway_id=gateway_id, delivered_to=recipient[0] if recipient else "archive@archive.example.com")
        envs[index].cli("drain")
    for env in envs:
        env.serve()
    return [ArchiveApi(f"worker{e.server_id}", e.url, envs[0].dedupe_token, timeout=30, cafile=str(e.ca.cert_file)) for e in envs]


def rows(env):
    store = env.store(readonly=True)
    try:
        return {row["sha256"]: row for row in (store.index.get(i) for i in store.index.all_ids())}
    finally:
        store.close()


def audit(env):
    return [json.loads(line) for line in (env.base / "data" / "audit.log").read_text().splitlines()]


def test_a_second_delivery_of_the_same_queue_file_is_removed_and_recorded_on_the_oldest_copy(site):
    first, twice = message(1), message(2)
    apis = serve(site, [(0, first, "4Q1"), (0, twice, "4Q2"), (1, twice, "4Q2"),
                        (1, twice, "4Q3", "archive+zed=example.com@archive.example.com"), (1, message(3), "4Q4")])
    kept_id = rows(site[0])[sha(twice)]["id"]
    plan, report = dedupe.find(apis, *WINDOW)
    assert report["same_bytes_on_several_workers"] == 1 and report["duplicate_deliveries"] == 1
    assert [(p["kept"], p["extra"]["worker"], p["gateway"], p["queue_id"]) for p in plan] == [
        ({"worker": "worker0", "id": kept_id}, "worker1", "archive-gw.example.com", "4Q2")]
    removed = dedupe.remove(apis, plan)
    assert [r["extra"]["id"] for r in removed] == [plan[0]["extra"]["id"]]
    # Worker1's copy is gone; its two arrivals (4Q2, and 4Q3, a journaled message of its own) are on the kept copy.
    assert sha(twice) not in rows(site[1]) and len(rows(site[1])) == 1
    kept = rows(site[0])[sha(twice)]
    assert kept["id"] == kept_id and kept["arrivals"] == 3
    assert kept["env_to"] == ["zed@example.com"]  # the recipient the removed copy had
    queue_ids = sorted(dedupe.delivery(a["transit"])[1] for a in apis[0].arrivals([kept_id])[kept_id])
    assert queue_ids == ["4Q2", "4Q2", "4Q3"]
    entry = [e for e in audit(site[1]) if e["action"] == "purge"][-1]
    assert (entry["id"], entry["kept_id"], entry["kept_worker"], entry["client"]) == (plan[0]["extra"]["id"], kept_id, "worker0", "dedupe")
    assert [e["action"] for e in audit(site[0])] == ["arrival-add"]
    # Both stores verify clean, and a second pass finds nothing.
    for env in site:
        assert env.cli("verify", "--all").returncode == 0
    assert dedupe.find(apis, *WINDOW)[0] == []


def test_the_same_bytes_through_different_gateway_queue_ids_stay_two_messages(site):
    raw = message(4)
    apis = serve(site, [(0, raw, "4R1"), (1, raw, "4R2")])
    plan, report = dedupe.find(apis, *WINDOW)
    assert plan == [] and report["distinct_deliveries_of_the_same_bytes"] == 1
    assert all(sha(raw) in rows(env) for env in site)


def test_a_pass_cut_off_after_recording_the_arrivals_completes_on_the_next_run(site):
    raw = message(5)
    apis = serve(site, [(0, raw, "4S1"), (1, raw, "4S1")])
    plan, _report = dedupe.find(apis, *WINDOW)
    entry = plan[0]
    arrivals = apis[1].arrivals([entry["extra"]["id"]])[entry["extra"]["id"]]
    assert apis[0].add_arrivals(entry["kept"]["id"], entry["sha256"], arrivals, entry["extra"]) == 1
    # ... cut off here; the next run records nothing twice and removes the extra copy.
    plan_again, _report = dedupe.find(apis, *WINDOW)
    assert plan_again == plan
    dedupe.remove(apis, plan_again)
    assert rows(site[0])[entry["sha256"]]["arrivals"] == 2 and entry["sha256"] not in rows(site[1])


def test_a_legal_hold_does_not_keep_the_extra_copy_and_the_audit_entry_says_why(site):
    raw = message(6, to="held@example.com")
    site[1].cli("hold", "add", "held@example.com", "--reason", "matter 42")
    apis = serve(site, [(0, raw, "4T1"), (1, raw, "4T1")])
    removed = dedupe.remove(apis, dedupe.find(apis, *WINDOW)[0])
    assert removed[0]["held_by"] == "held@example.com"
    entry = [e for e in audit(site[1]) if e["action"] == "purge"][-1]
    assert entry["held_by"] == "held@example.com" and removed[0]["kept"]["id"] in entry["hold"]


def test_the_endpoints_need_the_dedupe_scope_and_refuse_a_wrong_digest_in_one_line(site):
    raw = message(7)
    apis = serve(site, [(0, raw, "4U1"), (1, raw, "4U1")])
    entry = dedupe.find(apis, *WINDOW)[0][0]
    admin = ArchiveApi("worker1", site[1].url, site[1].token, timeout=30, cafile=str(site[1].ca.cert_file))
    with pytest.raises(ArchiveApiError) as denied:
        admin.remove_duplicate(entry["extra"]["id"], entry["sha256"], entry["kept"])
    assert denied.value.status == 403 and "dedupe" in denied.value.reason
    with pytest.raises(ArchiveApiError) as wrong:
        apis[1].remove_duplicate(entry["extra"]["id"], "0" * 64, entry["kept"])
    assert wrong.value.status == 400 and "not removed" in wrong.value.reason and "\n" not in wrong.value.reason
    with pytest.raises(ArchiveApiError) as itself:
        apis[1].remove_duplicate(entry["extra"]["id"], entry["sha256"], entry["extra"])
    assert itself.value.status == 400
    assert entry["sha256"] in rows(site[1])


@pytest.mark.parametrize("transit, expected", [
    (["from gw (gw [198.18.10.10]) by worker1.example.com (Postfix) with ESMTPS id 4W1 for <a@b>; Mon, 1 Jan 2026 00:00:00 +0000",
      "from mx (mx [198.18.0.1]) by archive-gw.example.com (Postfix) with ESMTP id 4G7 for <a@b>; Mon, 1 Jan 2026 00:00:00 +0000"],
     ("archive-gw.example.com", "4G7")),
    # Copied to the DR site: the DR gateway's own queue ID differs between two deliveries, the first gateway's not.
    (["from dr-gw by dr-worker1.example.com (Postfix) with ESMTPS id 4W2; Mon, 1 Jan 2026 00:00:02 +0000",
      "from gw by dr-archive-gw.example.com (Postfix) with ESMTPS id 4D9; Mon, 1 Jan 2026 00:00:01 +0000",
      "from mx by archive-gw.example.com (Postfix) with ESMTP id 4G8; Mon, 1 Jan 2026 00:00:00 +0000"],
     ("archive-gw.example.com", "4G8")),
    (["from gw by worker1.example.com (Postfix) with ESMTPS id 4W1; Mon, 1 Jan 2026 00:00:00 +0000"], None),
    (["imported by importer from mbox old.mbox; Mon, 1 Jan 2026 00:00:00 +0000"], None),
    ([], None),
])
def test_the_gateway_hop_is_read_from_the_transit_lines(transit, expected):
    found = dedupe.delivery(transit)
    assert (found[:2] if found else None) == expected


def test_the_command_the_timer_runs_reports_then_removes(site, tmp_path):
    raw = message(8)
    apis = serve(site, [(0, raw, "4V1"), (1, raw, "4V1"), (1, message(9), "4V2")])
    token_file = tmp_path / "dedupe.token"
    token_file.write_text(site[0].dedupe_token + "\n")
    site_file = tmp_path / "dedupe.json"
    site_file.write_text(json.dumps({"token_file": str(token_file), "workers": [
        {"name": api.name, "url": api.url, "ca_file": str(env.ca.cert_file)} for api, env in zip(apis, site)]}))
    dry = site[0].cli("dedupe", "--site", str(site_file), "--dry-run").stdout.decode()
    assert dry.startswith("found worker1 ") and "queue ID 4V1" in dry and "1 duplicate deliveries found, 0 removed" in dry
    assert sha(raw) in rows(site[1])
    done = site[0].cli("dedupe", "--site", str(site_file)).stdout.decode()
    assert done.startswith("removed worker1 ") and "3 messages listed on 2 workers" in done and "1 removed" in done
    assert sha(raw) not in rows(site[1]) and len(rows(site[1])) == 1
    site_file.write_text("{}")
    broken = site[0].cli("dedupe", "--site", str(site_file), check=False)
    assert broken.returncode == 2 and broken.stderr.decode().count("\n") == 1 and "token_file" in broken.stderr.decode()
