"""The HTTPS API of a real `serve` process: TLS, credentials and scopes, stats, search, fetch, the access log."""

import base64
import hashlib
import http.client
import json
import signal
import socket
import ssl
import time
import urllib.error
import urllib.request

import pytest

from archive_common.client import ArchiveApi, ArchiveApiError
from helpers import wait_until
from pki import CA


# Each served store's TLS client context (trusting its own test CA), by its base URL.
_CONTEXTS = {}


@pytest.fixture
def served(env):
    env.serve()
    _CONTEXTS[env.url] = env.tls()
    yield env, env.url
    del _CONTEXTS[env.url]


def _context(url):
    return next(context for base, context in _CONTEXTS.items() if url.startswith(base))


def _get(url, token=None):
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=5, context=_context(url)) as resp:
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


def _post(url, token, body=None):
    req = urllib.request.Request(url, data=json.dumps(body).encode() if body is not None else b"", method="POST")
    req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=5, context=_context(url)) as resp:
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


def test_plain_http_to_the_api_is_refused(served):
    env, base = served
    plain = f"http://127.0.0.1:{env.port}/api/v1/stats"
    req = urllib.request.Request(plain, headers={"Authorization": f"Bearer {env.token}"})
    with pytest.raises((urllib.error.URLError, http.client.HTTPException, ConnectionError)):
        urllib.request.urlopen(req, timeout=5).read()
    assert "TLS handshake with 127.0.0.1 failed" in env.services[-1].log()


def test_a_client_that_does_not_trust_the_site_ca_fails_the_handshake(served, tmp_path):
    env, base = served
    stranger = CA(tmp_path / "other-ca", "some other CA")
    for context in (ssl.create_default_context(), ssl.create_default_context(cafile=str(stranger.cert_file))):
        req = urllib.request.Request(base + "/api/v1/stats", headers={"Authorization": f"Bearer {env.token}"})
        with pytest.raises(urllib.error.URLError) as err:
            urllib.request.urlopen(req, timeout=5, context=context)
        assert isinstance(err.value.reason, ssl.SSLCertVerificationError), err.value.reason


def test_health_is_plain_http_on_loopback_and_serves_nothing_else(served):
    env, _base = served
    with urllib.request.urlopen(f"http://127.0.0.1:{env.health_port}/health", timeout=5) as resp:
        assert json.loads(resp.read()) == {"status": "ok"}
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{env.health_port}/api/v1/stats",
                                                      headers={"Authorization": f"Bearer {env.token}"}), timeout=5)
    assert err.value.code == 404


def test_health_listen_must_be_a_loopback_address(env):
    env.write_conf(api={"health_listen": "0.0.0.0:8026"})
    proc = env.cli("stats", check=False)
    assert proc.returncode != 0
    assert proc.stderr.decode().strip().splitlines()[-1].endswith(
        "[api] health_listen: expected a loopback address (plain HTTP), found '0.0.0.0:8026'")


def test_a_read_token_cannot_remove_probes_or_touch_holds_403_naming_the_scope(served):
    env, base = served
    with pytest.raises(urllib.error.HTTPError) as err:
        _post(base + "/api/v1/probes/0123abcd/purge", env.read_token)
    assert err.value.code == 403
    assert json.loads(err.value.read())["error"] == \
        "client reader lacks the scope 'probes' that /api/v1/probes/0123abcd/purge needs"
    for call in (lambda: _get(base + "/api/v1/holds", env.read_token),
                 lambda: _post(base + "/api/v1/holds", env.read_token, {"address": "a@example.org", "reason": "x"})):
        with pytest.raises(urllib.error.HTTPError) as err:
            call()
        assert err.value.code == 403 and "'holds'" in json.loads(err.value.read())["error"]
    assert _get(base + "/api/v1/stats", env.read_token)[0] == 200


