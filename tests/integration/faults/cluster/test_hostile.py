"""Hostile and odd input through the running cluster, each answer checked (make test-faults)."""

import base64
import hashlib
import io
import os
import re
import smtplib
import subprocess
import time
import zipfile

from helpers import CORPUS
from mailflow import archived_since, send_all

FIX_EOLS = re.compile(rb"\r\n|\n|\r")


def wire(raw):
    """What smtplib (any SMTP client) puts on the wire: every line ends in CRLF."""
    raw = FIX_EOLS.sub(b"\r\n", raw)
    return raw if raw.endswith(b"\r\n") else raw + b"\r\n"


def test_every_corpus_file_is_archived_once_byte_identical(site):
    files = sorted(CORPUS.rglob("*.eml"))
    assert len(files) >= 70
    since = int(time.time()) - 2
    sent = [wire(path.read_bytes()) for path in files]
    send_all(site, sent)
    wanted = {hashlib.sha256(raw).hexdigest(): path.name for raw, path in zip(sent, files)}
    found = archived_since(site, since, wanted)
    missing = sorted(name for sha, name in wanted.items() if sha not in found)
    assert missing == [], f"not archived byte-identical: {missing}"
    # A file sent twice (identical bytes) may land on two workers; any other copy is a duplicate.
    assert all(len(found[sha]) <= sum(1 for raw in sent if hashlib.sha256(raw).hexdigest() == sha) for sha in found)
    print(f"corpus: {len(files)} files sent, {len(found)} distinct archived byte-identical")


