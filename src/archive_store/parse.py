"""What the index knows about a message, extracted without ever failing.

A message that the MIME parser cannot read is still stored; parse_error
then says what limited the index.
"""

import email
import email.policy
import hashlib
import re
from dataclasses import dataclass, field
from email.header import decode_header, make_header
from email.utils import getaddresses, parsedate_to_datetime
from html.parser import HTMLParser
from typing import List, Optional, Tuple

MAX_PARTS = 2000


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
    attachments: List[Tuple[str, int, str]] = field(default_factory=list)
    parse_error: str = ""

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


class _HTMLText(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: List[str] = []
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style"):
            self._skip += 1

    def handle_endtag(self, tag):
        if tag in ("script", "style") and self._skip:
            self._skip -= 1

    def handle_data(self, data):
        if not self._skip:
            self.parts.append(data)


def _html_to_text(html: str) -> str:
    parser = _HTMLText()
    try:
        parser.feed(html)
        parser.close()
    except Exception:
        return re.sub(r"<[^>]*>", " ", html)
    return " ".join(parser.parts)


def _decode(payload: bytes, charset: Optional[str]) -> str:
    for candidate in (charset, "utf-8", "latin-1"):
        if not candidate:
            continue
        try:
            return payload.decode(candidate, "replace")
        except LookupError:  # unknown or invalid charset name
            continue
    return payload.decode("latin-1")


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


def extract(raw: bytes, body_limit: int = 262144) -> Parsed:
    cut, body = split_body(raw)
    parsed = Parsed(body_sha256=hashlib.sha256(body).hexdigest())
    try:
        msg = _parse(raw, cut, body)
    except Exception as exc:  # the parser gave up entirely: headers stay unindexed
        parsed.parse_error = f"{type(exc).__name__}: {exc}"[:200]
        return parsed
    try:
        parsed.message_id = _text(msg.get("Message-ID", "")).strip()
        parsed.subject = _text(msg.get("Subject", ""))
        parsed.hdr_from = _addresses(msg, "From")
        parsed.hdr_to = _addresses(msg, "To")
        parsed.hdr_cc = _addresses(msg, "Cc")
        parsed.date = _date(msg.get("Date"))
    except Exception as exc:
        parsed.parse_error = f"headers: {type(exc).__name__}: {exc}"[:200]
    try:
        _walk(msg, parsed, body_limit)
    except RecursionError:
        parsed.parse_error = parsed.parse_error or "MIME nesting too deep; body partly indexed"
    except Exception as exc:
        parsed.parse_error = parsed.parse_error or f"body: {type(exc).__name__}: {exc}"[:200]
    if msg.defects and not parsed.parse_error:
        parsed.parse_error = "defects: " + ", ".join(sorted({type(d).__name__ for d in msg.defects}))[:200]
    return parsed


def _date(value) -> Optional[int]:
    if not value:
        return None
    try:
        return int(parsedate_to_datetime(_text(value)).timestamp())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _walk(msg, parsed: Parsed, body_limit: int) -> None:
    texts: List[str] = []
    used = 0
    for count, part in enumerate(msg.walk()):
        if count >= MAX_PARTS:
            parsed.parse_error = f"more than {MAX_PARTS} MIME parts; the rest is not indexed"
            break
        if part.is_multipart():
            continue
        filename = part.get_filename() or part.get_param("name")
        if isinstance(filename, tuple):
            filename = email.utils.collapse_rfc2231_value(filename)
        payload = part.get_payload(decode=True) or b""
        content_type = part.get_content_type()
        disposition = (part.get("Content-Disposition") or "").lower()
        if filename or "attachment" in disposition or content_type.startswith(("application/", "image/", "audio/", "video/")):
            name = _text(filename) if filename else ""
            parsed.attachments.append((name, len(payload), hashlib.sha256(payload).hexdigest()))
            continue
        if content_type.startswith("text/") and used < body_limit:
            text = _decode(payload, part.get_content_charset())
            if content_type == "text/html":
                text = _html_to_text(text)
            text = text[: body_limit - used]
            used += len(text)
            texts.append(text)
    parsed.body_text = "\n".join(texts)
