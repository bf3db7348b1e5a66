"""The searchable text of attachments, extracted outside the ingest process.

An attachment is untrusted input of any size: a PDF that loops, a zip bomb,
a 40 MB spreadsheet.  Each one is handed to a pool of worker processes
(pebble, from Debian: it kills a worker whose task overruns and starts a new
one) that run under an address-space limit; the tools they call (poppler's
pdftotext, unrtf, catdoc, xls2csv, catppt) also get a CPU-time limit.  When a
limit is hit the message is still stored and indexed, without that
attachment's text, and ``Extracted.note`` says which limit.

Formats: PDF; DOCX, XLSX, PPTX, ODT, ODS and ODP (their XML, read with
defusedxml); RTF; legacy DOC, XLS and PPT; HTML and text/*; iCalendar
summaries; zip archives (member names, and the text of the supported members,
bounded in depth, count and size).
"""

import io
import os
import re
import resource
import signal
import subprocess
import tempfile
import zipfile
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from html.parser import HTMLParser
from multiprocessing import get_context
from typing import Callable, List, Optional, Tuple

from defusedxml.ElementTree import iterparse
from pebble import ProcessExpired, ProcessPool

# A zip inside a zip is read, a zip inside that is only listed.
ZIP_DEPTH = 2
ZIP_MEMBERS = 200
# What one zip member may expand to before it is left unread (a zip bomb's members expand without end).
ZIP_MEMBER_BYTES = 32 * 1024 * 1024

OOXML_PARTS = (
    # (member name pattern, paragraph element local names)
    (re.compile(r"word/(document|header\d*|footer\d*|footnotes|endnotes)\.xml$"), ("p",)),
    (re.compile(r"xl/sharedStrings\.xml$"), ("si",)),
    (re.compile(r"xl/worksheets/sheet\d+\.xml$"), ("is",)),
    (re.compile(r"ppt/(slides/slide\d+|notesSlides/notesSlide\d+)\.xml$"), ("p",)),
)
ODF_PARAGRAPHS = ("p", "h")


@dataclass
class Extracted:
    text: str = ""
    note: str = ""  # why no (or not all) text was taken, for the metadata


class TooLarge(ValueError):
    """A zip member expands past ZIP_MEMBER_BYTES."""


class Truncated(Exception):
    """The text bound was reached: what was gathered so far is kept."""


class _Collector:
    """Gathers text up to ``limit`` characters."""

    def __init__(self, limit: int) -> None:
        self.parts: List[str] = []
        self.left = limit

    def add(self, text: str) -> None:
        text = " ".join(text.split())
        if not text:
            return
        self.parts.append(text[: self.left])
        self.left -= len(text) + 1
        if self.left <= 0:
            raise Truncated()

    def text(self) -> str:
        return "\n".join(self.parts)


# -- in the worker process ---------------------------------------------------------------------------


def _limit_memory(address_space: int) -> None:
    """The pool's initializer: the worker (and every tool it starts) lives under this address-space limit."""
    resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))


class LimitReached(Exception):
    """A tool was stopped by its CPU-time or address-space limit."""


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _killed_by(number: int, seconds: int) -> str:
    """Why a tool's process ended on signal ``number``: SIGXCPU at the soft CPU limit, SIGKILL at the hard one;
    an allocation refused under RLIMIT_AS ends a C++ tool (poppler) in std::bad_alloc, that is abort(), and a
    C tool that does not check malloc in SIGSEGV."""
    if number in (signal.SIGXCPU, signal.SIGKILL):
        return f"ran past its {seconds} s CPU-time limit"
    if number in (signal.SIGABRT, signal.SIGSEGV):
        return f"died at its memory limit ({_signal_name(number)})"
    return f"died of {_signal_name(number)}"


def _run_tool(argv: List[str], data: Optional[bytes], seconds: int, path: Optional[str] = None) -> str:
    """A tool's standard output as text; it gets ``seconds`` of CPU time, and a second more of wall-clock time
    (a tool that computes meets the more telling limit first; one that waits on nothing meets the other)."""
    def cpu_limit():
        resource.setrlimit(resource.RLIMIT_CPU, (seconds, seconds + 1))
    result = subprocess.run(argv + ([path] if path else []), input=data, capture_output=True, timeout=seconds + 1,
                            preexec_fn=cpu_limit, check=False)
    if result.returncode < 0:
        # Killed: what it printed so far is a fragment, and the signal says which limit stopped it.
        raise LimitReached(f"{os.path.basename(argv[0])} {_killed_by(-result.returncode, seconds)}")
    if result.returncode != 0 and not result.stdout:
        error = result.stderr.decode("utf-8", "replace").strip().splitlines()
        raise ValueError(f"{os.path.basename(argv[0])} exited with {result.returncode}" + (f": {error[-1][:120]}" if error else ""))
    return result.stdout.decode("utf-8", "replace")


