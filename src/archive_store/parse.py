"""What the index knows about a message, extracted without ever failing.

A message that the MIME parser cannot read is still stored; parse_error
then says what limited the index.

Beyond the headers and body text:

* attachments: their names, and the text the extraction pool
  (textract.Extractor) gets out of them, at most ``text_limit`` characters
  per message in all;
* forwarded messages (message/rfc822 parts): their headers and text, as part
  of the message;
* journal reports (Exchange and Microsoft 365 envelope journaling, marked by
  ``X-MS-Journal-Report`` or Exchange 2003's ``Content-Identifier:
  exjournalreport``): the attached original is indexed as the message, and
  the report's envelope (the sender and every recipient, Bcc, expanded list
  members and forwarded-to addresses included) becomes its envelope.
  The stored bytes stay the report as received.
"""

import email
import email.policy
import hashlib
import re
from dataclasses import dataclass, field
from email.header import decode_header, make_header
from email.utils import getaddresses, parsedate_to_datetime
from typing import Callable, List, Optional, Tuple

from archive_common import participants
from archive_store.textract import Extracted, decode, html_to_text

MAX_PARTS = 2000
_FROM_LINE = re.compile(rb">*From ")
# The most recipients of a journal report that are indexed.
MAX_JOURNAL_RECIPIENTS = 10000
# (name, content type, bytes, characters still allowed) -> Extracted
AttachmentText = Callable[[str, str, bytes, int], Extracted]


@dataclass
class Parsed:
    body_sha256: str
    message_id: str = ""
    hdr_from: str = ""
    hdr_to: str = ""
    hdr_cc: str = ""
    subject: str = ""
    date: Optional[int] = None
    body_text: str = ""
    # (name, size, sha256, characters of text indexed, note: why its text is missing or cut)
    attachments: List[Tuple[str, int, str, int, str]] = field(default_factory=list)
    attachment_text: str = ""
    parse_error: str = ""
    # Recipients the mail itself names beyond To and Cc: a journal report's envelope, X-Original-To.
    recipients: List[str] = field(default_factory=list)
    # A journal report's envelope: {"sender", "recipients": [{"address", "field", "expanded"?, "forwarded"?}], "defects"}
    journal: Optional[dict] = None

    @property
    def attachment_names(self) -> str:
        return " ".join(attachment[0] for attachment in self.attachments)


def split_body(raw: bytes) -> Tuple[int, bytes]:
    """(offset of the blank line ending the headers or -1, the bytes after it)."""
    crlf = raw.find(b"\r\n\r\n")
    # A bare "\n\n" counts only before the first CRLF pair: no rescan of the body.
    lf = raw.find(b"\n\n", 0, crlf + 1 if crlf >= 0 else len(raw))
    cut = lf if lf >= 0 else crlf
    if cut < 0:
        return -1, b""
    return cut, raw[cut + (4 if cut == crlf else 2):]


def _text(value) -> str:
    """A header value as readable text, RFC 2047 decoded where possible."""
    if value is None:
        return ""
    if not isinstance(value, str):
        value = str(value)
    value = value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    try:
        value = str(make_header(decode_header(value)))
    except Exception:  # malformed encoded-words: keep them as they are
        pass
    return " ".join(value.split())


def _addresses(msg, name: str) -> str:
    values = [_text(v) for v in msg.get_all(name, [])]
    pairs = getaddresses(values)
    shown = []
    for display, addr in pairs:
        if display and addr:
            shown.append(f"{display} <{addr}>")
        elif addr or display:
            shown.append(addr or display)
    return ", ".join(shown)


def _parse(raw: bytes, cut: int, body: bytes):
    """Parse headers always, the body only when it has MIME structure.

    email's feedparser walks a body line by line; a single-part body (most
    journal mail, and every benchmark message) is decoded from the bytes
    instead, which is several times faster and gives the same text.
    """
    if cut > 0:
        msg = email.message_from_bytes(raw[:cut] + b"\n\n", policy=email.policy.compat32)
        if msg.get_content_maintype() not in ("multipart", "message") and not msg.defects:
            msg.set_payload(body.decode("ascii", "surrogateescape"))
            return msg
    return email.message_from_bytes(raw, policy=email.policy.compat32)


