"""The license table: each bad field gives one line naming field, expected and found."""

import time

import pytest

from archive_common import license as licensing
from archive_common.license import LicenseError

from storeenv import license_line

NOW = 1_800_000_000  # 2027-01-15
GOOD = dict(expiry=NOW + 90 * 86400, server_id=3)


def check(line, server_id=3, hostname="archive.example.com", addresses=("198.18.10.23",)):
    lic = licensing.parse_line(line)
    return licensing.check(lic, server_id, hostname, now=NOW, release_date="20261101", addresses=lambda: addresses)


def test_reference_line_parses_field_by_field():
    lic = licensing.parse_line("customer=EXAMPLE,expiry=1715143432,server_id=0,max_release=20240531,"
                               "multitenancy=0,hostname=archive.example.com,ip=0.0.0.0")
    assert (lic.customer, lic.expiry, lic.server_id, lic.max_release, lic.multitenancy, lic.hostname, lic.ip) == (
        "EXAMPLE", 1715143432, 0, "20240531", 0, "archive.example.com", "0.0.0.0")


def test_reference_line_is_refused_today_because_it_expired():
    line = "customer=EXAMPLE,expiry=1715143432,server_id=0,max_release=20240531,multitenancy=0,hostname=archive.example.com,ip=0.0.0.0"
    with pytest.raises(LicenseError) as err:
        licensing.check(licensing.parse_line(line), 0, "archive.example.com", now=time.time())
    assert str(err.value).startswith("license field expiry: expected a time in the future, found 1715143432 (2024-05-08")


@pytest.mark.parametrize("line, field, found", [
    ("", "line", "an empty file"),
    (license_line(**GOOD).replace(",ip=0.0.0.0", ""), "ip", "nothing"),
    (license_line(**GOOD) + ",colour=blue", "colour", "an unknown field"),
    (license_line(**GOOD) + ",ip=1.2.3.4", "ip", "it twice"),
    (license_line(**GOOD).replace("customer=EXAMPLE", "customer"), "line", "'customer'"),
    (license_line(**GOOD, customer="EX AMPLE"), "customer", "'EX AMPLE'"),
    (license_line(**GOOD).replace(f"expiry={NOW + 90 * 86400}", "expiry=soon"), "expiry", "'soon'"),
    (license_line(expiry=NOW + 90 * 86400, server_id="x"), "server_id", "'x'"),
    (license_line(expiry=NOW + 90 * 86400, server_id=256), "server_id", "256"),
    (license_line(**GOOD, max_release="2024-05-31"), "max_release", "'2024-05-31'"),
    (license_line(**GOOD, max_release="20241345"), "max_release", "'20241345'"),
    (license_line(**GOOD, multitenancy=2), "multitenancy", "'2'"),
    (license_line(**GOOD, hostname="archive_example"), "hostname", "'archive_example'"),
    (license_line(**GOOD, ip="300.1.1.1"), "ip", "'300.1.1.1'"),
    (license_line(expiry=NOW + 90 * 86400, server_id=4), "server_id", "4"),
    (license_line(**GOOD, hostname="other.example.com"), "hostname", "other.example.com"),
    (license_line(expiry=NOW - 1, server_id=3), "expiry", f"{NOW - 1} (2027-01-15"),
    (license_line(**GOOD, max_release="20240531"), "max_release", "20240531"),
    (license_line(**GOOD, ip="198.18.99.99"), "ip", "198.18.99.99"),
])
def test_bad_license_names_field_and_value(line, field, found):
    with pytest.raises(LicenseError) as err:
        check(line)
    message = str(err.value)
    assert "\n" not in message
    assert err.value.field == field, message
    assert found in message, message


@pytest.mark.parametrize("line", [
    license_line(**GOOD),
    license_line(**GOOD, ip="198.18.10.23"),
    license_line(**GOOD, multitenancy=1, max_release="20261101"),
    license_line(**GOOD, hostname="ARCHIVE.example.com"),
])
def test_good_licenses_pass(line):
    assert check(line).server_id == 3


def test_expiry_warning_within_30_days():
    soon = check(license_line(expiry=NOW + 10 * 86400, server_id=3))
    assert "expires in 10.0 days" in licensing.expiry_warning(soon, now=NOW)
    assert licensing.expiry_warning(check(license_line(**GOOD)), now=NOW) is None


def test_invalid_license_refuses_ingest_and_keeps_the_spool(env):
    env.license_path.write_text(license_line(0, expiry=int(time.time()) - 60) + "\n")
    names = {env.deliver(b"Subject: waiting\r\n\r\nx\r\n") for _n in range(3)}
    proc = env.cli("drain", check=False)
    assert proc.returncode == 3
    stderr = proc.stderr.decode().strip()
    assert len(stderr.splitlines()) == 1 and "license field expiry: expected a time in the future" in stderr
    assert {p.name for p in (env.spool / "new").iterdir()} == names
    env.license_path.write_text(license_line(0) + "\n")
    assert b"drained 3" in env.cli("drain").stdout
