"""Monitoring against the real Prometheus of the scenario's monitoring host, through its HTTP API.

Three faults at once, each on its own worker or filesystem, then each alert is looked for by
name and labels: the store stopped on one worker, an expired license and a full spool
filesystem on the other. Alertmanager's notification reaches the local sink. Everything is
put back, and the store-down alert resolves.
"""

import json
import time
from pathlib import Path
import urllib.parse
import urllib.request

import pytest

from conftest import RUNNER, rendered
from helpers import docker

pytestmark = pytest.mark.skipif(not RUNNER.get_hosts("monitoring"), reason="this scenario has no monitoring host")


@pytest.fixture(scope="module")
def prometheus():
    host = sorted(RUNNER.get_hosts("monitoring"))[0]
    port = "monitoring_prometheus_port | default(9090)"  # the role's default, unless the inventory sets it
    variables = rendered(RUNNER, host, ["monitoring_listen_address", port, "monitoring_site"])
    return {"host": host, "url": f"http://{variables['monitoring_listen_address']}:{variables[port]}",
            "site": variables["monitoring_site"]}


def api(prometheus, path, **params):
    url = prometheus["url"] + path + ("?" + urllib.parse.urlencode(params) if params else "")
    with urllib.request.urlopen(url, timeout=10) as response:
        answer = json.loads(response.read())
    assert answer["status"] == "success", answer
    return answer["data"]


def query(prometheus, expr):
    """{instance: value} of an instant query."""
    return {r["metric"].get("instance", ""): float(r["value"][1]) for r in api(prometheus, "/api/v1/query", query=expr)["result"]}


def firing(prometheus):
    return [a for a in api(prometheus, "/api/v1/alerts")["alerts"] if a["state"] == "firing"]


def wait_for(what, check, timeout, interval=3):
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = check()
        if found:
            return found
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def sh(host, command):
    return docker("exec", RUNNER.get_variables(host).get("ansible_host", host), "sh", "-c", command, check=False)


def test_the_installed_alert_rules_pass_their_unit_tests(prometheus):
    """promtool test rules (files/alert_rules_test.yml) against the rules file the role installed."""
    tests = (Path(__file__).parent / "files" / "alert_rules_test.yml").read_text()
    out = sh(prometheus["host"], f"cat > /root/alert_rules_test.yml <<'EOF'\n{tests}EOF\npromtool test rules /root/alert_rules_test.yml")
    assert out.returncode == 0 and "SUCCESS" in out.stdout, out.stdout + out.stderr


def test_every_target_is_scraped_and_up(prometheus, site):
    def all_up():
        targets = api(prometheus, "/api/v1/targets")["activeTargets"]
        jobs = {}
        for target in targets:
            jobs.setdefault(target["labels"]["job"], {})[target["labels"]["instance"]] = target["health"]
        return jobs if all(h == "up" for job in jobs.values() for h in job.values()) else None
    jobs = wait_for("every target up", all_up, 90)
    hosts = set(RUNNER.get_hosts("all"))
    assert set(jobs["node"]) == hosts, jobs["node"]
    assert set(jobs["postfix"]) == set(site.workers + site.gateways)
    assert set(jobs["archive_store"]) == set(site.workers)


def test_only_the_monitoring_host_reaches_the_exporters(prometheus, site):
    probe = "import socket,sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3); print('open')"
    worker_ip = site.ip[site.workers[0]]
    for port in (9100, 9154):
        assert "open" in sh(prometheus["host"], f'python3 -c "{probe}" {worker_ip} {port}').stdout
        refused = sh(site.gateways[0], f'python3 -c "{probe}" {worker_ip} {port}')
        assert "open" not in refused.stdout and "timed out" in refused.stderr, refused


