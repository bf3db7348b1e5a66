"""Where old mail comes from: mbox files, Maildir trees, .eml folders, IMAP mailboxes and Outlook PST files.

Each reader yields Items in a stable order.  An Item is a message (its bytes
exactly as the source holds them), or a thing that is not imported with the
reason: ``skipped`` (not mail: a calendar item, a contact, an empty file) or
``failed`` (mail that cannot be imported: truncated, NUL bytes, too large,
unreadable).  A reader never stops at a bad message; it stops only when the
whole source cannot be read, and then raises SourceError.

Each message has a ``key`` that names it within its source for good (the
same message gets the same key on every run), which the importer's state
file and the store's import endpoint use to resume without duplicating.

Shared code (see src/README.md): standard library only, and the Ansible
module sees this file through plugins/module_utils/archive_mailsources.py.
"""

import hashlib
import imaplib
import os
import re
import shutil
import ssl
import subprocess
import tempfile
import time
from urllib.parse import unquote, urlsplit

MBOX_FORMATS = ("mboxo", "mboxrd")
_MBOXRD_QUOTED = re.compile(rb"^>+From ")
_MBOXO_QUOTED = re.compile(rb"^>From ")
_PST_BOUNDARY = re.compile(rb"iamunique-(-?\d+)_-_-")
_PST_SKIPPED = {".ics": "a calendar item", ".vcf": "a contact", ".txt": "a note or task"}
_IMAP_LIST = re.compile(rb'^\((?P<flags>[^)]*)\) (?P<delimiter>"[^"]*"|NIL) (?P<name>.+)$')
_IMAP_FETCH_CHUNK = 50


class SourceError(Exception):
    """The whole source cannot be read; str() is one line naming it."""


class Item(object):
    """A message from a source, or what was not imported and why: ``reason`` is "<kind>: <details>",
    and the summary counts by the kind."""

    __slots__ = ("status", "raw", "key", "dated", "origin", "reason")

    def __init__(self, status, origin, key, raw=b"", dated=None, reason=""):
        self.status = status  # message | skipped | failed
        self.origin = origin  # {"kind", "source", "folder", "position"}
        self.key = key
        self.raw = raw
        self.dated = dated
        self.reason = reason

    def where(self):
        """The source, folder and position, for a one-line report."""
        origin = self.origin
        return "%s %s%s%s" % (origin["kind"], origin["source"], (" folder " + origin["folder"]) if origin["folder"] else "",
                              (" position " + origin["position"]) if origin["position"] else "")


def _key(*parts):
    """A key of the store's form, stable for the same source and position."""
    return hashlib.sha256("\0".join(str(p) for p in parts).encode("utf-8", "surrogateescape")).hexdigest()[:40]


def _origin(kind, source, folder="", position=""):
    return {"kind": kind, "source": source, "folder": folder, "position": position}


def _checked(item, limit):
    """The item, turned into a failure when its bytes cannot be archived."""
    if item.status != "message":
        return item
    if not item.raw.strip():
        item.status, item.reason = "skipped", "empty: no bytes but white space"
    elif limit and len(item.raw) > limit:
        item.status, item.reason = "failed", "too large: %d bytes, more than the limit of %d" % (len(item.raw), limit)
    elif b"\0" in item.raw:
        item.status, item.reason = "failed", "NUL bytes: the first at offset %d, not an RFC 5322 message" % item.raw.index(b"\0")
    if item.status != "message":
        item.raw = b""
    return item


def _file_item(kind, path, relative, folder, limit, dated=None):
    """A message read from one file."""
    origin = _origin(kind, path, folder, relative)
    try:
        with open(path, "rb") as handle:
            raw = handle.read(limit + 1 if limit else -1)
            mtime = int(os.fstat(handle.fileno()).st_mtime)
    except OSError as exc:
        return Item("failed", origin, _key(kind, relative), reason="unreadable: %s" % (exc.strerror or exc))
    if limit and len(raw) > limit:
        return Item("failed", origin, _key(kind, relative), reason="too large: more than the limit of %d bytes" % limit)
    return _checked(Item("message", origin, _key(kind, relative), raw, dated or mtime), limit)


