"""The store receiving mail itself (receiver.py): LMTP from the worker's postfix, SMTP from the gateways.

A real `serve` process and Python's smtplib as the client; a 250 means the message is durable."""

import asyncio
import signal
import smtplib
import ssl
import threading

import pytest
from hypothesis import given, settings, strategies as st

from archive_common.dedupe import delivery
from archive_store.errors import Refused
from archive_store.receiver import Committer, arrival_from_session, arrival_name, read_data
from helpers import wait_until
from storeenv import corpus_files, license_line, wire_form

ARCHIVE = "archive@archive.example.com"
GATEWAY_RECEIVED = (b"Received: from mx.customer.example (mx.customer.example [198.18.0.1])\r\n"
                    b"\tby archive-gw.example.com (Postfix) with ESMTP id 4Abc2\r\n"
                    b"\tfor <archive@archive-gw.example.com>; Sun, 22 Nov 2026 10:00:00 +0000 (UTC)\r\n")
MESSAGE = b"From: a@example.com\r\nTo: b@example.com\r\nSubject: over the wire\r\nMessage-ID: <w@test>\r\n\r\nbody\r\n"


def stuffed(lines):
    return b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n" for line in lines)


def feed_and_read(wire: bytes, chunk: int, limit: int):
    async def run():
        reader = asyncio.StreamReader(limit=limit + 2)
        for start in range(0, len(wire), chunk):
            reader.feed_data(wire[start:start + chunk])
        reader.feed_eof()
        content = await read_data(reader, limit)
        return content, await reader.read()
    return asyncio.run(run())


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=12).map(lambda b: b.replace(b"\r\n", b"rn"))
                | st.sampled_from([b"", b".", b"..", b"a.", b".a", b"\r", b"a\r", b"...", b"\n.", b".\r"]),
                max_size=12),
       st.integers(min_value=1, max_value=9))
def test_read_data_gives_back_every_message_undoing_the_dot_stuffing_and_leaves_what_follows(lines, chunk):
    wire = stuffed(lines) + b".\r\nQUIT\r\n"
    content, rest = feed_and_read(wire, chunk, 1000)
    assert content == b"".join(line + b"\r\n" for line in lines)
    assert rest == b"QUIT\r\n"


def test_read_data_drops_a_message_over_the_limit_and_reads_to_its_end():
    wire = stuffed([b"x" * 70] * 100) + b".\r\nQUIT\r\n"
    content, rest = feed_and_read(wire, 4096, 1000)
    assert content is None and rest == b"QUIT\r\n"


class RecordingIngestor:
    """Stores nothing: records what the committer hands it, and fails the batches it is told to."""

    license_error = ""

    def __init__(self, failures=()):
        self.stored, self.failures = [], list(failures)

    def check_license(self):
        return True

    def store_received(self, arrivals):
        if self.failures:
            raise self.failures.pop(0)
        self.stored.extend(a.raw for a in arrivals)
        return [f"stored {a.raw.decode()}" for a in arrivals]


def committing(ingestor):
    """A committer running in its thread, stopped after the test."""
    committer, stop = Committer(ingestor, batch_size=10), threading.Event()
    thread = threading.Thread(target=committer.run, args=(stop,), daemon=True)
    return committer, stop, thread


def received_message(n):
    return arrival_from_session(b"%d" % n, "journal@example.org", [ARCHIVE], arrival_name("smtp"), [])


def test_a_session_cut_while_it_waits_leaves_its_message_out_and_the_committer_goes_on():
    ingestor = RecordingIngestor()
    committer, stop, thread = committing(ingestor)
    kept, cut = committer.submit(received_message(1)), committer.submit(received_message(2))
    cut.cancel()  # what asyncio's wrap_future does when aiosmtpd cancels the cut session's handler
    thread.start()
    try:
        assert kept.result(timeout=10) == "stored 1"
        assert committer.submit(received_message(3)).result(timeout=10) == "stored 3", "the committer stopped"
    finally:
        stop.set()
        thread.join()
    assert ingestor.stored == [b"1", b"3"], "the cut session's message was stored: its sender sends it again"


def test_an_unforeseen_store_fault_refuses_the_batch_and_the_committer_goes_on():
    ingestor = RecordingIngestor(failures=[RuntimeError("disk on fire")])
    committer, stop, thread = committing(ingestor)
    thread.start()
    try:
        with pytest.raises(Refused, match="store fault: disk on fire"):
            committer.submit(received_message(1)).result(timeout=10)
        assert committer.submit(received_message(2)).result(timeout=10) == "stored 2", "the committer stopped"
    finally:
        stop.set()
        thread.join()