def test_the_message_count_equals_the_stores_own_stats(prometheus, site):
    def agree():
        metrics = query(prometheus, 'archive_store_messages{job="archive_store"}')
        stats = {w: site.client(w).stats()["messages"] for w in site.workers}
        return (metrics, stats) if metrics == {w: float(n) for w, n in stats.items()} else None
    metrics, stats = wait_for("the metrics to catch up with the stores", agree, 60)
    print(f"messages per worker, metrics {metrics}, stats {stats}")


def test_faults_fire_their_alerts_and_a_started_store_resolves(prometheus, site):
    stopped, refused = site.workers[-1], site.workers[0]
    license_file = site.contract[refused]["conf_dir"] + "/license"
    spool = site.contract[refused]["spool_dir"]
    original = sh(refused, f"cat {license_file}").stdout
    expired = original.replace(original.split("expiry=")[1].split(",")[0], "1715143432")
    assert not [a for a in firing(prometheus) if a["labels"]["alertname"].startswith("ArchiveStore")], firing(prometheus)
    started = time.time()
    sh(stopped, "systemctl stop archive-store")
    sh(refused, f"printf '%s' '{expired}' > {license_file}")
    # The spool's filesystem: a 16 MB tmpfs for the test, filled to 1 MB free, mounted while the store is stopped (its
    # service has a mount namespace of its own); the spool's own files stay beneath it.
    user = site.contract[refused]["user"]
    sh(refused, f"systemctl stop archive-store && mount -t tmpfs -o size=16m,mode=0700 tmpfs {spool} && mkdir -p "
                f"{spool}/Maildir/new {spool}/Maildir/cur {spool}/Maildir/tmp && chown -R {user}: {spool} && "
                f"fallocate -l 15M {spool}/filler && systemctl start archive-store")
    try:
        def alerts():
            names = {(a["labels"]["alertname"], a["labels"].get("instance")): a for a in firing(prometheus)}
            wanted = [("ArchiveStoreDown", stopped), ("ArchiveLicenseInvalid", refused), ("ArchiveStoreDiskAlmostFull", refused)]
            return names if all(w in names for w in wanted) else None
        try:
            found = wait_for("the store-down, license and disk alerts", alerts, 150)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; firing: {sorted((a['labels']['alertname'], a['labels'].get('instance')) for a in firing(prometheus))}")
        print(f"store-down, license and disk alerts firing {time.time() - started:.0f} s after the faults")
        down = found[("ArchiveStoreDown", stopped)]
        assert down["labels"]["severity"] == "critical" and down["labels"]["site"] == prometheus["site"]
        assert stopped in down["annotations"]["summary"]
        disk = found[("ArchiveStoreDiskAlmostFull", refused)]
        assert disk["labels"]["filesystem"] == "spool" and "% free" in disk["annotations"]["summary"]
        assert refused in found[("ArchiveLicenseInvalid", refused)]["annotations"]["summary"]
        # Alertmanager sent the store-down alert to the lab's sink.

        def notified():
            lines = sh(prometheus["host"], "cat /var/log/mailarchive-alerts/alerts.jsonl").stdout.splitlines()
            sent = [a for line in lines for a in json.loads(line)["alerts"]]
            return [a for a in sent if a["labels"]["alertname"] == "ArchiveStoreDown" and a["labels"]["instance"] == stopped]
        wait_for("Alertmanager's notification at the sink", notified, 90)
    finally:
        # Whatever reached the small spool meanwhile goes back into the real one.
        sh(refused, f"systemctl stop archive-store; rm -rf /root/spool-during && cp -a {spool}/Maildir/new /root/spool-during;"
                    f" umount {spool} && cp -a /root/spool-during/. {spool}/Maildir/new/; systemctl start archive-store")
        sh(refused, f"printf '%s' '{original}' > {license_file}")
        sh(stopped, "systemctl start archive-store")
    wait_for("ArchiveStoreDown to resolve", lambda: not [a for a in firing(prometheus) if a["labels"]["alertname"] == "ArchiveStoreDown"], 120)
    wait_for("the license to be valid again", lambda: query(prometheus, "archive_store_license_valid").get(refused) == 1.0, 120)
