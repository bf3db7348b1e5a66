"""Ingest with attachment text on, into one store, on a realistic mix; the same messages with extraction off
as the baseline of the same run.

    /usr/bin/python3 bench/attachments.py            # 3,000 messages
    /usr/bin/python3 bench/attachments.py -n 500     # a quicker look

The mix (printed): every message multipart/alternative (a text body and its HTML); 40 % carry a PDF of
one or two pages, 25 % a DOCX, 10 % both; the documents are written by reportlab and python-docx (Debian)
from a Zipf-like vocabulary, 300 different ones of each kind. Prints msg/s with extraction on and off,
their ratio, the index size against the raw mail for both, and that a word only inside an attachment
is found.
"""

import argparse
import io
import random
import shutil
import sys
import tempfile
import time
from email.message import EmailMessage
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

from search import corpus, setup  # noqa: E402


def pdf(text):
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    out = io.BytesIO()
    page = canvas.Canvas(out, pagesize=A4)
    lines = [text[i:i + 90] for i in range(0, len(text), 90)]
    for number, line in enumerate(lines):
        if number and number % 50 == 0:
            page.showPage()
        page.drawString(40, 800 - 15 * (number % 50), line)
    page.save()
    return out.getvalue()


def docx(text):
    import docx as python_docx

    document = python_docx.Document()
    for start in range(0, len(text), 400):
        document.add_paragraph(text[start:start + 400])
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def documents(rng, words, cum_weights, count):
    pdfs = [pdf(" ".join(rng.choices(words, cum_weights=cum_weights, k=rng.randint(300, 1200)))) for _n in range(count)]
    docxs = [docx(" ".join(rng.choices(words, cum_weights=cum_weights, k=rng.randint(300, 1500)))) for _n in range(count)]
    return pdfs, docxs


def message(rng, words, cum_weights, senders, pdfs, docxs, number):
    msg = EmailMessage()
    msg["From"] = senders[int(rng.paretovariate(1.2)) % len(senders)]
    msg["To"] = ", ".join(rng.sample(senders, rng.randint(1, 3)))
    msg["Subject"] = " ".join(rng.choices(words, cum_weights=cum_weights, k=rng.randint(3, 8)))
    msg["Date"] = "Mon, 02 Mar 2026 10:00:00 +0000"
    msg["Message-ID"] = f"<att-{number}@bench.example>"
    text = " ".join(rng.choices(words, cum_weights=cum_weights, k=rng.randint(40, 300)))
    msg.set_content(text)
    msg.add_alternative(f"<html><body><p>{text}</p></body></html>", subtype="html")
    draw = rng.random()
    if draw < 0.40:
        msg.add_attachment(rng.choice(pdfs), maintype="application", subtype="pdf", filename=f"report-{number}.pdf")
    if 0.30 <= draw < 0.55:
        msg.add_attachment(rng.choice(docxs), maintype="application",
                           subtype="vnd.openxmlformats-officedocument.wordprocessingml.document", filename=f"memo-{number}.docx")
    return bytes(msg)


def load(base, raws, extract):
    from archive_store.spool import Arrival

    store = setup(base)
    if not extract:
        with open(base / "store.conf", "a", encoding="utf-8") as conf:
            conf.write("[extract]\ntext_chars = 0\n")
        store.close()
        store = setup(base)
    started = time.perf_counter()
    for start in range(0, len(raws), 200):
        store.ingest([Arrival(raw=raw, spool_name=f"m{start + n}") for n, raw in enumerate(raws[start:start + 200])])
    elapsed = time.perf_counter() - started
    store.index.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    index_bytes = store.config.db_path.stat().st_size
    return store, elapsed, index_bytes


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--messages", type=int, default=3000)
    args = parser.parse_args()
    rng = random.Random(7)
    words, cum_weights, senders = corpus()
    started = time.perf_counter()
    pdfs, docxs = documents(rng, words, cum_weights, 300)
    raws = [message(rng, words, cum_weights, senders, pdfs, docxs, n) for n in range(args.messages)]
    raw_bytes = sum(map(len, raws))
    with_pdf = sum(b"application/pdf" in r for r in raws)
    with_docx = sum(b"wordprocessingml" in r for r in raws)
    print(f"generated {len(raws)} messages in {time.perf_counter() - started:.0f} s: {raw_bytes / 1e6:.1f} MB "
          f"(mean {raw_bytes / len(raws) / 1000:.1f} kB); {with_pdf} with a PDF, {with_docx} with a DOCX; "
          f"every one text + HTML")
    base = Path(tempfile.mkdtemp(prefix="bench-attachments-"))
    try:
        results = {}
        for extract in (False, True):
            store, elapsed, index_bytes = load(base / ("on" if extract else "off"), raws, extract)
            results[extract] = (len(raws) / elapsed, index_bytes)
            label = "extraction on: " if extract else "extraction off:"
            print(f"{label} {len(raws) / elapsed:7.0f} msg/s  {raw_bytes / elapsed / 1e6:5.1f} MB/s  "
                  f"index {index_bytes / 1e6:6.1f} MB = {index_bytes / raw_bytes:.3f} of the raw mail")
            if extract:
                hits = store.index.search("attachment:" + words[0], limit=1000)
                print(f"attachment:{words[0]} (the commonest word) matches {len(hits)} messages' attachments")
            store.close()
        print(f"ratio on/off: {results[True][0] / results[False][0]:.2f}")
    finally:
        shutil.rmtree(base)


if __name__ == "__main__":
    main()
