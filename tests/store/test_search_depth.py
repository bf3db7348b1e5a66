"""Search depth: the text inside attachments, forwarded messages and journal reports, into one store.

The documents are made by the libraries that write them for real (reportlab, python-docx, openpyxl,
odfpy, all from Debian); RTF and iCalendar are text formats and written here.  Each case hides one
word that appears nowhere but in the attachment.
"""

import io
import json
import subprocess
import time
import zipfile
from email.message import EmailMessage
from email.utils import make_msgid

import pytest

from archive_store import textract
from archive_store.spool import Arrival
from journal import ENVELOPE, journal_report
from storeenv import corpus_files

WORD = "quetzalcoatlus"


def pdf(text):
    from reportlab.pdfgen import canvas

    out = io.BytesIO()
    page = canvas.Canvas(out)
    page.drawString(72, 720, text)
    page.save()
    return out.getvalue()


def docx(text):
    import docx as python_docx

    document = python_docx.Document()
    document.add_heading("Master services agreement", 1)
    paragraph = document.add_paragraph("Clause 7: ")
    paragraph.add_run(text).bold = True  # a run of its own: the word must not be split or glued
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def xlsx(text):
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["item", "amount"])
    sheet.append([text, 1200])
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def odt(text):
    from odf.opendocument import OpenDocumentText
    from odf.text import P

    document = OpenDocumentText()
    document.text.addElement(P(text="Minutes of the board: " + text))
    out = io.BytesIO()
    document.write(out)
    return out.getvalue()


def rtf(text):
    return ("{\\rtf1\\ansi\\deff0{\\fonttbl{\\f0 Times;}}\\f0\\fs24 Settlement terms: " + text + ".\\par}").encode()


def zipped(name, data):
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("readme.txt", "see the contract")
        archive.writestr(name, data)
    return out.getvalue()


def ics(text):
    return ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nUID:1@example.com\r\nSUMMARY:Review of the "
            + text + "\r\n  deal (folded as RFC 5545 folds)\r\nDTSTART:20260101T100000Z\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n").encode()


def message(subject, attachments=(), body="Please find the document attached."):
    msg = EmailMessage()
    msg["From"] = "Legal <legal@example.com>"
    msg["To"] = "counsel@example.org"
    msg["Subject"] = subject
    msg["Date"] = "Mon, 02 Mar 2026 10:00:00 +0000"
    msg["Message-ID"] = make_msgid(domain="example.com")
    msg.set_content(body)
    for name, maintype, subtype, data in attachments:
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return bytes(msg).replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def forwarded(text):
    inner = EmailMessage()
    inner["From"] = "Supplier <sales@supplier.example>"
    inner["To"] = "buyer@example.com"
    inner["Subject"] = "Quote " + text
    inner.set_content("Our best price for the " + text + " order.")
    outer = EmailMessage()
    outer["From"] = "buyer@example.com"
    outer["To"] = "legal@example.com"
    outer["Subject"] = "Fwd: the quote"
    outer.set_content("See below.")
    outer.add_attachment(inner)
    return bytes(outer).replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