def smtp_client(env, kind="smtp", tls=True):
    port = env.receiver_port(kind)
    if kind == "lmtp":
        client = smtplib.LMTP("127.0.0.1", port, timeout=30)
        client.ehlo("worker0.example.com")
        return client
    client = smtplib.SMTP("127.0.0.1", port, timeout=30)
    client.ehlo("archive-gw.example.com")
    if tls:
        context = env.tls()
        context.check_hostname = False  # the certificate names worker0, the test connects to 127.0.0.1
        client.starttls(context=context)
        client.ehlo("archive-gw.example.com")
    return client


@pytest.fixture
def receiving(env):
    env.serve(receiver={"lmtp_listen": "", "smtp_listen": "", "smtp_clients": "127.0.0.1",
                        "archive_address": ARCHIVE})
    return env


@pytest.mark.parametrize("kind", ["lmtp", "smtp"])
def test_the_corpus_survives_byte_for_byte_with_the_envelope_and_the_gateways_hop_as_metadata(receiving, kind):
    sent = {}
    client = smtp_client(receiving, kind)
    for path in corpus_files():
        raw = wire_form(path.read_bytes())
        rcpt = ["archive+alice=example.com@archive.example.com"] + ([ARCHIVE] if kind == "smtp" else [])
        refused = client.sendmail("journal@example.org", rcpt, GATEWAY_RECEIVED + raw)
        assert refused == {}
        sent[path.name] = raw
    client.quit()
    store = receiving.store(readonly=True)
    ids = store.index.all_ids()
    assert len(ids) == len(sent)
    stored = {store.get_raw(archive_id): store.index.get(archive_id) for archive_id in ids}
    assert set(stored) == set(sent.values()), "every message byte for byte, the gateway's Received header taken off"
    for row in stored.values():
        assert row["env_from"] == "journal@example.org"
        assert "alice@example.com" in row["env_to"]
    hops = store.index.transit(ids[0])
    assert "by archive-gw.example.com (Postfix)" in hops[-1]
    if kind == "smtp":  # the store's own hop, as postfix's smtpd would have recorded it; LMTP's is postfix's
        assert len(hops) == 2 and hops[0].startswith("Received: from archive-gw.example.com ([127.0.0.1]) (using TLSv1."), hops
        assert " (archive-store) with ESMTPS id " in hops[0], hops
        assert delivery(hops)[:2] == ("archive-gw.example.com", "4Abc2"), "the duplicate pass cannot read the hops"
    else:
        assert len(hops) == 1, hops


def test_lmtp_answers_data_once_per_recipient(receiving):
    """smtplib's LMTP client reads one reply after DATA; the second recipient's is read here."""
    client = smtp_client(receiving, "lmtp")
    client.mail("journal@example.org")
    client.rcpt(ARCHIVE)
    client.rcpt("archive+bob=example.com@archive.example.com")
    first = client.data(GATEWAY_RECEIVED + MESSAGE)
    second = client.getreply()
    assert first[0] == second[0] == 250 and first == second
    client.quit()
    [archive_id] = receiving.store(readonly=True).index.all_ids()
    assert "bob@example.com" in receiving.store(readonly=True).index.get(archive_id)["env_to"]


def test_smtp_wants_starttls_before_mail(receiving):
    client = smtp_client(receiving, tls=False)
    code, reply = client.mail("journal@example.org")
    assert code == 530, reply
    client.quit()


def test_a_renewed_certificate_reaches_starttls_on_reload(receiving):
    def served_certificate():
        client = smtp_client(receiving)
        certificate = client.sock.getpeercert(binary_form=True)
        client.quit()
        return certificate

    def leaf(cert_file):
        return ssl.PEM_cert_to_DER_cert(cert_file.read_text().split("-----END CERTIFICATE-----")[0] + "-----END CERTIFICATE-----\n")

    service = receiving.services[-1]
    assert served_certificate() == leaf(receiving.cert_file)
    receiving.ca.issue("worker0")  # the same files, a new key and certificate, as the worker role's renewal writes them
    service.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "reloaded" in service.log(), "the reload", log=service.log)
    assert served_certificate() == leaf(receiving.cert_file), "STARTTLS still offers the old certificate after SIGHUP"
    client = smtp_client(receiving)
    client.sendmail("journal@example.org", [ARCHIVE], MESSAGE)
    client.quit()


def test_only_the_archive_address_is_a_recipient(receiving):
    client = smtp_client(receiving)
    client.mail("journal@example.org")
    code, reply = client.rcpt("someone@example.com")
    assert code == 550 and b"archives mail for archive@archive.example.com only" in reply
    client.quit()


def test_a_client_that_is_no_gateway_may_not_send(env):
    env.serve(receiver={"smtp_listen": "", "smtp_clients": "198.18.20.10", "archive_address": ARCHIVE})
    client = smtp_client(env)
    code, reply = client.mail("journal@example.org")
    assert code == 550 and b"only the archive's gateways" in reply
    client.quit()


