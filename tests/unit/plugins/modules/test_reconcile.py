"""reconcile against two real archive stores (their `serve` process and API), each fed by an SMTP gateway
(see stores.py): a re-sent message really travels SMTP -> spool -> store before reconcile sees it arrive."""

import hashlib
import secrets
import socket
import time

import pytest

from stores import StoreSite, wait_for


@pytest.fixture
def sites(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    pair = [StoreSite(tmp_path / "a", "primary", 0), StoreSite(tmp_path / "b", "dr", 10)]
    yield pair
    for site in pair:
        site.stop()


def message(tag, number):
    return (f"From: user{number}@customer.example\r\nMessage-ID: <{tag}-{number}@customer.example>\r\n"
            f"Subject: reconcile {tag} {number}\r\n\r\nbody {number} {secrets.token_hex(8)}\r\n").encode()


def probe(number):
    return (f"From: delivery-check@mailarchive.invalid\r\nMessage-ID: <probe-abcdef12-{number}@mailarchive.invalid>\r\n"
            f"X-Mailarchive-Probe: abcdef12\r\n\r\nprobe\r\n").encode()


def test_reports_exactly_what_each_side_lacks_then_resends_it(sites, module):
    primary, dr = sites
    both = [message("both", n) for n in range(6)]
    only_primary = [message("p", n) for n in range(2)]
    only_dr = [message("d", 0)]
    for raw in both + only_primary + [probe(0)]:
        primary.deliver(raw)
    for raw in both + only_dr:
        dr.deliver(raw)
    wait_for(primary, 9)
    wait_for(dr, 7)
    args = {"sites": [primary.spec(), dr.spec()], "since": -600, "until": int(time.time()) + 5}
    result = module("reconcile", args)
    assert not result.get("failed"), result.get("msg")
    assert result["changed"] is False and result["in_sync"] is False
    assert sorted(m["sha256"] for m in result["missing"]["dr"]) == sorted(hashlib.sha256(r).hexdigest() for r in only_primary)
    assert [m["sha256"] for m in result["missing"]["primary"]] == [hashlib.sha256(only_dr[0]).hexdigest()]
    assert result["missing"]["primary"][0]["message_id"] == "<d-0@customer.example>"
    assert result["missing"]["primary"][0]["worker"] == "dr-worker"
    assert result["counts"] == {"primary": 8, "dr": 7}  # the probe is left out

    repaired = module("reconcile", dict(args, resend=True, until=int(time.time()) + 5))
    assert not repaired.get("failed"), repaired.get("msg")
    assert repaired["changed"] is True
    assert sorted(repaired["repaired"]["dr"]) == sorted(hashlib.sha256(r).hexdigest() for r in only_primary)
    assert repaired["repaired"]["primary"] == [hashlib.sha256(only_dr[0]).hexdigest()]
    again = module("reconcile", dict(args, until=int(time.time()) + 5))
    assert again["in_sync"] is True and again["counts"] == {"primary": 9, "dr": 9}


def test_check_mode_reports_but_sends_nothing(sites, module):
    primary, dr = sites
    primary.deliver(message("check", 0))
    wait_for(primary, 1)
    result = module("reconcile", {"sites": [primary.spec(), dr.spec()], "since": -600,
                                  "until": int(time.time()) + 5, "resend": True}, check=True)
    assert len(result["missing"]["dr"]) == 1 and result["resent"] == {"primary": [], "dr": []}
    time.sleep(1)
    assert dr.count() == 0


def test_a_window_before_the_mail_arrived_finds_nothing(sites, module):
    primary, dr = sites
    primary.deliver(message("late", 0))
    wait_for(primary, 1)
    now = int(time.time())
    result = module("reconcile", {"sites": [primary.spec(), dr.spec()], "since": now - 7200, "until": now - 3600,
                                  "slack": 60})
    assert result["in_sync"] is True and result["counts"] == {"primary": 0, "dr": 0}


def test_an_unreachable_worker_fails_with_one_line_naming_it(sites, module):
    primary, dr = sites
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    broken = dr.spec(workers=[{"name": "dr-worker9", "url": f"https://127.0.0.1:{dead}", "token": dr.token}])
    result = module("reconcile", {"sites": [primary.spec(), broken]})
    assert result["failed"] is True
    assert result["msg"].startswith("reconcile: dr-worker9: GET https://127.0.0.1:")
    assert "\n" not in result["msg"]


def test_expected_messages_are_waited_for_and_a_site_lacking_one_fails_naming_it(sites, module):
    primary, dr = sites
    both = [message("expect", n) for n in range(3)]
    late = message("expect-late", 0)
    for raw in both + [late]:
        primary.deliver(raw)
    for raw in both:
        dr.deliver(raw)
    digests = [hashlib.sha256(raw).hexdigest() for raw in both]
    args = {"sites": [primary.spec(), dr.spec()], "since": -600, "until": 0, "expect": digests, "expect_timeout": 20}
    result = module("reconcile", args)
    assert not result.get("failed"), result.get("msg")
    assert result["expected"] == {"primary": 3, "dr": 3}
    late_digest = hashlib.sha256(late).hexdigest()
    result = module("reconcile", dict(args, expect=digests + [late_digest], expect_timeout=3))
    assert result["failed"] is True
    assert result["msg"] == f"reconcile: of 4 expected messages, not archived within 3 s: 1 at dr ({late_digest[:12]})"
    assert result["expected"] == {"primary": 4, "dr": 3}


def test_a_copy_archived_before_the_window_is_held_not_missing(sites, module):
    """The same bytes journaled again: the peer's copy predates the window, yet it is held, so nothing is re-sent."""
    primary, dr = sites
    raw = message("again", 0)
    dr.deliver(raw)
    wait_for(dr, 1)
    time.sleep(2)
    since = int(time.time())
    primary.deliver(raw)
    wait_for(primary, 1)
    digest = hashlib.sha256(raw).hexdigest()
    result = module("reconcile", {"sites": [primary.spec(), dr.spec()], "since": since, "until": int(time.time()) + 5,
                                  "slack": 0, "expect": [digest], "expect_timeout": 5, "resend": True})
    assert not result.get("failed"), result.get("msg")
    assert result["counts"] == {"primary": 1, "dr": 0}
    assert result["missing"] == {"primary": [], "dr": []} and result["in_sync"] is True
    assert result["expected"] == {"primary": 1, "dr": 1} and result["changed"] is False
    assert dr.count() == 1


def test_expect_refuses_what_is_not_a_digest(sites, module):
    primary, dr = sites
    result = module("reconcile", {"sites": [primary.spec(), dr.spec()], "expect": ["<a@b>"]})
    assert result["failed"] is True
    assert result["msg"] == "expect: expected sha256 digests (64 lowercase hex digits), found <a@b>"
