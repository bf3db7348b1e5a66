"""The Maildir spool that postfix's virtual(8) agent delivers into.

virtual(8) writes each message to tmp/, fsyncs it and renames it into new/
before postfix removes its queue file, so a message in new/ is durable.
The store removes a spool file only after the message is committed.

What postfix hands over differs from what the sender sent in DATA in two
ways that this module undoes exactly:

* lines end in LF instead of the SMTP wire's CRLF;
* headers were prepended in transit: virtual(8)'s Return-Path and
  Delivered-To, and one Received header per postfix hop of this cluster
  ("by <transit host> (Postfix)").  They are kept as metadata;
* a first line "From ..." (an mbox separator a sender left in; also with
  ">" before it) became the header "X-Mailbox-Line: From ..." in the
  gateway's cleanup(8).  A message whose first line after the transit
  headers is "X-Mailbox-Line: " followed by ">*From " was sent with that
  line, and gets it back.

One change cannot be undone with certainty: cleanup(8) ends the header
block at the first line that is neither a header field nor a continuation,
inserting an empty line before it.  When the lines after such a line look
like header fields again (see ``inserted_blank_line``), the arrival is
noted "normalised in transit by postfix".
"""

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, List, Optional, Tuple

_RECEIVED_BY = re.compile(rb"\bby\s+([^\s;()]+)\s+\(Postfix\)", re.IGNORECASE)
# Postfix ends its Received header with "; <RFC 5322 date>"; the header stops
# there, so a message whose first line starts with white space stays intact.
_RECEIVED_END = re.compile(rb";\s+(?:\w{3},\s+)?\d{1,2}\s+\w{3}\s+\d{4}\s+\d\d:\d\d:\d\d\s+[+-]\d{4}[^\n]*\n")
_ENVELOPE_HEADERS = (b"return-path", b"delivered-to", b"x-original-to")
_MAILBOX_LINE = b"X-Mailbox-Line: "
_FROM_LINE = re.compile(rb">*From ")
# A header field's name (printable ASCII but the colon) and its colon.
_HEADER = re.compile(rb"([!-9;-~]+):")
_MESSAGE_FIELDS = {
    b"from", b"sender", b"reply-to", b"to", b"cc", b"bcc", b"subject", b"date", b"message-id", b"in-reply-to",
    b"references", b"comments", b"keywords", b"received", b"return-path", b"mime-version", b"content-type",
    b"content-transfer-encoding", b"content-disposition", b"content-id", b"content-description",
}


@dataclass
class Arrival:
    """A message as it came out of the spool (or an import), ready to be stored.

    An imported message carries ``origin`` (its source: importing client, kind,
    file or account, folder, position) and ``dated``: when it was first
    received, from the IMAP internal date or the file's time, which counts for
    retention when the message has no Date header.
    """

    raw: bytes
    spool_name: str
    env_from: str = ""
    env_to: List[str] = field(default_factory=list)
    transit: List[str] = field(default_factory=list)
    origin: Optional[dict] = None
    dated: Optional[int] = None
    # What postfix changed on the way that the bytes cannot show (shown to auditors with the message).
    notes: List[str] = field(default_factory=list)


def _leading_header(data: bytes, start: int):
    """Return (name, text, end) of the header field at ``start``, or None."""
    end = start
    while True:
        newline = data.find(b"\n", end)
        if newline < 0:
            return None
        end = newline + 1
        if end >= len(data) or data[end:end + 1] not in (b" ", b"\t"):
            break
    text = data[start:end]
    name, colon = text.partition(b":")[:2]
    if not colon or not name or b" " in name:
        return None
    return name.strip().lower(), text, end


