"""mx_verify against real DNS servers serving crafted zones (dnslib on 127.0.0.1)."""

from conftest import EXPECTED, GOOD_ZONE
from helpers import free_tcp_port


def check(module, ports, **over):
    args = {"domain": "archive.example.com", "expected": EXPECTED, "nameservers": ["127.0.0.1"], "port": ports[0],
            "preference": 10, "ttl": 3600, "timeout": 1, "fail_on_problems": False}
    args.update(over)
    return module("mx_verify", args)


def test_good_zone_passes_and_reports_the_set(dns, module):
    result = check(module, [dns.serve(GOOD_ZONE)], fail_on_problems=True)
    assert not result.get("failed"), result.get("msg")
    assert result["changed"] is False
    assert result["mx_ok"] is True and result["problems"] == []
    assert [r["name"] for r in result["mx"]] == ["worker0.example.com", "worker1.example.com", "worker2.example.com"]
    assert result["mx"][1]["addresses"] == ["198.18.10.21"]
    assert result["all_reachable"] is None


def test_missing_worker(dns, module):
    zone = GOOD_ZONE.replace("archive.example.com. 3600 IN MX 10 worker2.example.com.\n", "")
    result = check(module, [dns.serve(zone)])
    assert result["problems"] == ["missing: worker2.example.com"]
    assert result["mx_ok"] is False


def test_unexpected_worker(dns, module):
    zone = GOOD_ZONE + "archive.example.com. 3600 IN MX 10 old-worker.example.com.\nold-worker.example.com. 3600 IN A 198.18.10.99\n"
    assert check(module, [dns.serve(zone)])["problems"] == ["unexpected: old-worker.example.com"]


def test_wrong_preference(dns, module):
    zone = GOOD_ZONE.replace("MX 10 worker1", "MX 20 worker1")
    assert check(module, [dns.serve(zone)])["problems"] == ["preference differs: worker1.example.com has 20, expected 10"]


def test_wrong_ttl(dns, module):
    zone = GOOD_ZONE.replace("archive.example.com. 3600 IN MX 10 worker0", "archive.example.com. 300 IN MX 10 worker0")
    problems = check(module, [dns.serve(zone)])["problems"]
    assert problems and all(p.startswith("ttl differs:") for p in problems), problems


def test_wrong_a_record(dns, module):
    zone = GOOD_ZONE.replace("198.18.10.22", "198.18.10.99")
    assert check(module, [dns.serve(zone)])["problems"] == ["A record of worker2 is 198.18.10.99, inventory says 198.18.10.22"]


def test_timeout_fails_with_server_and_name(dns, module):
    result = check(module, [dns.silent()], timeout=0.5)
    assert result["failed"] is True
    assert result["msg"] == "DNS timeout querying 127.0.0.1 for MX archive.example.com after 0.5 s"


def test_nxdomain_fails_with_server_and_name(dns, module):
    result = check(module, [dns.serve(GOOD_ZONE)], domain="nothing.example.com")
    assert result["failed"] is True
    assert result["msg"] == "NXDOMAIN: 127.0.0.1 says nothing.example.com does not exist"


def test_failing_checks_fail_the_task_by_default(dns, module):
    zone = GOOD_ZONE.replace("MX 10 worker1", "MX 20 worker1")
    result = check(module, [dns.serve(zone)], fail_on_problems=True)
    assert result["failed"] is True
    assert "preference differs: worker1.example.com has 20, expected 10" in result["msg"]


def test_disagreeing_nameservers(dns, module):
    # Two servers on two loopback addresses and one port, as two real nameservers would be.
    port = dns.serve(GOOD_ZONE, address="127.0.0.2")
    dns.serve(GOOD_ZONE.replace("archive.example.com. 3600 IN MX 10 worker2.example.com.\n", ""), address="127.0.0.3", port=port)
    result = check(module, [port], nameservers=["127.0.0.2", "127.0.0.3"])
    assert result["servers"] == {"127.0.0.2": ["worker0.example.com", "worker1.example.com", "worker2.example.com"],
                                 "127.0.0.3": ["worker0.example.com", "worker1.example.com"]}
    assert "missing: worker2.example.com (at 127.0.0.3)" in result["problems"]
    assert ("nameservers disagree: 127.0.0.2 has worker0.example.com, worker1.example.com, worker2.example.com; "
            "127.0.0.3 has worker0.example.com, worker1.example.com") in result["problems"]


def test_check_mode_runs_the_same_read_only_checks(dns, module):
    port = dns.serve(GOOD_ZONE)
    args = {"domain": "archive.example.com", "expected": EXPECTED, "nameservers": ["127.0.0.1"], "port": port, "ttl": 3600}
    result = module("mx_verify", args, check=True)
    assert result["changed"] is False and result["mx_ok"] is True


def test_smtp_check_reports_refused_and_missing_starttls(dns, module, smtp):
    # worker0 offers STARTTLS, worker1 answers without it, nothing listens on worker2.
    zone = GOOD_ZONE.replace("198.18.10.2", "127.0.0.2")
    expected = [dict(e, address=e["address"].replace("198.18.10.2", "127.0.0.2")) for e in EXPECTED]
    port = free_tcp_port("127.0.0.20")
    smtp("127.0.0.20", port)
    smtp("127.0.0.21", port, starttls=False)
    result = check(module, [dns.serve(zone)], expected=expected, check_smtp=True, smtp_port=port, smtp_timeout=2)
    assert result["mx_ok"] is True
    assert result["all_reachable"] is False
    assert result["problems"] == [f"worker1:{port} does not offer STARTTLS", f"worker2:{port} refused"]
    by_name = {s["name"]: s for s in result["smtp"]}
    assert by_name["worker0.example.com"]["starttls"] is True and by_name["worker0.example.com"]["error"] == ""
    assert by_name["worker0.example.com"]["banner"].startswith("220 ")


def test_smtp_check_passes_when_every_host_offers_starttls(dns, module, smtp):
    zone = GOOD_ZONE.replace("198.18.10.2", "127.0.0.3")
    expected = [dict(e, address=e["address"].replace("198.18.10.2", "127.0.0.3")) for e in EXPECTED]
    port = free_tcp_port("127.0.0.30")
    for n in range(3):
        smtp(f"127.0.0.3{n}", port)
    result = check(module, [dns.serve(zone)], expected=expected, check_smtp=True, smtp_port=port, fail_on_problems=True)
    assert not result.get("failed"), result.get("msg")
    assert result["all_reachable"] is True and result["problems"] == []