def test_a_message_over_the_size_limit_is_refused_whole_and_the_session_goes_on(env):
    env.serve(receiver={"smtp_listen": "", "smtp_clients": "127.0.0.1"}, max_message_bytes=4096)
    client = smtp_client(env)
    large = MESSAGE + b"x" * 5000 + b"\r\n"
    with pytest.raises(smtplib.SMTPSenderRefused) as announced:
        client.sendmail("journal@example.org", [ARCHIVE], large)
    assert announced.value.smtp_code == 552, "the size announced in MAIL FROM (SIZE=) is refused first"
    client.mail("journal@example.org")
    client.rcpt(ARCHIVE)
    assert client.data(large)[0] == 552, "a message larger than announced is read and refused"
    assert client.sendmail("journal@example.org", [ARCHIVE], MESSAGE) == {}
    client.quit()
    assert len(env.store(readonly=True).index.all_ids()) == 1


def test_an_expired_license_answers_4xx_at_mail_and_stores_nothing(receiving):
    receiving.license_path.write_text(license_line(0, expiry=1000000000) + "\n")

    def refused():
        client = smtp_client(receiving, "lmtp")
        code, reply = client.mail("journal@example.org")
        client.quit()
        return reply if code == 451 else None
    reply = wait_until(refused, "the receiver to refuse mail", log=receiving.services[0].log)
    assert b"archive store refuses mail for now" in reply and b"expir" in reply
    assert receiving.store(readonly=True).index.all_ids() == []


def test_concurrent_sessions_are_committed_together_and_each_one_gets_its_250(receiving):
    replies = []

    def session(number):
        client = smtp_client(receiving, "lmtp")
        for index in range(10):
            body = MESSAGE.replace(b"<w@test>", f"<{number}.{index}@test>".encode())
            replies.append(client.sendmail("journal@example.org", [ARCHIVE], GATEWAY_RECEIVED + body))
        client.quit()
    threads = [threading.Thread(target=session, args=(number,)) for number in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert replies == [{}] * 80
    assert len(receiving.store(readonly=True).index.all_ids()) == 80


def stream_until_stopped(receiving, enough, stop_store, prefix, connection_per_message=False):
    """Eight LMTP sessions send numbered messages until ``stop_store()`` ends the store, once ``enough`` were
    answered 250; returns the Message-IDs answered 250."""
    acknowledged, stop = [], threading.Event()

    def session(number):
        client, index = None, 0
        while not stop.is_set():
            message_id = f"<{prefix}{number}.{index}@test>"
            index += 1
            try:
                if client is None or connection_per_message:
                    client = smtp_client(receiving, "lmtp")
                client.sendmail("journal@example.org", [ARCHIVE], GATEWAY_RECEIVED + MESSAGE.replace(b"<w@test>", message_id.encode()))
            except (OSError, smtplib.SMTPException):
                return
            acknowledged.append(message_id)
    threads = [threading.Thread(target=session, args=(number,)) for number in range(8)]
    for thread in threads:
        thread.start()
    wait_until(lambda: len(acknowledged) >= enough, f"{enough} messages acknowledged", timeout=60)
    stop_store()
    stop.set()
    for thread in threads:
        thread.join()
    return acknowledged


def test_a_store_stopped_mid_stream_answers_every_message_it_committed(receiving):
    """SIGTERM (systemctl stop, docker stop) while eight sessions send: each message stored got its 250, each 250
    is stored. A committed message left unanswered would be delivered again by the gateway: a duplicate."""
    def stop_store():
        receiving.services[0].proc.send_signal(signal.SIGTERM)
        receiving.services[0].proc.wait(timeout=30)
    acknowledged = stream_until_stopped(receiving, 200, stop_store, "t")
    store = receiving.store(readonly=True)
    kept = {store.index.get(archive_id)["message_id"] for archive_id in store.index.all_ids()}
    assert set(acknowledged) <= kept, "a message answered 250 is not stored"
    assert kept <= set(acknowledged), f"{len(kept - set(acknowledged))} stored messages never got their 250"


def test_every_message_answered_250_survives_the_store_killed_mid_stream(receiving):
    """SIGKILL while eight sessions send: every message that got its 250 is in the store after the restart."""
    acknowledged = stream_until_stopped(receiving, 100, receiving.services[0].proc.kill, "k", connection_per_message=True)
    receiving.services[0].proc.wait()
    store = receiving.store()
    store.recover()
    kept = {store.index.get(archive_id)["message_id"] for archive_id in store.index.all_ids()}
    missing = set(acknowledged) - kept
    assert not missing, f"{len(missing)} of {len(acknowledged)} acknowledged messages lost"
