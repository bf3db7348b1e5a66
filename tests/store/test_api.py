"""The HTTP API of a real `serve` process: auth, stats, search, fetch."""

import base64
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from conftest import STORE_SRC


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def served(env):
    env.port = _free_port()
    env.write_conf()
    proc = subprocess.Popen(
        [sys.executable, "-m", "archive_store", "-c", str(env.conf_path), "serve"],
        env=dict(os.environ, PYTHONPATH=str(STORE_SRC)), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{env.port}"
    for _n in range(100):
        try:
            urllib.request.urlopen(base + "/health", timeout=1)
            break
        except OSError:
            time.sleep(0.1)
    yield env, base
    proc.terminate()
    proc.wait(10)


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
    stats = json.loads(_get(base + "/api/v1/stats", env.token)[1])
    assert stats["messages"] == 1 and stats["spool_backlog"] == 0 and stats["server_id"] == 0
    assert stats["license"]["days_left"] > 300 and stats["ingesting"] is True
    with pytest.raises(urllib.error.HTTPError) as err:
        _get(base + "/api/v1/messages/" + "0" * 36, env.token)
    assert err.value.code == 404