# -- mbox ------------------------------------------------------------------------------------------------------


def read_mbox(path, mbox_format="mboxrd", limit=0):
    """The messages of an mbox file, the ``From `` separator lines left out.

    ``mbox_format`` says how the file's writer quoted body lines that begin
    with ``From ``: mboxrd quotes ``>*From `` with one more ``>``, which is
    taken off again; mboxo quotes only ``From `` as ``>From ``, and so only
    ``>From `` loses its ``>``.  The empty line each writer puts after a
    message is not part of it.  A file that ends inside a message (no final
    line end) has its last message reported as truncated.
    """
    if mbox_format not in MBOX_FORMATS:
        raise SourceError("mbox %s: expected the format mboxo or mboxrd, found %r" % (path, mbox_format))
    quoted = _MBOXRD_QUOTED if mbox_format == "mboxrd" else _MBOXO_QUOTED
    try:
        handle = open(path, "rb")
    except OSError as exc:
        raise SourceError("mbox %s: cannot open it: %s" % (path, exc.strerror or exc)) from None
    with handle:
        first = handle.readline()
        if not first.startswith(b"From "):
            raise SourceError("mbox %s: expected a 'From ' line first, found %r: not an mbox file" % (path, first[:40]))
        number, start, lines, size, separator, offset = 1, 0, [], 0, first, len(first)
        while True:
            line = handle.readline()
            if not line or line.startswith(b"From "):
                yield _mbox_item(path, number, start, separator, lines, size, limit, truncated=not line and lines and not lines[-1].endswith(b"\n"))
                if not line:
                    return
                number, start, lines, size, separator = number + 1, offset, [], 0, line
            else:
                if quoted.match(line):
                    line = line[1:]
                if not limit or size <= limit:
                    lines.append(line)
                size += len(line)
            offset += len(line)


def _mbox_item(path, number, start, separator, lines, size, limit, truncated):
    position = "message %d at byte %d" % (number, start)
    key = _key("mbox", number, start, separator)
    origin = _origin("mbox", path, "", position)
    if truncated:
        return Item("failed", origin, key, reason="truncated: the file ends inside this message")
    if lines and lines[-1] in (b"\n", b"\r\n"):
        size -= len(lines.pop())  # the empty line that separates messages
    if limit and size > limit:
        return Item("failed", origin, key, reason="too large: %d bytes, more than the limit of %d" % (size, limit))
    return _checked(Item("message", origin, key, b"".join(lines), _mbox_date(separator)), limit)


def _mbox_date(separator):
    """The time in an mbox ``From sender Thu Nov 24 10:00:00 2026`` line, or None."""
    fields = separator.decode("ascii", "replace").split()
    try:
        return int(time.mktime(time.strptime(" ".join(fields[-5:]), "%a %b %d %H:%M:%S %Y")) - time.timezone)
    except (ValueError, OverflowError):
        return None


# -- Maildir and .eml trees ---------------------------------------------------------------------------------


def read_maildir(root, limit=0):
    """Every message in a Maildir and its Maildir++ subfolders (``.Sent``, ``.Lists.team``), or any tree of
    Maildirs, in cur/ and new/; the folder is recorded (``Lists/team``; the top Maildir is ``INBOX``)."""
    if not os.path.isdir(root):
        raise SourceError("Maildir %s: expected a directory, found none" % root)
    found = False
    for directory, subdirs, _files in _walk(root):
        if not {"cur", "new"} <= set(subdirs):
            continue
        found = True
        folder = _maildir_folder(os.path.relpath(directory, root))
        for sub in ("cur", "new"):
            for name in sorted(os.listdir(os.path.join(directory, sub))):
                if name.startswith("."):
                    continue
                unique = name.split(":", 1)[0]  # a message keeps this part when its flags change
                relative = os.path.join(os.path.relpath(directory, root), sub, name)
                stamp = unique.split(".", 1)[0]
                item = _file_item("maildir", os.path.join(directory, sub, name), relative, folder, limit,
                                  int(stamp) if stamp.isdigit() else None)
                item.key = _key("maildir", os.path.relpath(directory, root), unique)
                item.origin["source"] = root
                yield item
    if not found:
        raise SourceError("Maildir %s: expected cur/ and new/ in it or below it, found none" % root)