def test_holds_through_the_api_are_audited_with_the_client(served):
    env, base = served
    status, answer = _post(base + "/api/v1/holds", env.token, {"address": "Ceo@Example.org", "reason": "case 42"})
    assert status == 200 and "ceo@example.org" in answer["holds"]
    assert "ceo@example.org" in json.loads(_get(base + "/api/v1/holds", env.token)[1])["holds"]
    with pytest.raises(urllib.error.HTTPError) as err:
        _post(base + "/api/v1/holds", env.token, {"address": "ceo@example.org"})
    assert err.value.code == 400 and json.loads(err.value.read())["error"] == "hold: expected a reason, found nothing"
    status, answer = _post(base + "/api/v1/holds/remove", env.token, {"address": "ceo@example.org", "reason": "closed"})
    assert status == 200 and answer["holds"] == {}
    audit = [json.loads(line) for line in env.config().audit_log.read_text().splitlines()]
    assert [(e["action"], e["client"], e["client_address"]) for e in audit] == [
        ("hold-add", "admin", "127.0.0.1"), ("hold-remove", "admin", "127.0.0.1")]


def test_every_read_is_logged_with_client_address_endpoint_and_ids(served):
    env, base = served
    env.deliver(b"Message-ID: <audited-1@test>\r\nSubject: audited read\r\n\r\nwalrus\r\n")
    [row] = _wait_for(base, env.read_token, "walrus", 1)
    _get(base + f"/api/v1/messages/{row['id']}/raw", env.read_token)
    _get(base + "/api/v1/list?since=0", env.token)
    _get(base + "/api/v1/stats", env.token)  # counts only: not a read of mail
    entries = [json.loads(line) for line in env.access_log.read_text().splitlines()]
    assert {e["client"] for e in entries} == {"reader", "admin"}
    assert all(e["address"] == "127.0.0.1" and e["action"] == "api-read" for e in entries)
    found = [e for e in entries if e["endpoint"] == "search q='walrus' offset=0" and e["ids"]]
    assert found and found[-1]["ids"] == [row["id"]] and found[-1]["client"] == "reader"
    assert entries[-2] == dict(entries[-2], endpoint="get raw", ids=[row["id"]], client="reader")
    assert entries[-1] == dict(entries[-1], endpoint="list since=0 until=4611686018427387904", count=1, client="admin")
    assert not any("stats" in e["endpoint"] for e in entries)
    assert oct(env.access_log.stat().st_mode & 0o777) == "0o600"


def test_revoking_a_client_takes_effect_on_reload_and_a_broken_file_keeps_the_old_clients(served):
    env, base = served
    service = env.services[-1]
    assert _get(base + "/api/v1/stats", env.read_token)[0] == 200
    env.clients_path.write_text(env.clients_path.read_text().splitlines()[0] + "\n")  # only admin is left
    service.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "reloaded 1 API clients" in service.log(), "the reload", log=service.log)
    with pytest.raises(urllib.error.HTTPError) as err:
        _get(base + "/api/v1/stats", env.read_token)
    assert err.value.code == 401
    env.clients_path.write_text("admin sha256:not-a-hash read\n")
    service.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "reload refused" in service.log(), "the refused reload", log=service.log)
    assert _get(base + "/api/v1/stats", env.token)[0] == 200


def test_the_shared_client_keeps_one_tls_connection_and_survives_the_server_closing_it(served):
    env, base = served
    client = ArchiveApi("worker0", base, env.token, 5, cafile=str(env.ca.cert_file))
    client.stats()
    [connection] = list(client._idle.queue)
    first = connection.sock
    for _n in range(5):
        client.search("anything")
    assert list(client._idle.queue) == [connection] and connection.sock is first, "a request opened a new connection"
    first.shutdown(socket.SHUT_RDWR)  # as when the server closes an idle connection
    assert client.stats()["server_id"] == 0
    assert [c.sock for c in client._idle.queue] != [first]
    with pytest.raises(ArchiveApiError, match=r"HTTP 404: no such endpoint /api/v1/nothing"):
        client._request("/api/v1/nothing", "POST", {"padding": "x" * 5000})
    assert client.stats()["server_id"] == 0, "the unread body of the last request broke the connection"
    with pytest.raises(ArchiveApiError, match=r"HTTP 403: client reader lacks the scope 'holds'"):
        ArchiveApi("worker0", base, env.read_token, 5, cafile=str(env.ca.cert_file)).hold("a@example.org", "case")


