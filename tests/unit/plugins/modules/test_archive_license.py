"""archive_license: idempotent writes, check and diff modes, the store's own validation."""

import os

from module_runner import run_module

LINE = "customer=EXAMPLE,expiry=2000000000,server_id=2,max_release=20271231,multitenancy=0,hostname=archive.example.com,ip=0.0.0.0"
PARTS = {"customer": "EXAMPLE", "expiry": 2000000000, "max_release": "20271231", "server_id": 2,
         "hostname": "archive.example.com", "mode": "0600"}


def test_writes_from_parts_then_changes_nothing(tmp_path):
    path = tmp_path / "license"
    first = run_module("archive_license", dict(PARTS, path=str(path)))
    assert first["changed"] is True and not first.get("failed"), first.get("msg")
    assert path.read_text() == LINE + "\n"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert first["server_id"] == 2 and first["license"]["expiry_date"] == "2033-05-18"
    again = run_module("archive_license", dict(PARTS, path=str(path)))
    assert again["changed"] is False


def test_check_mode_reports_a_change_and_writes_nothing(tmp_path):
    path = tmp_path / "license"
    result = run_module("archive_license", dict(PARTS, path=str(path)), check=True)
    assert result["changed"] is True
    assert not path.exists()


def test_diff_mode_shows_old_and_new_line(tmp_path):
    path = tmp_path / "license"
    path.write_text(LINE.replace("expiry=2000000000", "expiry=1900000000") + "\n")
    result = run_module("archive_license", dict(PARTS, path=str(path)), check=True, diff=True)
    assert result["changed"] is True
    assert "expiry=1900000000" in result["diff"]["before"] and "expiry=2000000000" in result["diff"]["after"]
    assert "expiry=1900000000" in path.read_text()


def test_expired_license_fails_naming_the_field(tmp_path):
    result = run_module("archive_license", dict(PARTS, path=str(tmp_path / "license"), expiry=1715143432))
    assert result["failed"] is True and result["field"] == "expiry"
    assert "license field expiry: expected a time in the future, found 1715143432 (2024-05-08" in result["msg"]
    assert not (tmp_path / "license").exists()


def test_whole_line_with_another_server_id_fails(tmp_path):
    result = run_module("archive_license", {"path": str(tmp_path / "license"), "line": LINE, "server_id": 3,
                                            "hostname": "archive.example.com"})
    assert result["failed"] is True and result["field"] == "server_id" and "found 2" in result["msg"]


def test_warns_when_expiry_is_near(tmp_path):
    import time

    soon = int(time.time()) + 5 * 86400
    result = run_module("archive_license", dict(PARTS, path=str(tmp_path / "license"), expiry=soon))
    assert result["changed"] is True
    assert any("expires in" in w for w in result.get("warnings", []))
    assert os.path.exists(tmp_path / "license")


def test_warn_days_above_30_warns(tmp_path):
    """warn_days is the module's to set: 45 days left warns with warn_days 60 (the store's own 30 did not)."""
    import time

    later = int(time.time()) + 45 * 86400
    quiet = run_module("archive_license", dict(PARTS, path=str(tmp_path / "a"), expiry=later))
    assert not any("expires in" in w for w in quiet.get("warnings", []))
    loud = run_module("archive_license", dict(PARTS, path=str(tmp_path / "b"), expiry=later, warn_days=60))
    assert any("expires in 4" in w for w in loud.get("warnings", [])), loud.get("warnings")