def _maildir_folder(relative):
    if relative == ".":
        return "INBOX"
    parts = []
    for part in relative.split(os.sep):
        parts += [p for p in part.split(".") if p] if part.startswith(".") else [part]
    return "/".join(parts)


def read_eml_tree(root, limit=0):
    """Every ``*.eml`` file in a folder tree, the folder it is in recorded."""
    if not os.path.isdir(root):
        raise SourceError("EML folder %s: expected a directory, found none" % root)
    for directory, _subdirs, files in _walk(root):
        folder = os.path.relpath(directory, root)
        for name in sorted(files):
            if name.lower().endswith(".eml"):
                relative = os.path.normpath(os.path.join(folder, name))
                item = _file_item("eml", os.path.join(directory, name), relative, "" if folder == "." else folder, limit)
                item.origin["source"] = root
                yield item


def _walk(root):
    """os.walk in a stable order, which does not follow links out of the tree."""
    for directory, subdirs, files in os.walk(root):
        subdirs.sort()
        yield directory, subdirs, files


# -- Outlook PST, through readpst ------------------------------------------------------------------------------


def read_pst(path, limit=0, readpst="readpst"):
    """The mail in an Outlook PST file, converted by Debian's pst-utils (``readpst -e``).

    A PST holds no MIME: readpst writes each item as a message of its own
    making, with a random MIME boundary.  That boundary is replaced by one
    derived from the message, so the same PST gives the same bytes on every
    run (and a second import finds them already present).  Mail in every
    folder is imported, drafts too (folder ``Drafts``); calendar items,
    contacts, notes and tasks are skipped and counted.
    """
    if not os.path.isfile(path):
        raise SourceError("PST %s: expected a file, found none" % path)
    if not shutil.which(readpst):
        raise SourceError("PST %s: needs %s (Debian's pst-utils), which is not installed" % (path, readpst))
    workdir = tempfile.mkdtemp(prefix="archive-import-pst-")
    try:
        proc = subprocess.run([readpst, "-e", "-b", "-q", "-j", "0", "-o", workdir, os.path.abspath(path)],
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
        if proc.returncode != 0:
            said = " ".join(proc.stdout.decode("utf-8", "replace").split())[:200]
            raise SourceError("PST %s: readpst cannot read it (exit %d: %s)" % (path, proc.returncode, said or "no message"))
        for directory, _subdirs, files in _walk(workdir):
            folder = os.path.relpath(directory, workdir)
            folder = "" if folder == "." else folder.split(os.sep, 1)[1] if os.sep in folder else ""
            for name in sorted(files, key=lambda n: (len(n), n)):
                relative = "%s/%s" % (folder, name) if folder else name
                extension = os.path.splitext(name)[1].lower()
                origin = _origin("pst", path, folder, relative)
                if extension != ".eml":
                    yield Item("skipped", origin, _key("pst", relative), reason="not mail: " + _PST_SKIPPED.get(extension, "a %s file" % extension))
                    continue
                item = _file_item("pst", os.path.join(directory, name), relative, folder, limit)
                item.origin["source"] = path
                if item.status == "message":
                    item.raw = _stable_boundaries(item.raw)
                yield item
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _stable_boundaries(raw):
    """readpst's random boundaries replaced by numbers derived from the message itself."""
    numbers = []
    for match in _PST_BOUNDARY.finditer(raw):
        if match.group(1) not in numbers:
            numbers.append(match.group(1))
    if not numbers:
        return raw
    digest = int(hashlib.sha256(_PST_BOUNDARY.sub(b"iamunique-_-_-", raw)).hexdigest()[:12], 16)
    stable = dict((number, str(digest + i).encode("ascii")) for i, number in enumerate(numbers))
    return _PST_BOUNDARY.sub(lambda m: b"iamunique-" + stable[m.group(1)] + b"_-_-", raw)


# -- IMAP ------------------------------------------------------------------------------------------------------


def read_imap(url, username, password, folders=None, cafile=None, limit=0, timeout=60, retries=3):
    """The messages in an IMAP account's folders (all, or ``folders``), over TLS only.

    ``url`` is imaps://host[:993] (TLS from the start) or imap://host[:143]
    (STARTTLS, required).  Messages are read with BODY.PEEK[], so none is
    marked as read, in UID order, with their internal date.  A connection
    that drops is opened again (``retries`` times in a row) and the folder
    goes on after the last message read; a login that fails raises
    SourceError.  OAuth2 (Microsoft 365, Gmail) is not supported: use an
    app password.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("imaps", "imap") or not parts.hostname:
        raise SourceError("IMAP %s: expected imaps://host[:port] or imap://host[:port] (STARTTLS)" % url)
    account = "%s@%s" % (username, parts.hostname)
    context = ssl.create_default_context(cafile=cafile)
    session = _ImapSession(parts, username, password, context, timeout, account)
    try:
        session.connect()
        names = session.folders() if not folders else list(folders)
        for folder in names:
            yield from _imap_folder(session, folder, limit, retries)
    finally:
        session.close()


class _ImapSession(object):
    def __init__(self, parts, username, password, context, timeout, account):
        self.parts, self.username, self.password = parts, username, password
        self.context, self.timeout, self.account = context, timeout, account
        self.conn = None

    def connect(self):
        host, secure = self.parts.hostname, self.parts.scheme == "imaps"
        port = self.parts.port or (993 if secure else 143)
        where = "IMAP %s" % self.account
        try:
            if secure:
                conn = imaplib.IMAP4_SSL(host, port, ssl_context=self.context, timeout=self.timeout)
            else:
                conn = imaplib.IMAP4(host, port, timeout=self.timeout)
                conn.starttls(ssl_context=self.context)
        except (OSError, imaplib.IMAP4.error) as exc:
            raise SourceError("%s: cannot connect to %s:%d over TLS: %s" % (where, host, port, exc)) from None
        try:
            conn.login(unquote(self.username), self.password)
        except imaplib.IMAP4.error as exc:
            conn.logout()
            raise SourceError("%s: login failed: %s" % (where, _text(exc.args[0] if exc.args else exc))) from None
        self.conn = conn

    def close(self):
        if self.conn is not None:
            try:
                self.conn.logout()
            except (OSError, imaplib.IMAP4.error):
                pass
            self.conn = None

    def folders(self):
        typ, lines = self.conn.list()
        if typ != "OK":
            raise SourceError("IMAP %s: LIST failed: %s" % (self.account, _text(lines)))
        names = []
        for line in lines:
            match = _IMAP_LIST.match(line or b"")
            if match and b"\\noselect" not in match.group("flags").lower():
                names.append(_imap_utf7_decode(match.group("name").strip().strip(b'"')))
        return names


def _imap_folder(session, folder, limit, retries):
    """The messages of one folder, after UID ``done`` when the connection had to be opened again."""
    done, failures = 0, 0
    while True:
        try:
            for item in _imap_fetch(session, folder, limit, done):
                done = int(item.origin["position"].split()[-1])
                failures = 0
                yield item
            return
        except (OSError, imaplib.IMAP4.abort) as exc:
            failures += 1
            origin = _origin("imap", session.account, folder, "after UID %d" % done)
            if failures > retries:
                yield Item("failed", origin, _key("imap", session.account, folder, "rest", done),
                           reason="connection lost: %d times in a row (%s); the rest of the folder "
                                  "is left for the next run" % (failures, _text(exc)))
                return
            session.close()
            try:
                session.connect()
            except SourceError as again:
                yield Item("failed", origin, _key("imap", session.account, folder, "rest", done),
                           reason="connection lost: %s, and not opened again: %s" % (_text(exc), again))
                return
        except imaplib.IMAP4.error as exc:
            yield Item("failed", _origin("imap", session.account, folder, ""), _key("imap", session.account, folder),
                       reason="unreadable folder: %s" % _text(exc))
            return


def _imap_fetch(session, folder, limit, after):
    conn = session.conn
    typ, data = conn.select(_imap_quote(folder), readonly=True)
    if typ != "OK":
        raise imaplib.IMAP4.error("SELECT: %s" % _text(data))
    validity = (conn.response("UIDVALIDITY")[1] or [b"0"])[0]
    typ, data = conn.uid("SEARCH", None, "UID %d:*" % (after + 1))
    uids = [int(u) for u in (data[0] or b"").split() if int(u) > after]
    for start in range(0, len(uids), _IMAP_FETCH_CHUNK):
        chunk = uids[start:start + _IMAP_FETCH_CHUNK]
        typ, data = conn.uid("FETCH", ",".join(map(str, chunk)), "(UID RFC822.SIZE INTERNALDATE BODY.PEEK[])")
        if typ != "OK":
            raise imaplib.IMAP4.error("FETCH: %s" % _text(data))
        fetched = {}
        for entry in data:
            if isinstance(entry, tuple):
                head = entry[0]
                uid = int(re.search(rb"UID (\d+)", head).group(1))
                fetched[uid] = (entry[1], imaplib.Internaldate2tuple(head))
        for uid in chunk:
            origin = _origin("imap", session.account, folder, "UID %d" % uid)
            key = _key("imap", session.account, folder, _text(validity), uid)
            if uid not in fetched:
                yield Item("failed", origin, key, reason="no body: the server returned none")
                continue
            raw, internal = fetched[uid]
            yield _checked(Item("message", origin, key, raw, int(time.mktime(internal)) if internal else None), limit)


def _imap_quote(folder):
    return '"%s"' % _imap_utf7_encode(folder).replace("\\", "\\\\").replace('"', '\\"')


def _imap_utf7_decode(name):
    """A mailbox name in IMAP's modified UTF-7 (RFC 3501 5.1.3) as text."""
    out, parts = [], name.split(b"&")
    out.append(parts[0].decode("ascii", "replace"))
    for part in parts[1:]:
        encoded, _dash, rest = part.partition(b"-")
        if not encoded:
            out.append("&")
        else:
            out.append(("+" + encoded.decode("ascii").replace(",", "/") + "-").encode("ascii").decode("utf-7"))
        out.append(rest.decode("ascii", "replace"))
    return "".join(out)


def _imap_utf7_encode(name):
    out, pending = [], []

    def flush():
        if pending:
            encoded = "".join(pending).encode("utf-7").decode("ascii")
            out.append("&" + encoded[1:].rstrip("-").replace("/", ",") + "-")
            del pending[:]
    for char in name:
        if 0x20 <= ord(char) <= 0x7e:
            flush()
            out.append("&-" if char == "&" else char)
        else:
            pending.append(char)
    flush()
    return "".join(out)


def _text(value):
    if isinstance(value, (list, tuple)):
        value = b" ".join(v if isinstance(v, bytes) else str(v).encode() for v in value)
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return " ".join(str(value).split())[:200]


KINDS = ("mbox", "maildir", "eml", "imap", "pst")


def read(kind, location, limit=0, mbox_format="mboxrd", username="", password="", folders=None, cafile=None):
    """The items of one source: ``kind`` is one of KINDS, ``location`` its file, folder or imaps:// URL."""
    if kind == "mbox":
        return read_mbox(location, mbox_format, limit)
    if kind == "maildir":
        return read_maildir(location, limit)
    if kind == "eml":
        return read_eml_tree(location, limit)
    if kind == "pst":
        return read_pst(location, limit)
    if kind == "imap":
        return read_imap(location, username, password, folders, cafile, limit)
    raise SourceError("%s: expected a source kind of %s, found %r" % (location, ", ".join(KINDS), kind))


def size_of(kind, location):
    """The source's bytes, for a progress bar's ETA; None when unknown before reading (IMAP, PST)."""
    try:
        if kind == "mbox":
            return os.path.getsize(location)
        if kind in ("maildir", "eml"):
            return sum(os.path.getsize(os.path.join(d, f)) for d, _s, files in os.walk(location) for f in files)
    except OSError:
        return None
    return None