def _with_file(argv: List[str], data: bytes, seconds: int) -> str:
    """For tools that must seek (OLE files): the bytes in a private temporary file."""
    with tempfile.TemporaryDirectory(prefix="textract-") as directory:
        path = os.path.join(directory, "attachment")
        with open(path, "wb") as handle:
            handle.write(data)
        return _run_tool(argv, None, seconds, path)


def _xml_paragraphs(data: bytes, paragraphs, out: _Collector) -> None:
    """The text of each paragraph element (by local name), its runs joined as written."""
    for _event, element in iterparse(io.BytesIO(data), events=("end",), forbid_dtd=True):
        if element.tag.rsplit("}", 1)[-1] in paragraphs:
            out.add("".join(element.itertext()))
            element.clear()


class _HTMLText(HTMLParser):
    def __init__(self, out: Callable[[str], None]) -> None:
        super().__init__(convert_charrefs=True)
        self.out = out
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style"):
            self._skip += 1

    def handle_endtag(self, tag):
        if tag in ("script", "style") and self._skip:
            self._skip -= 1

    def handle_data(self, data):
        if not self._skip:
            self.out(data)


def html_to_text(html: str) -> str:
    parts: List[str] = []
    parser = _HTMLText(parts.append)
    try:
        parser.feed(html)
        parser.close()
    except Exception:  # the HTML parser gave up: drop the tags by hand
        return re.sub(r"<[^>]*>", " ", html)
    return " ".join(parts)


def decode(payload: bytes, charset: Optional[str]) -> str:
    for candidate in (charset, "utf-8", "latin-1"):
        if not candidate:
            continue
        try:
            return payload.decode(candidate, "replace")
        except LookupError:  # unknown or invalid charset name
            continue
    return payload.decode("latin-1")


def _calendar(text: str, out: _Collector) -> None:
    unfolded = re.sub(r"\r?\n[ \t]", "", text)
    for line in unfolded.splitlines():
        name, _sep, value = line.partition(":")
        if name.split(";")[0].upper() in ("SUMMARY", "DESCRIPTION", "LOCATION", "ORGANIZER", "ATTENDEE", "COMMENT"):
            out.add(value.replace("\\n", " ").replace("\\,", ",").replace("\\;", ";").replace("mailto:", "").replace("MAILTO:", ""))