def extract(raw: bytes, body_limit: int = 262144, attachment_text: Optional[AttachmentText] = None,
            text_limit: int = 1048576) -> Parsed:
    """Everything the index keeps of ``raw``; ``attachment_text`` (an Extractor's extract) reads attachments,
    at most ``text_limit`` characters per message; without it only their names are indexed."""
    if _FROM_LINE.match(raw):  # an mbox separator the sender left in (">From " too): not a header, skip it
        raw = raw[raw.find(b"\n") + 1:]
    cut, body = split_body(raw)
    parsed = Parsed(body_sha256=hashlib.sha256(body).hexdigest())
    try:
        msg = _parse(raw, cut, body)
    except Exception as exc:  # the parser gave up entirely: headers stay unindexed
        parsed.parse_error = f"{type(exc).__name__}: {exc}"[:200]
        return parsed
    content = msg
    if is_journal_report(msg):
        content = _unwrap_journal_report(msg, parsed)
    try:
        _headers(content, parsed)
        # X-Original-To from a journaling server; Bcc where the message kept it (a sender's copy: imported
        # Sent Items, a PST, an IMAP account): recipients the To and Cc headers do not name.
        parsed.recipients += [addr for _name, addr in getaddresses(
            [_text(v) for field in ("X-Original-To", "Bcc") for v in content.get_all(field, []) + (
                msg.get_all(field, []) if content is not msg else [])]) if addr]
    except Exception as exc:
        parsed.parse_error = f"headers: {type(exc).__name__}: {exc}"[:200]
    walker = _Walker(parsed, body_limit, attachment_text, text_limit)
    try:
        walker.walk(content)
    except RecursionError:
        parsed.parse_error = parsed.parse_error or "MIME nesting too deep; body partly indexed"
    except Exception as exc:
        parsed.parse_error = parsed.parse_error or f"body: {type(exc).__name__}: {exc}"[:200]
    parsed.body_text = "\n".join(walker.texts)
    parsed.attachment_text = "\n".join(walker.attachment_texts)
    if parsed.journal and parsed.journal["defects"] and not parsed.parse_error:
        parsed.parse_error = ("journal report: " + "; ".join(parsed.journal["defects"]))[:200]
    if msg.defects and not parsed.parse_error:
        parsed.parse_error = "defects: " + ", ".join(sorted({type(d).__name__ for d in msg.defects}))[:200]
    return parsed


def _headers(msg, parsed: Parsed) -> None:
    parsed.message_id = _text(msg.get("Message-ID", "")).strip()
    parsed.subject = _text(msg.get("Subject", ""))
    parsed.hdr_from = _addresses(msg, "From")
    parsed.hdr_to = _addresses(msg, "To")
    parsed.hdr_cc = _addresses(msg, "Cc")
    parsed.date = _date(msg.get("Date"))


def _date(value) -> Optional[int]:
    if not value:
        return None
    try:
        return int(parsedate_to_datetime(_text(value)).timestamp())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


class _Walker:
    """The text of a message's parts: body text up to ``body_limit``, attachments through ``attachment_text``."""

    def __init__(self, parsed: Parsed, body_limit: int, attachment_text: Optional[AttachmentText], text_limit: int) -> None:
        self.parsed = parsed
        self.body_left = body_limit
        self.text_left = text_limit
        self.attachment_text = attachment_text
        self.texts: List[str] = []
        self.attachment_texts: List[str] = []
        self.seen = set()

    def walk(self, msg) -> None:
        for count, part in enumerate(msg.walk()):
            if count >= MAX_PARTS:
                self.parsed.parse_error = f"more than {MAX_PARTS} MIME parts; the rest is not indexed"
                break
            content_type = part.get_content_type()
            if content_type == "message/rfc822" and part is not msg:
                for inner in part.get_payload() if isinstance(part.get_payload(), list) else []:
                    self._body(_forwarded_headers(inner))
            if part.is_multipart():
                continue
            filename = part.get_filename() or part.get_param("name")
            if isinstance(filename, tuple):
                filename = email.utils.collapse_rfc2231_value(filename)
            payload = part.get_payload(decode=True) or b""
            disposition = (part.get("Content-Disposition") or "").lower()
            if filename or "attachment" in disposition or content_type.startswith(("application/", "image/", "audio/", "video/")):
                self._attachment(_text(filename) if filename else "", content_type, payload)
            elif content_type.startswith("text/") and self.body_left > 0:
                text = decode(payload, part.get_content_charset())
                self._body(html_to_text(text) if content_type == "text/html" else text)

    def _body(self, text: str) -> None:
        text = text[: self.body_left]
        self.body_left -= len(text)
        self.texts.append(text)

    def _attachment(self, name: str, content_type: str, payload: bytes) -> None:
        digest = hashlib.sha256(payload).hexdigest()
        extracted = Extracted()
        if self.attachment_text and digest not in self.seen:
            extracted = self.attachment_text(name, content_type, payload, self.text_left)
            self.text_left -= len(extracted.text)
            if extracted.text:
                self.attachment_texts.append(extracted.text)
        self.seen.add(digest)
        self.parsed.attachments.append((name, len(payload), digest, len(extracted.text), extracted.note))


