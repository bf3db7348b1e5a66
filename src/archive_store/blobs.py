"""Each attachment stored once: large base64 bodies cut out of a message, kept once per worker by sha256.

``split`` finds, by walking the MIME structure of the bytes themselves, every leaf part whose
Content-Transfer-Encoding is base64 and whose decoded body is at least ``threshold`` bytes. Such a
body is cut out of the message when, and only when, encoding its decoded bytes again with the layout
read from it (line length, line end, the line ends after the last line) gives back exactly the bytes
that were there; anything else (a different alphabet, bad padding, lines of uneven length, mixed
line ends, white space) stays inline. What remains is the skeleton, with a list of references:

    {"at": offset in the skeleton, "sha256": of the decoded body, "size": decoded bytes,
     "line": characters per line, "eol": "crlf" | "lf", "trail": line ends after the last line}

``join`` puts the message back together from the skeleton and the bodies; the store checks the
whole message's sha256 on every read, so a reference that does not give back the original is
caught, never served. Correctness does not depend on how the sender's encoder wrapped its lines.
"""

import base64
import binascii
import hashlib
import re
from email.parser import BytesHeaderParser
from typing import Callable, Dict, List, Optional, Tuple

_EOL = {"crlf": b"\r\n", "lf": b"\n"}
_BASE64 = re.compile(rb"[A-Za-z0-9+/]*={0,2}")
_HEADER_END = re.compile(rb"\r?\n\r?\n")
MAX_DEPTH = 20


def split(raw: bytes, threshold: int) -> Tuple[bytes, List[dict], Dict[str, bytes]]:
    """(skeleton, references in order, {sha256: decoded body}) of a message; nothing is cut when
    ``threshold`` is 0 or no body qualifies."""
    if threshold <= 0:
        return raw, [], {}
    cuts = []  # (start, end, reference, body)
    _walk(raw, 0, len(raw), threshold, cuts, 0)
    if not cuts:
        return raw, [], {}
    pieces, references, bodies, position, removed = [], [], {}, 0, 0
    for start, end, reference, body in sorted(cuts, key=lambda cut: cut[0]):
        pieces.append(raw[position:start])
        reference["at"] = start - removed
        references.append(reference)
        bodies[reference["sha256"]] = body
        removed += end - start
        position = end
    pieces.append(raw[position:])
    return b"".join(pieces), references, bodies


def join(skeleton: bytes, references: List[dict], body_of: Callable[[str], bytes]) -> bytes:
    """The message from its skeleton, each reference's body encoded as it was."""
    pieces, position = [], 0
    for reference in references:
        pieces.append(skeleton[position:reference["at"]])
        pieces.append(encode(body_of(reference["sha256"]), reference))
        position = reference["at"]
    pieces.append(skeleton[position:])
    return b"".join(pieces)


def encode(body: bytes, reference: dict) -> bytes:
    """A body in base64, laid out as the reference says."""
    text, width, eol = base64.b64encode(body), reference["line"], _EOL[reference["eol"]]
    lines = [text[i:i + width] for i in range(0, len(text), width)] or [b""]
    return eol.join(lines) + eol * reference["trail"]


def _walk(data: bytes, start: int, end: int, threshold: int, cuts: list, depth: int) -> None:
    """Look at the entity in data[start:end] (headers, then body); collect the cuts of base64 leaves."""
    if depth > MAX_DEPTH or data.startswith((b"\r\n", b"\n"), start, end):
        return  # too deep, or no headers at all: text/plain in 7bit, nothing to cut
    match = _HEADER_END.search(data, start, end)
    if match is None:
        return
    headers = BytesHeaderParser().parsebytes(data[start:match.start()] + b"\r\n")
    body_start = match.end()
    content_type = headers.get_content_type()
    if headers.get_content_maintype() == "multipart":
        boundary = headers.get_param("boundary")
        if isinstance(boundary, str) and boundary:
            for part_start, part_end in _parts(data, body_start, end, boundary.encode("utf-8", "surrogateescape")):
                _walk(data, part_start, part_end, threshold, cuts, depth + 1)
        return
    encoding = str(headers.get("content-transfer-encoding", "")).strip().lower()
    if content_type == "message/rfc822" and encoding in ("", "7bit", "8bit", "binary"):
        _walk(data, body_start, end, threshold, cuts, depth + 1)
        return
    if encoding == "base64":
        cut = _base64_cut(data[body_start:end], threshold)
        if cut is not None:
            cuts.append((body_start, end, *cut))


def _parts(data: bytes, start: int, end: int, boundary: bytes):
    """(start, end) of each body part between the delimiter lines of ``boundary`` (RFC 2046: the line
    end before a delimiter belongs to the delimiter)."""
    delimiter = re.compile(rb"(?:\r?\n|^)--" + re.escape(boundary) + rb"(--)?[ \t]*(?:\r?\n|$)", re.MULTILINE)
    part_start: Optional[int] = None
    for match in delimiter.finditer(data, start, end):
        if part_start is not None:
            yield part_start, match.start()
        if match.group(1):
            return
        part_start = match.end()


def _base64_cut(body: bytes, threshold: int):
    """(reference, decoded) when ``body`` is canonical base64 in even lines and decodes to ``threshold``
    bytes or more; otherwise None (the body stays inline)."""
    if len(body) * 3 // 4 < threshold:
        return None
    eol = "crlf" if b"\r\n" in body else "lf"
    if eol == "lf" and b"\r" in body or eol == "crlf" and body.count(b"\n") != body.count(b"\r\n"):
        return None
    lines = body.split(_EOL[eol])
    trail = 0
    while lines and lines[-1] == b"":
        lines.pop()
        trail += 1
    if not lines:
        return None
    width = len(lines[0])
    if width == 0 or any(len(line) != width for line in lines[:-1]) or not 0 < len(lines[-1]) <= width:
        return None
    text = b"".join(lines)
    if not _BASE64.fullmatch(text):
        return None
    try:
        decoded = binascii.a2b_base64(text, strict_mode=True)
    except binascii.Error:
        return None
    if len(decoded) < threshold:
        return None
    reference = {"sha256": _sha256(decoded), "size": len(decoded), "line": width, "eol": eol, "trail": trail}
    if encode(decoded, reference) != body:
        return None
    return reference, decoded


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