def _kind(name: str, content_type: str, data: bytes) -> str:
    """What the attachment is, by its first bytes first, then its name and declared type."""
    extension = os.path.splitext(name.lower())[1]
    if data.startswith(b"%PDF") or b"%PDF-" in data[:1024]:
        return "pdf"
    if data.startswith(b"PK\x03\x04"):
        return "zip"
    if data.startswith(b"{\\rtf"):
        return "rtf"
    if data.startswith(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"):
        if extension in (".xls", ".xlt") or "excel" in content_type:
            return "xls"
        if extension in (".ppt", ".pps", ".pot") or "powerpoint" in content_type:
            return "ppt"
        return "doc"
    if content_type == "text/calendar" or extension == ".ics":
        return "ics"
    if content_type == "text/html" or extension in (".html", ".htm"):
        return "html"
    if content_type.startswith("text/") or extension in (".txt", ".csv", ".md", ".log", ".eml"):
        return "text"
    return ""


def _zip(data: bytes, name: str, out: _Collector, depth: int, seconds: int) -> List[str]:
    """An OOXML or ODF document's text, or a plain archive's member names and the text of its members."""
    notes: List[str] = []
    bombs: List[str] = []
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        members = archive.infolist()
        names = {member.filename for member in members}
        if "[Content_Types].xml" in names or "mimetype" in names and archive.read("mimetype")[:40].startswith(b"application/vnd.oasis"):
            for member in members:
                for pattern, paragraphs in OOXML_PARTS:
                    if pattern.match(member.filename):
                        _xml_paragraphs(_read_member(archive, member), paragraphs, out)
                if member.filename == "content.xml":
                    _xml_paragraphs(_read_member(archive, member), ODF_PARAGRAPHS, out)
            return notes
        for number, member in enumerate(members):
            if number >= ZIP_MEMBERS:
                notes.append(f"{name}: members after the first {ZIP_MEMBERS} not read")
                break
            out.add(member.filename)
            if member.is_dir() or depth >= ZIP_DEPTH:
                continue
            try:
                content = _read_member(archive, member)
            except TooLarge:
                bombs.append(member.filename)
                continue
            except ValueError as exc:
                notes.append(f"{name}/{member.filename}: {exc}")
                continue
            try:
                sub = _text_of(member.filename, "", content, out, depth + 1, seconds)
            except LimitReached as exc:
                sub = str(exc)
            if sub:
                notes.append(f"{name}/{member.filename}: {sub}")
    if bombs:
        notes.insert(0, f"{name}: {len(bombs)} member(s) expand past {ZIP_MEMBER_BYTES >> 20} MB (a zip bomb?), not read: "
                     + ", ".join(bombs[:3]) + (", ..." if len(bombs) > 3 else ""))
    return notes


def _read_member(archive: zipfile.ZipFile, member: zipfile.ZipInfo) -> bytes:
    """A member's bytes, never more than ZIP_MEMBER_BYTES, whatever its header claims."""
    if member.flag_bits & 0x1:
        raise ValueError("encrypted")
    with archive.open(member) as handle:
        data = handle.read(ZIP_MEMBER_BYTES + 1)
    if len(data) > ZIP_MEMBER_BYTES:
        raise TooLarge(member.filename)
    return data


def _text_of(name: str, content_type: str, data: bytes, out: _Collector, depth: int, seconds: int) -> str:
    """Add the attachment's text to ``out``; return a note when something could not be read."""
    kind = _kind(name, content_type, data)
    if kind == "pdf":
        out.add(_run_tool(["pdftotext", "-q", "-enc", "UTF-8", "-", "-"], data, seconds))
    elif kind == "zip":
        notes = _zip(data, name or "zip", out, depth, seconds)
        return "; ".join(notes)
    elif kind == "rtf":
        text = _run_tool(["unrtf", "--text", "--nopict"], data, seconds)
        out.add("\n".join(line for line in text.splitlines() if not line.startswith("###")).replace("-----------------", "", 1))
    elif kind == "doc":
        out.add(_with_file(["catdoc", "-d", "utf-8", "-w"], data, seconds))
    elif kind == "xls":
        out.add(_with_file(["xls2csv", "-d", "utf-8", "-q", "0"], data, seconds))
    elif kind == "ppt":
        out.add(_with_file(["catppt", "-d", "utf-8"], data, seconds))
    elif kind == "ics":
        _calendar(decode(data, None), out)
    elif kind == "html":
        out.add(html_to_text(decode(data, None)))
    elif kind == "text":
        out.add(decode(data, None))
    return ""


def extract_text(name: str, content_type: str, data: bytes, limit: int, seconds: int) -> Tuple[str, str]:
    """Run in a pool worker: (text of at most ``limit`` characters, note)."""
    out = _Collector(limit)
    note = ""
    try:
        note = _text_of(name, content_type, data, out, 0, seconds)
    except Truncated:
        note = f"text cut at {limit} characters"
    except MemoryError:
        return "", "memory limit reached: not indexed"
    except LimitReached as exc:
        return "", f"{exc}: not indexed"
    except subprocess.TimeoutExpired as exc:
        return "", f"{os.path.basename(exc.cmd[0])} ran past its {exc.timeout:g} s wall-clock limit: not indexed"
    except (zipfile.BadZipFile, ValueError, OSError, SyntaxError, EOFError, NotImplementedError) as exc:
        # defusedxml's refusals (entities, DTDs) and XML syntax errors are ValueError or SyntaxError.
        return out.text(), f"unreadable: {type(exc).__name__}: {exc}"[:200]
    return out.text(), note[:300]


# -- in the store ----------------------------------------------------------------------------------------


class Extractor:
    """The pool of extraction processes of one store process.

    ``seconds`` bounds each attachment's extraction (the worker is killed
    past it), ``memory_mb`` each worker's address space.
    """

    def __init__(self, workers: int = 2, seconds: int = 10, memory_mb: int = 512) -> None:
        self.seconds = seconds
        self.memory_mb = memory_mb
        # forkserver: workers never inherit the store's threads or open files.
        self.pool = ProcessPool(max_workers=workers, max_tasks=500, initializer=_limit_memory,
                                initargs=(memory_mb * 1024 * 1024,), context=get_context("forkserver"))

    def close(self) -> None:
        self.pool.stop()
        self.pool.join()

    def extract(self, name: str, content_type: str, data: bytes, limit: int) -> Extracted:
        if limit <= 0:
            return Extracted(note="the message's text bound was reached: not indexed")
        if not _kind(name, content_type, data):
            return Extracted()
        future = self.pool.schedule(extract_text, args=(name, content_type, data, limit, self.seconds),
                                    timeout=self.seconds + 3)  # a tool's own limits, when it has them, come first
        try:
            text, note = future.result()
        except FutureTimeout:
            return Extracted(note=f"extraction ran past its {self.seconds} s limit: not indexed")
        except ProcessExpired as exc:
            return Extracted(note=f"extraction died ({exc}; memory limit {self.memory_mb} MB): not indexed")
        return Extracted(text, note)
