"""What postfix changes in transit, through the store's spool path (env.deliver writes what virtual(8) writes):
a leading From line that cleanup(8) made an X-Mailbox-Line header is given back; a blank line cleanup(8)
inserted into a header block cannot be taken out, and the arrival says so."""

import hashlib
import re

import pytest

from archive_store import spool

FROM_LINE = (b"From sender@example.com Mon Nov 23 10:00:00 2026\r\nFrom: a@example.com\r\nTo: b@example.com\r\n"
             b"Subject: sent with a From line\r\nMessage-ID: <fl@test>\r\n\r\nbody\r\n")
MALFORMED = (b"From: a@example.com\r\nTo: b@example.com\r\nSubject: malformed header\r\nthis line is no header\r\n"
             b"Message-ID: <mf@test>\r\nX-Later: yes\r\n\r\nbody\r\n")


def as_postfix_delivers(raw):
    """cleanup(8)'s two changes: the From line as a header, a blank line before the first non-header line."""
    if re.match(rb">*From ", raw):
        return b"X-Mailbox-Line: " + raw
    header_end = raw.index(b"\r\n\r\n")
    lines = raw[:header_end].split(b"\r\n")
    for number, line in enumerate(lines):
        if number and b":" not in line and not line.startswith((b" ", b"\t")):
            return b"\r\n".join(lines[:number]) + b"\r\n\r\n" + b"\r\n".join(lines[number:]) + raw[header_end:]
    return raw


def stored(env, raw):
    env.deliver(raw)
    env.cli("drain")
    store = env.store(readonly=True)
    [archive_id] = store.index.all_ids()
    return store.index.get(archive_id), store.get_raw(archive_id)


@pytest.mark.parametrize("prefix", [b"", b">", b">>"])
def test_a_leading_from_line_comes_back_byte_for_byte(env, prefix):
    sent = prefix + FROM_LINE
    row, raw = stored(env, as_postfix_delivers(sent))
    assert raw == sent and row["sha256"] == hashlib.sha256(sent).hexdigest()
    assert row["notes"] == ["sent with a leading From line, which postfix made an X-Mailbox-Line header: restored"]
    assert row["subject"] == "sent with a From line"


def test_an_x_mailbox_line_the_sender_wrote_without_a_from_line_stays(env):
    sent = b"X-Mailbox-Line: something else\r\n" + FROM_LINE.split(b"\r\n", 1)[1]
    row, raw = stored(env, sent)
    assert raw == sent and row["notes"] == []


def test_a_blank_line_postfix_inserted_is_noted_with_its_line(env):
    delivered = as_postfix_delivers(MALFORMED)
    assert delivered != MALFORMED
    row, raw = stored(env, delivered)
    assert raw == delivered, "the bytes as postfix passed them on: the inserted line cannot be told apart with certainty"
    [note] = row["notes"]
    assert note.startswith("normalised in transit by postfix (probably): blank line inserted before line 4, which is not a header field")
    assert "(Message-ID, X-Later)" in note


@pytest.mark.parametrize("body", [
    b"Hello Bob,\r\nthe figures follow.\r\n",            # an ordinary body
    b"Hello Bob,\r\nRegards: the team\r\n",              # a colon, but no header a message has
    b"Subject: looks like a header\r\nmore\r\n",         # a body that starts with a header-like line
])
def test_ordinary_bodies_are_not_noted(body):
    raw = b"From: a@example.com\nSubject: s\n\n" + body.replace(b"\r\n", b"\n")
    assert spool.inserted_blank_line(raw) == ""
