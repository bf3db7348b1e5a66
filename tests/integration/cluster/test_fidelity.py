"""What the gateway's postfix changes, through the real cluster: a message sent with a leading From line is
archived byte for byte; one with a non-header line in its header block is archived as postfix passed it on,
with the arrival's note saying where postfix inserted a blank line."""

import hashlib
import time

from helpers import wait_until
from mailflow import send


def archived(site, query):
    def found():
        return [(worker, row) for worker in site.workers for row in site.client(worker).search(query, 10)]
    return wait_until(found, f"{query} to be archived", timeout=120)


def test_a_leading_from_line_and_a_broken_header_block_through_the_gateway(site):
    tag = f"fid{int(time.time())}"
    from_line = (f">From sender@example.com Mon Nov 23 10:00:00 2026\r\nFrom: a@example.com\r\nTo: b@example.com\r\n"
                 f"Subject: from line {tag}\r\nMessage-ID: <fl-{tag}@test>\r\n\r\nbody\r\n").encode()
    broken = (f"From: a@example.com\r\nTo: b@example.com\r\nSubject: broken header {tag}\r\nthis line is no header\r\n"
              f"Message-ID: <bh-{tag}@test>\r\nX-Later: yes\r\n\r\nbody\r\n").encode()
    send(site.ip[site.gateways[0]], site.journal_address, [from_line, broken])

    [(worker, row)] = archived(site, f"msgid:fl-{tag}@test")
    assert site.client(worker).raw(row["id"]) == from_line
    assert row["sha256"] == hashlib.sha256(from_line).hexdigest()
    assert row["notes"] == ["sent with a leading From line, which postfix made an X-Mailbox-Line header: restored"]

    [(worker, row)] = archived(site, f"subject:broken subject:{tag}")
    raw = site.client(worker).raw(row["id"])
    assert raw == broken.replace(b"\r\nthis line", b"\r\n\r\nthis line"), raw
    assert row["notes"][0].startswith("normalised in transit by postfix (probably): blank line inserted before line 4")
