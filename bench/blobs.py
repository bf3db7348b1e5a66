"""Each attachment stored once: the disk saved on a generated mail stream where attachments recur, and
ingest and read speed with blobs on and off (the baseline), the same messages in the same run.

    /usr/bin/python3 bench/blobs.py              # 20,000 messages
    /usr/bin/python3 bench/blobs.py -n 2000      # a quicker look

The makeup (printed): every message a text body of 40-200 words; 20 % carry a signature image (one of 8
logos, 4-12 kB); 25 % carry a document of 8-60 kB (random bytes: PDFs and Office files are compressed),
of which half forward one of the documents sent before and half are new; 5 % carry both. Attachments
are base64 in 76-character CRLF lines, as mail clients write them.
"""

import argparse
import base64
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

from search import corpus  # noqa: E402


def attachment(name, content_type, data):
    text = base64.b64encode(data)
    lines = b"\r\n".join(text[i:i + 76] for i in range(0, len(text), 76))
    return (f"--b\r\nContent-Type: {content_type}; name=\"{name}\"\r\nContent-Transfer-Encoding: base64\r\n"
            f"Content-Disposition: attachment; filename=\"{name}\"\r\n\r\n").encode() + lines + b"\r\n"


def messages(count, rng, words, cum_weights, senders):
    """The messages, and (attachments sent, of which repeats)."""
    logos = [rng.randbytes(rng.randint(4000, 12000)) for _n in range(8)]
    documents = []
    sent = repeats = 0
    out = []
    for number in range(count):
        body = " ".join(rng.choices(words, cum_weights=cum_weights, k=rng.randint(40, 200)))
        body = "\r\n".join(body[i:i + 76] for i in range(0, len(body), 76))
        parts = [f"--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n".encode()]
        roll = rng.random()
        if roll < 0.20:
            parts.append(attachment("logo.png", "image/png", rng.choice(logos)))
            sent += 1
            repeats += 1
        if 0.15 <= roll < 0.40:
            if documents and rng.random() < 0.5:
                document = rng.choice(documents)
                repeats += 1
            else:
                document = rng.randbytes(rng.randint(8000, 60000))
                documents.append(document)
            parts.append(attachment(f"report-{number}.pdf", "application/pdf", document))
            sent += 1
        head = (f"From: {rng.choice(senders)}\r\nTo: {rng.choice(senders)}\r\nSubject: blobs {number}\r\n"
                f"Message-ID: <blobs-{number}@bench.example>\r\nMIME-Version: 1.0\r\n"
                "Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n").encode()
        out.append(head + b"".join(parts) + b"--b--\r\n")
    return out, sent, repeats - len(logos)  # a logo's first use is not a repeat


def disk_bytes(path):
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def run(base, raws, threshold):
    from archive_store import config as configuration, crypto
    from archive_store.spool import Arrival
    from archive_store.store import Store

    (base / "spool" / "Maildir" / "new").mkdir(parents=True)
    conf = base / "store.conf"
    conf.write_text(f"[store]\nserver_id = 9\nhostname = archive.example.com\ndata_dir = {base / 'data'}\n"
                    f"spool_dir = {base / 'spool' / 'Maildir'}\nlicense_file = {base / 'license'}\n"
                    f"key_file = {base / 'store.key'}\nblob_min_bytes = {threshold}\n\n[extract]\ntext_chars = 0\n")
    crypto.generate(base / "store.key")
    store = Store(configuration.load(conf))
    started = time.perf_counter()
    ids = []
    for start in range(0, len(raws), 500):
        batch = [Arrival(raw=raw, spool_name=f"b{start + n}") for n, raw in enumerate(raws[start:start + 500])]
        ids += [outcome.archive_id for outcome in store.ingest(batch)]
    ingest = time.perf_counter() - started
    started = time.perf_counter()
    read = sum(len(raw) for _id, raw in store.get_raw_many(ids))
    reading = time.perf_counter() - started
    assert read == sum(map(len, raws))
    blobs = len(list(store.objects.all_blobs()))
    store.close()
    return ingest, reading, disk_bytes(base / "data" / "objects"), blobs


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--messages", type=int, default=20000)
    args = parser.parse_args()
    rng = random.Random(11)
    words, cum_weights, senders = corpus()
    raws, sent, repeats = messages(args.messages, rng, words, cum_weights, senders)
    raw_bytes = sum(map(len, raws))
    print(f"generated {len(raws)} messages: {raw_bytes / 1e6:.1f} MB (mean {raw_bytes / len(raws) / 1000:.1f} kB); "
          f"{sent} attachments, {repeats} of them ({repeats / sent:.0%}) a repeat of one sent before")
    base = Path(tempfile.mkdtemp(prefix="bench-blobs-"))
    try:
        results = {}
        for threshold in (0, 4096):
            ingest, reading, on_disk, blobs = run(base / str(threshold), raws, threshold)
            results[threshold] = (ingest, reading, on_disk)
            label = "whole (blob_min_bytes 0):    " if threshold == 0 else "blobs (blob_min_bytes 4096): "
            print(f"{label}ingest {len(raws) / ingest:6.0f} msg/s {raw_bytes / ingest / 1e6:5.1f} MB/s; read "
                  f"{raw_bytes / reading / 1e6:6.1f} MB/s; on disk {on_disk / 1e6:7.1f} MB = {on_disk / raw_bytes:.3f} of the raw "
                  f"mail ({blobs} blobs)")
        whole, cut = results[0], results[4096]
        print(f"saved {1 - cut[2] / whole[2]:.1%} of the disk; ingest x{whole[0] / cut[0]:.2f} faster, "
              f"read x{whole[1] / cut[1]:.2f} faster with blobs (above 1: blobs are faster)")
    finally:
        shutil.rmtree(base)


if __name__ == "__main__":
    main()