CASES = {
    "pdf": lambda: message("contract", [("contract.pdf", "application", "pdf", pdf("The " + WORD + " clause."))]),
    "docx": lambda: message("contract", [("contract.docx", "application", "vnd.openxmlformats-officedocument.wordprocessingml.document",
                                          docx(WORD))]),
    "xlsx": lambda: message("figures", [("figures.xlsx", "application", "vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                                         xlsx(WORD))]),
    "odt": lambda: message("minutes", [("minutes.odt", "application", "vnd.oasis.opendocument.text", odt(WORD))]),
    "rtf": lambda: message("terms", [("terms.rtf", "application", "rtf", rtf(WORD))]),
    "zipped-docx": lambda: message("archive", [("papers.zip", "application", "zip", zipped("contract.docx", docx(WORD)))]),
    "ics": lambda: message("invitation", [("invite.ics", "text", "calendar", ics(WORD))]),
    "html": lambda: message("page", [("page.html", "text", "html", f"<p>The <b>{WORD}</b> page</p>".encode())]),
    "forwarded-rfc822": lambda: forwarded(WORD),
}


def ingest(store, raw, name="m"):
    [outcome] = store.ingest([Arrival(raw=raw, spool_name=name)])
    assert outcome.status == "stored"
    return outcome.archive_id


def ids_for(store, query, **kw):
    return [row["id"] for row in store.index.search(query, **kw)]


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_word_only_inside_an_attachment_finds_its_message(env, case):
    raw = CASES[case]()
    store = env.store()
    archive_id = ingest(store, raw)
    assert store.get_raw(archive_id) == raw
    assert ids_for(store, WORD) == [archive_id], case
    assert ids_for(store, WORD[:8] + "*") == [archive_id], "prefix search"
    row = store.index.get(archive_id)
    if case == "forwarded-rfc822":
        # The forwarded message's headers are part of the text: its sender and subject find it.
        assert ids_for(store, f"body:{WORD} body:sales@supplier.example") == [archive_id]
        assert ids_for(store, "Quote") == [archive_id]
    else:
        assert ids_for(store, f"attachment:{WORD}") == [archive_id]
        assert ids_for(store, f"body:{WORD}") == [], "the word is in the attachment, not the body"
        assert any(a["text_chars"] > 0 and not a["note"] for a in row["attachments"]), row["attachments"]


def test_a_legacy_word_document_from_the_corpus_is_read_by_catdoc(env):
    [path] = [p for p in corpus_files() if p.name == "m0024.eml"]
    raw = path.read_bytes()
    store = env.store()
    archive_id = ingest(store, raw)
    [attachment] = store.index.get(archive_id)["attachments"]
    assert attachment["text_chars"] > 100, attachment
    # A word catdoc reads out of the .doc and that the covering mail does not contain.
    import email
    import email.policy
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    part = next(p for p in msg.walk() if p.get_content_type() == "application/msword")
    text = subprocess.run(["catdoc", "-d", "utf-8", "-"], input=part.get_content(), capture_output=True, check=False).stdout.decode()
    words = [w for w in text.split() if w.isalpha() and len(w) > 6 and w.lower() not in raw.decode("latin-1").lower()]
    assert words, text[:300]
    assert archive_id in ids_for(store, f"attachment:{words[0]}")


def _pdf_stream(dictionary, data):
    return b"<< " + dictionary + b" /Length %d >>\nstream\n" % len(data) + data + b"\nendstream"


def pdf_bomb(levels=6, fan=10):
    """A 10 kB PDF whose one page draws a form that draws a form ... ``fan`` times at each of ``levels``
    levels, the last one 7,800 characters of text: 7.8 billion characters for pdftotext, past any memory
    and CPU-time limit on any machine (poppler keeps every drawn character of a page before it drops the
    duplicates; a page's tiny characters, below 3 points, are capped at 50,000, so these are 10 points)."""
    text = b"BT /F1 10 Tf 5 780 Td\n" + (b"(" + b"z" * 100 + b") Tj 0 -10 Td\n") * 78 + b"ET\n"
    first_form = 5
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>",
               b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R"
               b" /Resources << /XObject << /X %d 0 R >> >> >>" % first_form,
               _pdf_stream(b"", b"/X Do\n")]
    form = b"/Type /XObject /Subtype /Form /BBox [0 0 612 792]"
    for level in range(1, levels):
        objects.append(_pdf_stream(form + b" /Resources << /XObject << /X %d 0 R >> >>" % (first_form + level), b"/X Do\n" * fan))
    objects.append(_pdf_stream(form + b" /Resources << /Font << /F1 %d 0 R >> >>" % (first_form + levels), text))
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % number + body + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for offset in offsets:
        out.write(b"%010d 00000 n \n" % offset)
    out.write(b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref))
    return out.getvalue()


def zip_bomb():
    """Eight members of 64 MB of zeros each: about 500 kB that expand to 512 MB."""
    out = io.BytesIO()
    block = b"\0" * (1 << 20)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for number in range(8):
            with archive.open(f"part{number}.txt", "w", force_zip64=True) as member:
                for _megabyte in range(64):
                    member.write(block)
    return out.getvalue()


def test_a_hostile_pdf_and_a_zip_bomb_are_stored_with_the_defect_noted_within_the_limit(env):
    env.write_conf()
    with open(env.conf_path, "a", encoding="utf-8") as conf:
        conf.write("[extract]\nseconds = 2\nmemory_mb = 256\n")
    store = env.store()
    raw = message("hostile " + WORD, [("manual.pdf", "application", "pdf", pdf_bomb()),
                                      ("backup.zip", "application", "zip", zip_bomb()),
                                      ("notes.docx", "application", "octet-stream", docx("ordinary"))])
    started = time.monotonic()
    archive_id = ingest(store, raw)
    elapsed = time.monotonic() - started
    # Each hostile attachment costs at most its limit (2 s), not the minutes it would take.
    assert elapsed < 20, elapsed
    assert store.get_raw(archive_id) == raw
    attachments = {a["name"]: a for a in store.index.get(archive_id)["attachments"]}
    assert attachments["manual.pdf"]["note"] == "pdftotext died at its memory limit (SIGABRT): not indexed", attachments["manual.pdf"]
    assert "zip bomb" in attachments["backup.zip"]["note"] or "limit" in attachments["backup.zip"]["note"], attachments["backup.zip"]
    # The rest of the message is indexed: its subject, and the ordinary attachment after the hostile ones.
    assert ids_for(store, WORD) == [archive_id]
    assert ids_for(store, "attachment:ordinary") == [archive_id]
    # The pool recovered: the next message's attachment is read as usual.
    other = ingest(store, message("next", [("next.pdf", "application", "pdf", pdf("afterwards fine"))]), "n")
    assert ids_for(store, "afterwards") == [other]


def test_a_tool_stopped_by_its_cpu_time_limit_says_so_and_its_fragment_is_dropped():
    # No address-space limit here (the test's own process): pdftotext runs until its 1 s of CPU time is spent.
    text, note = textract.extract_text("manual.pdf", "application/pdf", pdf_bomb(), 100_000, 1)
    assert (text, note) == ("", "pdftotext ran past its 1 s CPU-time limit: not indexed")


def test_the_attachment_text_of_a_message_is_bounded(env):
    env.write_conf()
    with open(env.conf_path, "a", encoding="utf-8") as conf:
        conf.write("[extract]\ntext_chars = 5000\n")
    store = env.store()
    big = " ".join(f"word{n}" for n in range(5000)).encode()
    archive_id = ingest(store, message("big", [("a.txt", "text", "plain", big), ("b.pdf", "application", "pdf", pdf("latecomer"))]))
    attachments = {a["name"]: a for a in store.index.get(archive_id)["attachments"]}
    assert attachments["a.txt"]["text_chars"] <= 5000 and "cut at 5000" in attachments["a.txt"]["note"]
    assert "text bound" in attachments["b.pdf"]["note"]
    assert ids_for(store, "word10") == [archive_id] and ids_for(store, "word4999") == []


# -- journal reports -----------------------------------------------------------------------------------------------

def test_an_exchange_journal_report_is_found_by_its_bcc_recipient_and_the_original(env):
    raw = journal_report(ENVELOPE)
    store = env.store()
    archive_id = ingest(store, raw)
    assert store.get_raw(archive_id) == raw, "the stored bytes are the report as received"
    assert ids_for(store, "to:heidi.hidden@example.com") == [archive_id]
    assert ids_for(store, "to:frank@example.com") == [archive_id], "an expanded list member"
    assert ids_for(store, "to:ivan@partner.example") == [archive_id], "a forwarded-to address"
    assert ids_for(store, "subject:Nightingale") == [archive_id]
    assert ids_for(store, "floor price") == [archive_id], "the original's body"
    assert ids_for(store, "from:carol@example.com") == [archive_id]
    row = store.index.get(archive_id)
    # The original's headers are the message's.
    assert row["message_id"] == "<orig-1@example.com>" and row["hdr_from"] == "Carol Finance <carol@example.com>"
    assert row["subject"] == "Confidential pricing for Nightingale" and row["date"] == 1772529300
    journal = row["journal"]
    fields = {r["address"]: r for r in journal["recipients"]}
    assert fields["heidi.hidden@example.com"]["field"] == "bcc"
    assert fields["frank@example.com"]["expanded"] == "sales-team@example.com"
    assert fields["ivan@partner.example"]["forwarded"] == "dave@example.com"
    assert journal["sender"] == "carol@example.com" and journal["defects"] == [] and row["parse_error"] == ""
    # The web interface's per-user scope: the Bcc recipient sees it, someone else does not.
    assert ids_for(store, "", involving=["heidi.hidden@example.com"]) == [archive_id]
    assert ids_for(store, "", involving=["mallory@example.com"]) == []
    # The archive's own address (the report's To) is no participant.
    assert "archive@archive-gw.example.com" not in row["env_to"]


def test_a_malformed_journal_report_is_stored_and_indexed_as_well_as_it_can_be(env):
    store = env.store()
    twice = ENVELOPE.replace("Cc: erin@example.com\r\n", "Cc: erin@example.com\r\nBcc: erin@example.com\r\n")
    first = ingest(store, journal_report(twice), "twice")
    row = store.index.get(first)
    assert "recipient erin@example.com listed twice" in row["journal"]["defects"]
    assert row["parse_error"].startswith("journal report: recipient erin@example.com listed twice")
    assert ids_for(store, "to:heidi.hidden@example.com") == [first]
    # No original attached: the report itself is indexed, its envelope still found.
    alone = journal_report(ENVELOPE.replace("heidi.hidden", "ivy.hidden"), original=None)
    second = ingest(store, alone, "alone")
    assert store.get_raw(second) == alone
    assert ids_for(store, "to:ivy.hidden@example.com") == [second]
    assert "no original message" in store.index.get(second)["parse_error"]
    # Garbage in the envelope: noted, nothing lost.
    garbage = ingest(store, journal_report("Sender: carol@example.com\r\nBcc: not an address\r\n\r\n".replace("carol", "zed")), "garbage")
    assert "is not an address" in store.index.get(garbage)["parse_error"]


def test_an_exchange_2003_report_lists_its_recipients_on_one_line(env):
    envelope = ("Sender: carol@example.com\r\nMessage-ID: <orig-1@example.com>\r\n"
                "Recipients: dave@example.com, judy.hidden@example.com\r\n\r\n")
    store = env.store()
    archive_id = ingest(store, journal_report(envelope, exchange2003=True))
    assert ids_for(store, "to:judy.hidden@example.com") == [archive_id]
    assert ids_for(store, "subject:Nightingale") == [archive_id]


# -- envelope recipients -------------------------------------------------------------------------------------------

def test_the_archives_own_addresses_are_not_recipients_and_an_extension_names_the_original(env):
    env.write_conf(own_addresses="archive@archive.example.com archive@archive-gw.example.com")
    store = env.store()
    plain = message("plain")
    [outcome] = store.ingest([Arrival(raw=plain, spool_name="a", env_from="journal@example.org",
                                      env_to=["archive@archive.example.com", "archive@archive-gw.example.com"])])
    assert store.index.get(outcome.archive_id)["env_to"] == []
    # recipient_bcc_maps with an address extension (README: journaling with postfix): the original recipient.
    tagged = message("tagged")
    [outcome] = store.ingest([Arrival(raw=tagged, spool_name="b", env_to=["archive+kim.hidden=example.com@archive.example.com"])])
    assert store.index.get(outcome.archive_id)["env_to"] == ["kim.hidden@example.com"]
    assert ids_for(store, "to:kim.hidden@example.com") == [outcome.archive_id]
    # X-Original-To written by the journaling server.
    supplied = b"X-Original-To: lee.hidden@example.com\r\n" + message("supplied")
    [outcome] = store.ingest([Arrival(raw=supplied, spool_name="c", env_to=["archive@archive.example.com"])])
    assert store.index.get(outcome.archive_id)["env_to"] == ["lee.hidden@example.com"]


def test_copies_of_one_message_for_several_recipients_add_each_recipient(env):
    """recipient_bcc_maps sends the journal one copy per recipient, the same bytes each time: the first copy
    is stored, the others are arrivals of it, and every copy's recipient is one of its recipients."""
    store = env.store()
    raw = message("per-recipient")
    copy = "archive+{}=example.com@archive.example.com".format
    [first] = store.ingest([Arrival(raw=raw, spool_name="r1", env_to=[copy("ann.hidden")])])
    outcomes = store.ingest([Arrival(raw=raw, spool_name="r2", env_to=[copy("bob.hidden")]),
                             Arrival(raw=raw, spool_name="r3", env_to=[copy("cy.hidden"), copy("ann.hidden")])])
    assert [o.status for o in outcomes] == ["duplicate", "duplicate"]
    row = store.index.get(first.archive_id)
    assert row["env_to"] == ["ann.hidden@example.com", "bob.hidden@example.com", "cy.hidden@example.com"] and row["arrivals"] == 3
    for person in ("ann", "bob", "cy"):
        assert ids_for(store, "", involving=[f"{person}.hidden@example.com"]) == [first.archive_id], person
        assert ids_for(store, "document", involving=[f"{person}.hidden@example.com"]) == [first.archive_id], person
        assert ids_for(store, "nowhere", involving=[f"{person}.hidden@example.com"]) == [], person
    assert ids_for(store, "", involving=["dan.hidden@example.com"]) == []
    # Copies in the same batch as the first: indexed together, so to: finds each of them.
    other = message("same batch")
    batch = store.ingest([Arrival(raw=other, spool_name=f"s{n}", env_to=[copy(p)]) for n, p in enumerate(("dee", "eve"))])
    assert [o.status for o in batch] == ["stored", "duplicate"]
    assert ids_for(store, "to:eve@example.com") == [batch[0].archive_id]


# -- upgrade -------------------------------------------------------------------------------------------------------

def test_reindex_reads_attachments_of_messages_stored_before_extraction(env):
    """Messages stored without attachment text (the previous release) gain it with reindex."""
    env.write_conf()
    with open(env.conf_path, "a", encoding="utf-8") as conf:
        conf.write("[extract]\ntext_chars = 0\n")
    store = env.store()
    archive_id = ingest(store, CASES["pdf"]())
    assert ids_for(store, WORD) == []
    store.close()
    env.write_conf()
    env.cli("reindex")
    store = env.store(readonly=True)
    assert ids_for(store, WORD) == [archive_id]
    assert json.dumps(store.index.get(archive_id)["attachments"]).count('"text_chars": 0') == 0