def test_the_shared_client_survives_a_restarted_server_that_closed_every_kept_alive_connection(served):
    """A fan-out leaves one kept-alive connection per thread; a worker's restart closes them all. The next
    request must not fail on the second stale one (the web interface's first export after a restart did)."""
    env, base = served
    client = ArchiveApi("worker0", base, env.token, 5, cafile=str(env.ca.cert_file))
    connections = [client._new_connection() for _n in range(3)]
    for connection in connections:
        connection.connect()
        client._idle.put(connection)
    for connection in connections:
        connection.sock.shutdown(socket.SHUT_RDWR)
    assert client.stats()["server_id"] == 0
    assert all(c not in connections for c in client._idle.queue), "a stale connection was kept"


def test_a_raw_batch_returns_each_messages_exact_bytes_and_names_the_missing(served):
    from archive_common.client import ArchiveApi, ArchiveApiError

    env, base = served
    sent = {}
    for n in range(3):
        raw = f"Message-ID: <batch-{n}@test>\r\nSubject: batch {n}\r\n\r\nline\r\n\r\n{'x' * n}\r\n".encode()
        env.deliver(raw)
        sent[f"<batch-{n}@test>"] = raw
    reader = ArchiveApi("worker0", base, env.read_token, cafile=str(env.ca.cert_file))
    rows = _wait_for(base, env.token, "subject:batch", 3)
    missing = "4" + "0" * 35
    found = reader.raw_batch([r["id"] for r in rows] + [missing])
    assert {r["id"]: found[r["id"]] for r in rows} == {r["id"]: sent[r["message_id"]] for r in rows}
    assert found[missing] is None
    logged = [json.loads(line) for line in env.access_log.read_text().splitlines()]
    assert logged[-1]["client"] == "reader" and sorted(logged[-1]["ids"]) == sorted(r["id"] for r in rows)
    with pytest.raises(ArchiveApiError, match="1 to 1000 archive IDs") as err:
        reader.raw_batch(["x"] * 1001)
    assert err.value.status == 400


def test_search_fields_keep_only_those_and_the_id_and_an_unknown_one_is_refused(served):
    from archive_common.client import ArchiveApi, ArchiveApiError

    env, base = served
    env.deliver(b"Message-ID: <fields@test>\r\nFrom: a@example.com\r\nSubject: fields probe\r\n\r\nbody\r\n")
    reader = ArchiveApi("worker0", base, env.read_token, cafile=str(env.ca.cert_file))
    full = _wait_for(base, env.token, "subject:fields", 1)
    [row] = reader.search("subject:fields", brief=True, fields=("sha256", "message_id"))
    assert row == {"id": full[0]["id"], "sha256": full[0]["sha256"], "message_id": "<fields@test>"}
    with pytest.raises(ArchiveApiError, match="fields attachments, nope unknown") as err:
        reader.search("subject:fields", fields=("attachments", "nope"))
    assert err.value.status == 400


def test_a_raw_batch_whose_object_is_gone_is_refused_naming_it(served):
    from archive_common.client import ArchiveApi, ArchiveApiError

    env, base = served
    env.deliver(b"Message-ID: <gone@test>\r\nSubject: gone\r\n\r\nbody\r\n")
    reader = ArchiveApi("worker0", base, env.read_token, cafile=str(env.ca.cert_file))
    rows = _wait_for(base, env.token, "subject:gone", 1)
    env.store(readonly=True).objects.path_for(rows[0]["id"]).unlink()
    with pytest.raises(ArchiveApiError, match=f"no stored object.*{rows[0]['id']}") as err:
        reader.raw_batch([rows[0]["id"]])
    assert err.value.status == 400


