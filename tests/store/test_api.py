"""The HTTP API of a real `serve` process: auth, stats, search, fetch."""

import base64
import hashlib
import json
import time
import urllib.error
import urllib.request

import pytest


@pytest.fixture
def served(env):
    env.serve()
    return env, f"http://127.0.0.1:{env.port}"


def _get(url, token=None):
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=5) as resp:
        return resp.status, resp.read()


def test_requests_without_or_with_a_wrong_token_get_401(served):
    env, base = served
    for token in (None, "wrong-token-0123456789", env.token[:-1]):
        with pytest.raises(urllib.error.HTTPError) as err:
            _get(base + "/api/v1/stats", token)
        assert err.value.code == 401
        assert err.value.headers["WWW-Authenticate"].startswith("Bearer")
    assert _get(base + "/api/v1/stats", env.token)[0] == 200


def test_served_store_ingests_and_answers_search_and_fetch(served):
    env, base = served
    raw = b"Message-ID: <api-probe-1@test>\r\nSubject: probe via api\r\n\r\nzebra\r\n"
    env.deliver(raw)
    for _n in range(100):
        body = _get(base + "/api/v1/search?q=msgid:api-probe-1@test", env.token)[1]
        results = json.loads(body)["results"]
        if results:
            break
        time.sleep(0.1)
    [row] = results
    assert row["sha256"] == hashlib.sha256(raw).hexdigest()
    body = _get(base + f"/api/v1/messages/{row['id']}/raw", env.token)[1]
    assert body == raw
    body = _get(base + f"/api/v1/messages/{row['id']}?raw=1", env.token)[1]
    assert base64.b64decode(json.loads(body)["raw_b64"]) == raw
    transit = json.loads(body)["transit"]  # the cluster's Received headers, kept beside the bytes
    assert len(transit) == 2 and "by worker0.example.com (Postfix) with ESMTPS" in transit[0], transit
    stats = json.loads(_get(base + "/api/v1/stats", env.token)[1])
    assert stats["messages"] == 1 and stats["spool_backlog"] == 0 and stats["server_id"] == 0
    assert stats["license"]["days_left"] > 300 and stats["ingesting"] is True
    with pytest.raises(urllib.error.HTTPError) as err:
        _get(base + "/api/v1/messages/" + "0" * 36, env.token)
    assert err.value.code == 404


def _post(url, token):
    req = urllib.request.Request(url, data=b"", method="POST")
    req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=5) as resp:
        return resp.status, json.loads(resp.read())


def _probe(run, number, header_run=None):
    return (f"From: delivery-check@mailarchive.invalid\r\nMessage-ID: <probe-{run}-{number}@mailarchive.invalid>\r\n"
            f"Subject: [mailarchive probe] {run} {number}\r\nX-Mailarchive-Probe: {header_run or run}\r\n\r\n"
            f"probe token mailarchiveprobe{run} number {number}\r\n").encode("ascii")


def _wait_for(base, token, query, count):
    for _n in range(100):
        results = json.loads(_get(base + "/api/v1/search?q=" + query, token)[1])["results"]
        if len(results) == count:
            return results
        time.sleep(0.1)
    raise AssertionError(f"{query}: expected {count} results, found {len(results)}")


def test_probe_purge_removes_only_that_runs_probes_and_audits_each(served):
    env, base = served
    run, other = "0123abcd0123abcd", "ffffeeee"
    for number in range(3):
        env.deliver(_probe(run, number), env_from="delivery-check@mailarchive.invalid")
    env.deliver(_probe(other, 0), env_from="delivery-check@mailarchive.invalid")
    # Look-alikes that must stay: a forged sender, and a header naming another run.
    env.deliver(_probe(run, 7), env_from="someone@example.org")
    env.deliver(_probe(run, 8, header_run=other), env_from="delivery-check@mailarchive.invalid")
    _wait_for(base, env.token, "mailarchiveprobe" + run, 5)
    with pytest.raises(urllib.error.HTTPError) as err:
        _post(base + f"/api/v1/probes/{run}/purge", "wrong-token-0123456789")
    assert err.value.code == 401
    status, answer = _post(base + f"/api/v1/probes/{run}/purge", env.token)
    assert status == 200
    assert sorted(p["message_id"] for p in answer["purged"]) == [
        f"<probe-{run}-{n}@mailarchive.invalid>" for n in range(3)]
    left = _wait_for(base, env.token, "mailarchiveprobe" + run, 2)
    assert sorted(r["message_id"] for r in left) == [f"<probe-{run}-{n}@mailarchive.invalid>" for n in (7, 8)]
    assert len(_wait_for(base, env.token, "mailarchiveprobe" + other, 1)) == 1
    audit = [json.loads(line) for line in env.config().audit_log.read_text().splitlines()]
    assert sorted(e["id"] for e in audit if e["action"] == "purge") == sorted(p["id"] for p in answer["purged"])
    assert all(e["reason"] == f"delivery-check probe run {run}" for e in audit)
    assert env.cli("verify", "--all").returncode == 0
    with pytest.raises(urllib.error.HTTPError) as err:
        _post(base + "/api/v1/probes/not-hex/purge", env.token)
    assert err.value.code == 400


def test_listing_pages_through_a_time_window_by_id(served):
    env, base = served
    for number in range(5):
        env.deliver(f"Message-ID: <list-{number}@test>\r\n\r\nbody {number}\r\n".encode("ascii"))
    _wait_for(base, env.token, "msgid:list-4@test", 1)
    now = int(time.time())
    page, after = [], ""
    while True:
        rows = json.loads(_get(base + f"/api/v1/list?since={now - 60}&until={now + 60}&limit=2&after={after}",
                               env.token)[1])["results"]
        if not rows:
            break
        page.extend(rows)
        after = rows[-1]["id"]
    assert sorted(r["message_id"] for r in page) == [f"<list-{n}@test>" for n in range(5)]
    assert [r["id"] for r in page] == sorted(r["id"] for r in page)
    future = json.loads(_get(base + f"/api/v1/list?since={now + 60}", env.token)[1])["results"]
    assert future == []
