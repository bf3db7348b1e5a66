"""Turn a message's raw bytes into what the message page shows, treating the mail as hostile input.

Headers and text are handed to Jinja, which escapes them.  HTML bodies are cleaned with bleach
(an allow-list of tags and attributes: no script, no event handlers, no style, no links that
navigate, no remote images) and are then shown in a sandboxed frame under a policy that runs no
script and loads nothing (messages.html_body), so a flaw in one layer is caught by the other.
"""

import email
import email.policy
import re
from dataclasses import dataclass, field
from typing import List, Optional

import bleach

MAX_TEXT_CHARS = 2_000_000
ALLOWED_TAGS = frozenset({
    "a", "abbr", "b", "blockquote", "br", "caption", "center", "code", "div", "em", "font", "h1", "h2", "h3", "h4",
    "h5", "h6", "hr", "i", "img", "li", "ol", "p", "pre", "s", "small", "span", "strong", "sub", "sup", "table",
    "tbody", "td", "tfoot", "th", "thead", "tr", "tt", "u", "ul",
})
_LAYOUT = {"align", "colspan", "rowspan", "width", "height", "border", "cellpadding", "cellspacing", "valign"}
# Whole elements whose content is never text a person should read.
_DROP = re.compile(r"<(script|style|head|title|noscript|template|object|iframe)\b.*?</\1\s*>", re.I | re.S)


def _attribute(tag, name, value):
    if name in _LAYOUT or name in ("title", "alt"):
        return True
    if tag == "img" and name == "src":
        return value.startswith("data:image/") and not value.startswith("data:image/svg")
    return False


@dataclass
class Attachment:
    index: int
    name: str
    content_type: str
    size: int


@dataclass
class Shown:
    headers: List[tuple]
    text: str
    has_html: bool
    attachments: List[Attachment] = field(default_factory=list)
    defects: List[str] = field(default_factory=list)


SHOWN_HEADERS = ("From", "Sender", "To", "Cc", "Bcc", "Reply-To", "Date", "Subject", "Message-ID")


def parse(raw: bytes):
    return email.message_from_bytes(raw, policy=email.policy.default)


def _header(message, name) -> str:
    try:
        value = message.get(name)
        return str(value) if value is not None else ""
    except (ValueError, TypeError, IndexError):  # a header the parser cannot decode is shown as sent
        return str(message.get_all(name, failobj=[""])[0])


def _parts(message):
    """Leaf parts in walk order: the numbering the attachment links use."""
    return [part for part in message.walk() if not part.is_multipart()]


def _payload(part) -> bytes:
    try:
        return part.get_payload(decode=True) or b""
    except (ValueError, TypeError, LookupError):
        return b""


def _text(part) -> str:
    charset = part.get_content_charset() or "utf-8"
    try:
        return _payload(part).decode(charset, errors="replace")
    except LookupError:
        return _payload(part).decode("utf-8", errors="replace")


def _is_attachment(part) -> bool:
    return part.get_content_disposition() == "attachment" or bool(part.get_filename()) or \
        part.get_content_maintype() not in ("text", "multipart")


def show(raw: bytes) -> Shown:
    message = parse(raw)
    text, has_html, attachments = None, False, []
    for index, part in enumerate(_parts(message)):
        if _is_attachment(part):
            attachments.append(Attachment(index, part.get_filename() or f"part-{index}", part.get_content_type(), len(_payload(part))))
        elif part.get_content_type() == "text/plain" and text is None:
            text = _text(part)[:MAX_TEXT_CHARS]
        elif part.get_content_type() == "text/html":
            has_html = True
    headers = [(name, _header(message, name)) for name in SHOWN_HEADERS if message.get(name) is not None]
    if text is None and has_html:
        text = bleach.clean(_DROP.sub(" ", html_source(message) or ""), tags=set(), strip=True)[:MAX_TEXT_CHARS]
    return Shown(headers, text or "", has_html, attachments, [type(d).__name__ for d in message.defects])


def html_source(message) -> Optional[str]:
    for part in _parts(message):
        if part.get_content_type() == "text/html" and not _is_attachment(part):
            return _text(part)[:MAX_TEXT_CHARS]
    return None


def sanitised_html(raw: bytes) -> str:
    """The first HTML body, cleaned; an empty page when there is none."""
    source = html_source(parse(raw)) or ""
    return bleach.clean(_DROP.sub("", source), tags=ALLOWED_TAGS, attributes=_attribute, protocols=["data"], strip=True,
                        strip_comments=True)


def attachment(raw: bytes, index: int):
    """(filename, bytes) of leaf part ``index``, or None."""
    parts = _parts(parse(raw))
    if not 0 <= index < len(parts) or not _is_attachment(parts[index]):
        return None
    return parts[index].get_filename() or f"part-{index}", _payload(parts[index])
