"""delivery_check's probes: how one looks, and how the store recognises one.

A probe is a small text message sent through a gateway to prove delivery.
Every run has a random token (8 to 64 hex digits) that appears in each
probe's Message-ID ``<probe-RUN-N@mailarchive.invalid>``, in its header
``X-Mailarchive-Probe: RUN`` and in its body as one searchable word
(``mailarchiveprobeRUN``).  The store removes a probe only when all of
these and the envelope sender match (archive_store/retention.py), so no
other mail can be taken for one.

Shared code (see src/README.md): it imports only the standard library; the
collection's modules use this very file through the link
plugins/module_utils/archive_probes.py.
"""

import re
import time

SENDER = "delivery-check@mailarchive.invalid"
HEADER = "X-Mailarchive-Probe"
SUBJECT_PREFIX = "[mailarchive probe]"
# The store removes only probes archived less than this long ago.
MAX_AGE_S = 86400
RUN_RE = re.compile(r"^[0-9a-f]{8,64}$")
_DOMAIN = "@mailarchive.invalid>"
_FILLER = b"The quick brown fox jumps over the lazy dog while the archive keeps every byte. "


def message_id(run, number):
    """The Message-ID of probe ``number`` of run ``run``."""
    return "<probe-%s-%d%s" % (run, number, _DOMAIN)


def is_probe(mid):
    """Whether a Message-ID is one of delivery_check's probes (any run)."""
    return mid.startswith("<probe-") and mid.endswith(_DOMAIN)


def is_probe_of(mid, run):
    """Whether a Message-ID is a probe of this run."""
    return re.match(r"^<probe-%s-\d+@mailarchive\.invalid>$" % re.escape(run), mid) is not None


def search_word(run):
    """The one word every probe of the run carries in its body: a search finds them all."""
    return "mailarchiveprobe%s" % run


def make(run, number, sender, recipient, size):
    """Return (Message-ID, raw bytes with CRLF line ends) of one probe of about ``size`` bytes."""
    mid = message_id(run, number)
    head = (
        "From: %s\r\nTo: %s\r\nSubject: %s %s %d\r\nMessage-ID: %s\r\n"
        "Date: %s\r\n%s: %s\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
        % (sender, recipient, SUBJECT_PREFIX, run, number, mid, time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime()),
           HEADER, run)
    ).encode("ascii")
    body = ("probe token %s number %d\r\n" % (search_word(run), number)).encode("ascii")
    while len(head) + len(body) < size:
        body += _FILLER + b"\r\n"
    return mid, head + body