def _forwarded_headers(inner) -> str:
    """A forwarded message's headers, as text its words are found by."""
    fields = [(name, _addresses(inner, name)) for name in ("From", "To", "Cc")]
    fields += [("Subject", _text(inner.get("Subject", ""))), ("Date", _text(inner.get("Date", "")))]
    return "\n".join(f"{name}: {value}" for name, value in fields if value)


# -- journal reports ------------------------------------------------------------------------------------

_ENVELOPE_FIELDS = {"to": "to", "cc": "cc", "bcc": "bcc", "recipient": "recipient", "recipients": "recipient"}


def is_journal_report(msg) -> bool:
    """Exchange 2007 and later, and Microsoft 365, mark a report with X-MS-Journal-Report; Exchange 2003 with
    Content-Identifier: exjournalreport."""
    return msg.get("X-MS-Journal-Report") is not None or _text(msg.get("Content-Identifier", "")).lower() == "exjournalreport"


def _unwrap_journal_report(msg, parsed: Parsed):
    """Read the report's envelope into ``parsed.journal`` and return the original message to index (the report
    itself when no original is attached)."""
    envelope_text, original = None, None
    parts = msg.get_payload() if msg.is_multipart() else []
    for part in parts if isinstance(parts, list) else []:
        content_type = part.get_content_type()
        if envelope_text is None and content_type == "text/plain":
            envelope_text = decode(part.get_payload(decode=True) or b"", part.get_content_charset())
        elif original is None and content_type == "message/rfc822" and isinstance(part.get_payload(), list):
            original = part.get_payload()[0]
    journal = parse_envelope(envelope_text or "")
    if envelope_text is None:
        journal["defects"].append("no envelope part (text/plain) found")
    if original is None:
        journal["defects"].append("no original message (message/rfc822) attached: the report itself is indexed")
    parsed.journal = journal
    parsed.recipients += [address for recipient in journal["recipients"]
                          for address in (recipient["address"], recipient.get("expanded"), recipient.get("forwarded")) if address]
    return original if original is not None else msg


def parse_envelope(text: str) -> dict:
    """An envelope journal report's text: ``Sender:``, ``Subject:``, ``Message-Id:``, then one line per recipient,
    ``To:``/``Cc:``/``Bcc:``/``Recipient:`` (Exchange 2003: ``Recipients:``, a list), each perhaps annotated
    ``, Expanded: <list>`` or ``, Forwarded: <address>``."""
    journal = {"sender": "", "subject": "", "message_id": "", "recipients": [], "defects": []}
    seen = {}
    for line in re.sub(r"\r?\n[ \t]+", " ", text).splitlines():
        name, colon, value = line.partition(":")
        name = name.strip().lower()
        if not colon or not value.strip():
            continue
        if name == "sender":
            journal["sender"] = _envelope_address(value)
        elif name in ("subject", "message-id"):
            journal[name.replace("-", "_")] = value.strip()
        elif name == "recipients":  # Exchange 2003: one line, comma separated
            for _display, address in getaddresses([value]):
                _add_recipient(journal, seen, {"address": participants.normalise(address), "field": "recipient"})
        elif name in _ENVELOPE_FIELDS:
            address, *annotations = [piece.strip() for piece in value.split(",")]
            recipient = {"address": _envelope_address(address), "field": _ENVELOPE_FIELDS[name]}
            for annotation in annotations:
                kind, _colon, target = annotation.partition(":")
                if kind.strip().lower() in ("expanded", "forwarded") and target.strip():
                    recipient[kind.strip().lower()] = _envelope_address(target)
                else:
                    journal["defects"].append(f"unknown annotation {annotation[:60]!r} on {recipient['address']}")
            _add_recipient(journal, seen, recipient)
    if not journal["recipients"]:
        journal["defects"].append("no recipients listed")
    return journal


def _add_recipient(journal: dict, seen: dict, recipient: dict) -> None:
    address = recipient["address"]
    if not address or "@" not in address:
        journal["defects"].append(f"recipient {address[:80]!r} is not an address")
    elif address in seen:
        journal["defects"].append(f"recipient {address} listed twice")
    elif len(journal["recipients"]) >= MAX_JOURNAL_RECIPIENTS:
        cut = f"more than {MAX_JOURNAL_RECIPIENTS} recipients: the rest not indexed"
        if cut not in journal["defects"]:
            journal["defects"].append(cut)
    else:
        seen[address] = recipient
        journal["recipients"].append(recipient)


def _envelope_address(value: str) -> str:
    pairs = getaddresses([value.strip()])
    return participants.normalise(pairs[0][1] if pairs and pairs[0][1] else value)