def nasties():
    token = f"nasty{int(time.time())}"
    zip_bomb = io.BytesIO()
    with zipfile.ZipFile(zip_bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("zeros.bin", b"\0" * 200_000_000)  # 200 MB that deflate to ~200 KB
    nested = b"Content-Type: text/plain\r\n\r\ninnermost\r\n"
    for depth in range(400):
        nested = (f"Content-Type: multipart/mixed; boundary=\"b{depth}\"\r\n\r\n--b{depth}\r\n".encode()
                  + nested + f"\r\n--b{depth}--\r\n".encode())
    parts = b"".join(b"--p\r\nContent-Type: text/plain\r\n\r\npart %d\r\n" % n for n in range(10_000))
    head = f"From: hostile@customer.example\r\nSubject: {token}".encode()
    return token, {
        "no Message-ID": head + b" no id\r\n\r\nbody\r\n",
        "same Message-ID, body 1": head + b" dup\r\nMessage-ID: <dup@" + token.encode() + b">\r\n\r\none\r\n",
        "same Message-ID, body 2": head + b" dup\r\nMessage-ID: <dup@" + token.encode() + b">\r\n\r\ntwo\r\n",
        "NUL bytes": head + b" nul\r\n\r\nbefore\0after\0\0end\r\n",
        "8-bit headers": head + " 8bit Grüße ✓\r\nFrom: Jürgen <j@customer.example>\r\n\r\nbody\r\n".encode(),
        "100k-character line": head + b" long\r\n\r\n" + b"x" * 100_000 + b"\r\n",
        "10,000 MIME parts": head + b" parts\r\nContent-Type: multipart/mixed; boundary=\"p\"\r\n\r\n" + parts + b"--p--\r\n",
        "400 nested multiparts": head + b" nested\r\n" + nested,
        "zip bomb": (head + b" zip\r\nContent-Type: multipart/mixed; boundary=\"z\"\r\n\r\n--z\r\n"
                     b"Content-Type: application/zip; name=\"bomb.zip\"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
                     + base64.encodebytes(zip_bomb.getvalue()).replace(b"\n", b"\r\n") + b"--z--\r\n"),
    }


def test_nasty_messages_are_archived_byte_identical_or_refused_cleanly(site):
    since = int(time.time()) - 2
    token, messages = nasties()
    answers = {}
    with smtplib.SMTP(site.ip[site.gateways[0]], 25, timeout=120) as client:
        client.starttls()
        for name, raw in messages.items():
            try:
                client.sendmail("journal@customer.example", [site.journal_address], raw)
                answers[name] = "accepted"
            except smtplib.SMTPResponseException as exc:
                answers[name] = f"{exc.smtp_code} {exc.smtp_error!r}"
                client.rset()
    print("nasties:", answers)
    accepted = {hashlib.sha256(wire(raw)).hexdigest(): name for name, raw in messages.items() if answers[name] == "accepted"}
    found = archived_since(site, since, accepted)
    assert sorted(name for sha, name in accepted.items() if sha not in found) == []
    assert all(len(workers) == 1 for workers in found.values())
    refused = {name: answer for name, answer in answers.items() if answer != "accepted"}
    assert all(answer.startswith("5") for answer in refused.values()), refused
    # Nothing wedged: every store still ingests and verifies.
    for worker in site.workers:
        out = subprocess.run(["docker", "exec", worker, "archive_store", "verify", "--all"], capture_output=True, text=True,
                             check=False)
        assert out.returncode == 0, out.stdout[-500:]


def sized(tag, number, size, blob):
    """A message of exactly ``size`` bytes on the wire: a text part and a base64 attachment."""
    head = (f"From: big@customer.example\r\nSubject: size {tag} {number}\r\nMessage-ID: <{tag}-{number}@molecule.test>\r\n"
            f"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b{tag}\"\r\n\r\n--b{tag}\r\n"
            f"Content-Type: text/plain\r\n\r\n{tag} {number}\r\n--b{tag}\r\nContent-Type: application/octet-stream\r\n"
            f"Content-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=\"big.bin\"\r\n\r\n").encode()
    tail = f"--b{tag}--\r\n".encode()
    room = size - len(head) - len(tail)
    full, last = divmod(room, 78)  # 76 characters and CRLF a line, then one shorter or longer line
    if last == 1:
        full, last = full - 1, 79
    body = b"".join(blob[n * 76:(n + 1) * 76] + b"\r\n" for n in range(full))
    if last:
        body += blob[full * 76:full * 76 + last - 2] + b"\r\n"
    raw = head + body + tail
    assert len(raw) == size
    return raw


def test_a_message_at_the_size_limit_is_archived_and_one_byte_more_is_refused(site):
    """postfix counts the queue file (envelope records and its own Received header too), so the largest
    message the gateway takes is found by bisection; it must reach a worker and be archived byte-identical
    (the worker's limit must leave room for the gateway's Received header), and one byte more is refused."""
    limit = int(subprocess.run(["docker", "exec", site.gateways[0], "postconf", "-h", "message_size_limit"],
                               capture_output=True, text=True, check=True).stdout)
    since = int(time.time()) - 2
    tag = f"sizelimit{int(time.time())}"
    blob = base64.b64encode(os.urandom(limit * 3 // 4 + 1000))
    answers = {}

    def attempt(size):
        raw = sized(tag, len(answers), size, blob)
        with smtplib.SMTP(site.ip[site.gateways[0]], 25, timeout=300) as client:
            client.starttls()
            try:
                client.sendmail("journal@customer.example", [site.journal_address], raw)
                answers[size] = (250, raw)
            except smtplib.SMTPResponseException as exc:
                answers[size] = (exc.smtp_code, exc.smtp_error)
        return answers[size][0] == 250

    low, high = limit - 16384, limit
    assert attempt(low) and not attempt(high)
    while high - low > 1:
        middle = (low + high) // 2
        if attempt(middle):
            low = middle
        else:
            high = middle
    code, text = answers[high]
    assert code == 552 and b"5.3.4" in text, (code, text)
    accepted = {hashlib.sha256(raw).hexdigest(): size for size, (code, raw) in answers.items() if code == 250}
    found = archived_since(site, since, accepted, timeout=600)
    print(f"size limit {limit}: largest accepted {low} bytes ({limit - low} below the limit), {high} refused: "
          f"{code} {text.decode()!r}; {len(accepted)} accepted probes, {len(found)} archived")
    assert sorted(size for sha, size in accepted.items() if sha not in found) == []
    assert all(len(workers) == 1 for workers in found.values())