def from_postfix(data: bytes, spool_name: str, transit_hosts: Iterable[str], envelope_headers: bool = True) -> Arrival:
    """Strip this cluster's transit headers and restore CRLF line ends.

    ``envelope_headers``: virtual(8)'s Return-Path and Delivered-To lead the message and carry its envelope;
    a message received over LMTP or SMTP (receiver.py) has neither, and its own headers are kept.
    """
    hosts = {h.lower().encode("ascii") for h in transit_hosts}
    arrival = Arrival(raw=b"", spool_name=spool_name)
    position = 0
    seen_envelope = set()
    while True:
        header = _leading_header(data, position)
        if header is None:
            break
        name, text, end = header
        value = text.split(b":", 1)[1].strip().decode("utf-8", "replace")
        if envelope_headers and name in _ENVELOPE_HEADERS and name not in seen_envelope and not arrival.transit:
            seen_envelope.add(name)
            if name == b"return-path":
                arrival.env_from = value.strip("<>")
            elif value.strip("<>") not in arrival.env_to:  # Delivered-To and X-Original-To often agree
                arrival.env_to.append(value.strip("<>"))
        elif name == b"received" and _received_by(text) in hosts:
            date = _RECEIVED_END.search(text)
            if date:
                end = position + date.end()
                text = text[:date.end()]
            arrival.transit.append(" ".join(text.decode("utf-8", "replace").split()))
        else:
            break
        position = end
    rest = data[position:]
    if rest.startswith(_MAILBOX_LINE) and _FROM_LINE.match(rest, len(_MAILBOX_LINE)):
        rest = rest[len(_MAILBOX_LINE):]
        arrival.notes.append("sent with a leading From line, which postfix made an X-Mailbox-Line header: restored")
    inserted = inserted_blank_line(rest)
    if inserted:
        arrival.notes.append(inserted)
    arrival.raw = rest.replace(b"\n", b"\r\n")
    return arrival


def inserted_blank_line(data: bytes) -> str:
    """The note for a message whose header block postfix's cleanup(8) probably cut short, or "".

    cleanup(8) inserts an empty line before the first line of the header block that is neither a header
    field nor a continuation line.  Bytes alone cannot tell that empty line from the sender's own, so
    the rule is: the first line after the first empty line is not empty, not a continuation and not a
    header field, and a later line before the next empty line is one of the header fields a message
    has (RFC 5322, MIME, or X-...).  Then the note names the line, counted in the message as sent.
    """
    lines = data.split(b"\n", 400)[:400]
    try:
        blank = lines.index(b"")
    except ValueError:
        return ""
    if blank == 0 or blank + 1 >= len(lines):
        return ""
    first = lines[blank + 1].rstrip(b"\r")
    if not first or first[:1] in (b" ", b"\t") or _HEADER.match(first):
        return ""
    later = []
    for line in lines[blank + 2:]:
        if not line.rstrip(b"\r"):
            break
        match = _HEADER.match(line)
        if match and (match.group(1).lower() in _MESSAGE_FIELDS or match.group(1).lower().startswith(b"x-")):
            later.append(match.group(1).decode("ascii"))
    if not later:
        return ""
    return (f"normalised in transit by postfix (probably): blank line inserted before line {blank + 1}, which is not a "
            f"header field; the header fields after it ({', '.join(later[:5])}) are in the body")


def spool_time(name: str) -> Optional[float]:
    """When virtual(8) delivered a spool file, from its Maildir name (<seconds>.V..M<microseconds>...), or None."""
    match = re.match(r"(\d+)\.[^.]*?M(\d+)", name) or re.match(r"(\d+)\.", name)
    if not match:
        return None
    return int(match.group(1)) + (int(match.group(2)) / 1e6 if match.lastindex == 2 else 0)


def _received_by(text: bytes) -> bytes:
    match = _RECEIVED_BY.search(text)
    return match.group(1).lower() if match else b""


class Maildir:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.new = self.root / "new"

    def ensure(self) -> None:
        for sub in ("tmp", "new", "cur"):
            (self.root / sub).mkdir(parents=True, exist_ok=True, mode=0o700)

    def pending(self, limit: int) -> List[str]:
        """Names of delivered messages, oldest first (Maildir names start with the time)."""
        try:
            names = [entry.name for entry in os.scandir(self.new) if not entry.name.startswith(".")]
        except FileNotFoundError:
            return []
        names.sort()
        return names[:limit]

    def backlog(self) -> int:
        return self.waiting()[0]

    def waiting(self) -> Tuple[int, Optional[float]]:
        """How many spool files wait, and when the oldest was delivered (None: none), in one listing."""
        count, oldest = 0, None
        try:
            for entry in os.scandir(self.new):
                if not entry.name.startswith("."):
                    count += 1
                    oldest = entry.name if oldest is None or entry.name < oldest else oldest
        except FileNotFoundError:
            return 0, None
        return count, spool_time(oldest) if oldest else None

    def read(self, name: str) -> bytes:
        return (self.new / name).read_bytes()

    def remove(self, names: Iterable[str]) -> None:
        for name in names:
            try:
                (self.new / name).unlink()
            except FileNotFoundError:
                pass
