"""Search depth on the deployed site: an Exchange journal report journaled through the gateway like any
mail, and found by its Bcc recipient through the collection's search module (every worker at once)."""

import hashlib
import time

from helpers import wait_until
from journal import ENVELOPE, journal_report
from mailflow import send
from module_runner import run_module


def test_a_journal_report_through_the_gateway_is_found_by_its_bcc_recipient(site):
    tag = f"jr{int(time.time())}"
    hidden = f"heidi.{tag}@example.com"
    report = journal_report(ENVELOPE.replace("heidi.hidden@example.com", hidden), tag=tag)
    send(site.ip[site.gateways[0]], site.journal_address, [report])

    def found():
        result = run_module("search", {"workers": site.module_workers(), "query": f"to:{hidden}"})
        assert not result.get("failed"), result.get("msg")
        return result["results"]
    [message] = wait_until(found, f"the journal report to {hidden} to be archived", timeout=120)
    assert message["sha256"] == hashlib.sha256(report).hexdigest(), "the stored bytes are the report as sent"
    assert message["subject"] == f"Confidential pricing for Nightingale {tag}" and message["message_id"] == f"<orig-{tag}@example.com>"
    bcc = [r for r in message["journal"]["recipients"] if r["field"] == "bcc"]
    assert [r["address"] for r in bcc] == [hidden]
    # Neither the journal address nor the archive's own address is recorded as a recipient.
    assert hidden in message["env_to"] and not [a for a in message["env_to"] if a.startswith("archive@")], message["env_to"]


def test_per_recipient_journal_copies_name_each_recipient(site):
    """The journaling server's recipient_bcc_maps recipe (README "Journaling from postfix"): a copy per
    recipient, to archive+<user>=<domain>@<journal domain>. The gateway keeps the extension, the worker
    records it; the copies are the same bytes, archived once, and each recipient sees the message."""
    tag = f"rb{int(time.time())}"
    people = [f"ann.{tag}@example.com", f"bob.{tag}@example.com"]
    local, domain = site.journal_address.split("@")
    copies = [f"{local}+{person.replace('@', '=')}@{domain}" for person in people]
    raw = (f"From: boss@example.com\r\nTo: team@example.com\r\nSubject: per-recipient {tag}\r\n"
           f"Message-ID: <{tag}@example.com>\r\n\r\nThe figures, {tag}.\r\n").encode()
    send(site.ip[site.gateways[0]], copies, [raw])

    def holders(person):
        return [(w, row["id"]) for w in site.workers for row in site.client(w).search(tag, participants=[person])]
    for person in people:
        found = wait_until(lambda: holders(person), f"{person} to see the message", timeout=120)
        assert len(found) == 1, found
        message = site.client(found[0][0]).message(found[0][1])
        assert message["sha256"] == hashlib.sha256(raw).hexdigest()
    assert sorted(message["env_to"]) == sorted(people) and message["arrivals"] == 2
