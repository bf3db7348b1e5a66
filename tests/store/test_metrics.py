"""The store's Prometheus metrics, from a real ``serve`` process, read as Prometheus reads them."""

import json
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from helpers import wait_until
from storeenv import license_line
from test_policy import REQUEST, ask


def scrape(env, token=None):
    request = urllib.request.Request(env.url + "/api/v1/metrics")
    request.add_header("Authorization", f"Bearer {token or env.metrics_token}")
    with urllib.request.urlopen(request, timeout=10, context=env.tls()) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))))


def test_metrics_need_the_metrics_scope(env):
    env.serve()
    with pytest.raises(urllib.error.HTTPError) as err:
        scrape(env, env.read_token)
    assert err.value.code == 403
    with pytest.raises(urllib.error.HTTPError) as err:
        scrape(env, "wrong-token-0123456789")
    assert err.value.code == 401


def test_the_counts_follow_ingest_and_equal_the_stores_own_stats(env):
    env.serve()
    before = scrape(env)
    assert value(before, "archive_store_messages") == 0
    assert value(before, "archive_store_license_valid") == 1
    assert value(before, "archive_store_license_expiry_timestamp_seconds") > time.time() + 86400
    raws = [f"Message-ID: <m{n}@test>\r\nSubject: metrics {n}\r\n\r\nbody {n}\r\n".encode() for n in range(5)]
    for raw in raws:
        env.deliver(raw)
    env.deliver(raws[0], name=f"{time.time_ns()}.V1Iagain.worker0")  # the same bytes again: a duplicate

    def ingested():
        samples = scrape(env)
        done = value(samples, "archive_store_spool_messages") == 0 and value(samples, "archive_store_arrivals") == 6
        return samples if done else None
    after = wait_until(ingested, "the six spool files to be ingested", log=env.services[0].log)
    assert value(after, "archive_store_messages") == json.loads(env.cli("stats").stdout)["messages"] == 5
    assert value(after, "archive_store_ingested_messages_total", outcome="stored") == 5
    assert value(after, "archive_store_ingested_messages_total", outcome="duplicate") == 1
    assert value(after, "archive_store_ingested_bytes_total") == sum(len(r) for r in raws)
    assert value(after, "archive_store_raw_bytes") == sum(len(r) for r in raws)
    assert 0 < value(after, "archive_store_sealed_bytes")
    assert value(after, "archive_store_ingest_latency_seconds_count") == 6
    assert value(after, "archive_store_index_bytes") > 0
    assert value(after, "archive_store_index_shards") == 0, "five messages close no shard"
    # Each scrape was itself counted, by endpoint and status.
    assert value(after, "archive_store_api_requests_total", endpoint="metrics", code="200") >= 2


def test_the_spool_backlog_and_its_age_show_while_ingest_is_refused(env):
    env.license_path.write_text(license_line(0, expiry=int(time.time()) - 86400) + "\n")
    env.serve()
    env.deliver(b"Message-ID: <wait@test>\r\nSubject: wait\r\n\r\nbody\r\n",
                name=f"{int(time.time()) - 120}.V1Iold.worker0")
    samples = scrape(env)
    assert value(samples, "archive_store_license_valid") == 0
    assert value(samples, "archive_store_license_expiry_timestamp_seconds") is None
    assert value(samples, "archive_store_spool_messages") == 1
    assert 120 <= value(samples, "archive_store_spool_oldest_age_seconds") < 300


def test_policy_answers_are_counted_by_code(env):
    env.serve(policy=True)
    assert ask(env.policy_port, [REQUEST, REQUEST]) == [["action=DUNNO"]] * 2
    env.cli("maintenance", "on", "test")
    assert ask(env.policy_port, [REQUEST])[0][0].startswith("action=451")
    samples = scrape(env)
    assert value(samples, "archive_store_policy_answers_total", code="DUNNO") == 2
    assert value(samples, "archive_store_policy_answers_total", code="451") == 1
    assert value(samples, "archive_store_maintenance") == 1


def test_a_clean_verify_all_sets_the_last_verify_time(env):
    env.serve()
    assert value(scrape(env), "archive_store_last_verify_timestamp_seconds") is None
    started = time.time()
    env.cli("verify", "--all")
    assert value(scrape(env), "archive_store_last_verify_timestamp_seconds") >= int(started)