def test_an_export_streams_every_match_with_its_exact_bytes_newest_first_and_logs_them(served):
    env, base = served
    sent = {}
    for n, body in enumerate([b"short\r\n", b'{"end": 0}\r\n{"matches": 9}\r\n', b"\r\n", b"x" * 300000 + b"\r\n"]):
        raw = b"Message-ID: <stream-%d@test>\r\nFrom: %s\r\nSubject: stream %d\r\n\r\n%s" % (
            n, b"a@example.com" if n % 2 else b"b@example.com", n, body)
        env.deliver(raw)
        sent[f"<stream-{n}@test>"] = raw
    reader = ArchiveApi("worker0", base, env.read_token, cafile=str(env.ca.cert_file))
    rows = _wait_for(base, env.token, "subject:stream", 4)
    export = reader.export("subject:stream", fields=("sha256", "message_id"))
    assert export.begin() == 4
    got = list(export)
    assert [row["id"] for row, _raw in got] == [r["id"] for r in rows]  # newest first, as search gives them
    for row, raw in got:
        assert raw == sent[row["message_id"]] and set(row) == {"id", "size", "sha256", "message_id"}
        assert row["sha256"] == hashlib.sha256(raw).hexdigest() and row["size"] == len(raw)
    logged = json.loads(env.access_log.read_text().splitlines()[-1])
    assert logged == dict(logged, client="reader", endpoint="get raw", ids=[r["id"] for r in rows])
    # Metadata alone, and only the mail one of the participants took part in.
    export = reader.export("subject:stream", participants=["A@example.com"], mail=False)
    assert export.begin() == 2
    assert [(row["message_id"], raw) for row, raw in export] == [("<stream-3@test>", None), ("<stream-1@test>", None)]
    for kwargs, reason in (({"limit": 3}, "matches more than 3 messages"), ({"fields": ("nope",)}, "fields nope unknown"),
                           ({"limit": 0}, "limit of 1 to 100000")):
        with pytest.raises(ArchiveApiError, match=reason) as err:
            reader.export("subject:stream", **kwargs).begin()
        assert err.value.status == 400


def test_an_export_whose_object_is_gone_stops_naming_it(served):
    env, base = served
    for n in range(3):
        env.deliver(b"Message-ID: <cut-%d@test>\r\nSubject: cut %d\r\n\r\nbody\r\n" % (n, n))
    rows = _wait_for(base, env.token, "subject:cut", 3)
    env.store(readonly=True).objects.path_for(rows[1]["id"]).unlink()
    export = ArchiveApi("worker0", base, env.read_token, cafile=str(env.ca.cert_file)).export("subject:cut")
    export.begin()
    with pytest.raises(ArchiveApiError, match=f"stopped after 0 of 3 messages: no stored object.*{rows[1]['id']}"):
        list(export)


@pytest.mark.parametrize("body", [
    b'{"matches": 2}\n{"id": "a", "size": 5}\nhello\n',  # the connection closed after one of two
    b'{"matches": 1}\n{"id": "a", "size": 5}\nhel',  # within a message's bytes
    b'{"matches": 1}\n{"id": "a", "size": 5}\nhello\n{"end": 2}\n',  # a count that differs
    b'not json\n',
])
def test_an_export_answer_that_breaks_off_raises_instead_of_yielding_fewer(body):
    import http.server
    import threading

    class Broken(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Broken)
    threading.Thread(target=server.handle_request, daemon=True).start()
    try:
        export = ArchiveApi("worker9", f"http://127.0.0.1:{server.server_port}", "t" * 20).export("anything")
        with pytest.raises(ArchiveApiError, match="worker9: the export"):
            export.begin()
            list(export)
    finally:
        server.server_close()


def test_batches_keep_to_both_limits_and_a_large_message_goes_alone():
    from archive_common.client import batches

    rows = [{"size": s} for s in (10, 10, 10, 50, 200, 10)]
    assert [[r["size"] for r in group] for group in batches(rows, 2, 100)] == [[10, 10], [10, 50], [200], [10]]
    assert list(batches([], 2, 100)) == []


def test_closing_an_export_wakes_the_thread_reading_it():
    """The interface's reader threads must not wait out the timeout when the download is cut."""
    import http.server
    import threading

    done = threading.Event()

    class Slow(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b'{"matches": 2}\n{"id": "a", "size": 5}\nhello\n')
            self.wfile.flush()
            done.wait(30)  # the second message never comes

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.handle_request, daemon=True).start()
    try:
        export = ArchiveApi("worker9", f"http://127.0.0.1:{server.server_port}", "t" * 20, timeout=30).export("anything")
        export.begin()
        outcome = []

        def read():
            try:
                for message in export:
                    outcome.append(message)
            except ArchiveApiError as exc:
                outcome.append(exc)

        reader = threading.Thread(target=read)
        reader.start()
        wait_until(lambda: outcome, "the first message", timeout=5)  # the reader now waits for the second
        started = time.monotonic()
        export.close()
        reader.join(5)
        assert not reader.is_alive() and time.monotonic() - started < 2
        assert isinstance(outcome[-1], ArchiveApiError), outcome
    finally:
        done.set()
        server.server_close()
