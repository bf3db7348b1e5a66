"""Each attachment stored once (archive_store/blobs.py): exact reassembly, shared blobs, removal, kill -9,
the conversion of messages stored whole, and the orphan check."""

import base64
import hashlib
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings, strategies as st

from archive_store import blobs
from archive_store.spool import Arrival
from helpers import store_environment
from storeenv import StoreEnv, corpus_files

THRESHOLD = 64

# -- generated MIME messages -----------------------------------------------------------------------------

SHARED = [os.urandom(n) for n in (100, 3000, 70000)]  # attachments that recur across messages
EOLS = [b"\r\n", b"\n"]


@st.composite
def base64_body(draw, data):
    """``data`` in base64 as some encoder wrote it: a line length, a line end, line ends after it, and now
    and then something no encoder of ours would write (uneven lines, white space, bad padding)."""
    text = base64.b64encode(data)
    width = draw(st.sampled_from([76, 72, 64, 60, 4, 1000]))
    eol = draw(st.sampled_from(EOLS))
    body = eol.join(text[i:i + width] for i in range(0, len(text), width)) + eol * draw(st.integers(0, 2))
    quirk = draw(st.sampled_from(["none"] * 6 + ["space", "short line", "mixed eol", "no padding", "junk"]))
    if quirk == "space":
        body = body.replace(eol, b" " + eol, 1)
    elif quirk == "short line" and len(text) > 2 * width:
        body = body.replace(eol, eol + eol, 1)
    elif quirk == "mixed eol" and eol in body:
        body = body.replace(eol, b"\n" if eol == b"\r\n" else b"\r\n", 1)
    elif quirk == "no padding":
        body = body.replace(b"=", b"")
    elif quirk == "junk":
        body = body + b"!!"
    return body


@st.composite
def entity(draw, depth=0):
    """A MIME entity (headers and body) as bytes, with line ends of its own choosing."""
    eol = draw(st.sampled_from(EOLS))
    kind = draw(st.sampled_from(["leaf", "leaf", "multipart", "message"] if depth < 3 else ["leaf"]))
    if kind == "multipart":
        boundary = b"b%d-%d" % (depth, draw(st.integers(0, 999)))
        parts = draw(st.lists(entity(depth + 1), min_size=1, max_size=4))
        body = b"preamble" + eol + b"".join(eol + b"--" + boundary + eol + part for part in parts)
        body += eol + b"--" + boundary + b"--" + eol + draw(st.sampled_from([b"", b"epilogue" + eol]))
        return b"Content-Type: multipart/mixed; boundary=\"" + boundary + b"\"" + eol + eol + body
    if kind == "message":
        return b"Content-Type: message/rfc822" + eol + eol + b"Subject: inner" + eol + draw(entity(depth + 1))
    data = draw(st.one_of(st.sampled_from(SHARED), st.binary(min_size=0, max_size=3000)))
    encoding = draw(st.sampled_from(["base64", "base64", "base64", "7bit"]))
    if encoding == "7bit":
        return b"Content-Type: text/plain" + eol + eol + base64.b16encode(data[:200]) + eol
    return (b"Content-Type: application/octet-stream" + eol + b"Content-Transfer-Encoding: "
            + draw(st.sampled_from([b"base64", b"BASE64", b" base64 "])) + eol + eol + draw(base64_body(data)))


_env = StoreEnv(Path(tempfile.mkdtemp(prefix="archive-blobs-")))
_env.write_conf(blob_min_bytes=THRESHOLD)
_store = _env.store()


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(entity())
def test_generated_mime_reads_back_byte_for_byte(raw):
    message = b"From: a@example.org\r\nSubject: generated\r\n" + raw
    [outcome] = _store.ingest([Arrival(raw=message, spool_name=f"g{hashlib.sha256(message).hexdigest()}-{os.urandom(4).hex()}")])
    assert _store.get_raw(outcome.archive_id) == message
    _store.verify(outcome.archive_id)
    skeleton, references, bodies = blobs.split(message, THRESHOLD)
    assert blobs.join(skeleton, references, bodies.__getitem__) == message


def test_the_generated_messages_shared_their_attachments_and_nothing_leaked():
    """Runs after the property test (same module store): blobs are fewer than the references to them."""
    rows = _store.index.blob_rows()
    assert _store.blob_problems() == []
    assert len(rows) >= 3 and sum(rows.values()) > len(rows), rows  # the shared ones were referred to more than once


# -- one worker's store ---------------------------------------------------------------------------------


def with_attachment(number, data, eol=b"\r\n", width=76):
    text = base64.b64encode(data)
    body = eol.join(text[i:i + width] for i in range(0, len(text), width)) + eol
    return eol.join([b"From: a@example.org", b"Subject: report %d" % number, b"Message-ID: <blob%d@example.org>" % number,
                     b"MIME-Version: 1.0", b'Content-Type: multipart/mixed; boundary="xx"', b"", b"--xx",
                     b"Content-Type: text/plain", b"", b"see attached %d" % number, b"--xx",
                     b"Content-Type: application/pdf", b"Content-Transfer-Encoding: base64", b"", body + b"--xx--", b""])


def ingest(store, raws):
    return [o.archive_id for o in store.ingest([Arrival(raw=r, spool_name=f"s{n}-{os.urandom(4).hex()}") for n, r in enumerate(raws)])]


def test_a_shared_attachment_is_stored_once_and_removed_with_its_last_message(env):
    store = env.store()
    pdf = os.urandom(50000)
    first, second = ingest(store, [with_attachment(1, pdf), with_attachment(2, pdf, eol=b"\n", width=64)])
    sha = hashlib.sha256(pdf).hexdigest()
    assert list(store.objects.all_blobs()) == [sha] and store.index.blob_rows() == {sha: 2}
    assert store.objects.path_for(first).stat().st_size < 5000  # the object holds the skeleton only
    assert store.get_raw(second) == with_attachment(2, pdf, eol=b"\n", width=64)
    store.remove(first)
    assert store.index.blob_rows() == {sha: 1} and store.get_raw(second) == with_attachment(2, pdf, eol=b"\n", width=64)
    store.remove(second)
    assert list(store.objects.all_blobs()) == [] and store.index.blob_rows() == {}
    assert store.blob_problems() == []


def test_a_missing_or_stray_blob_is_reported_by_verify_and_the_check_command(env):
    store = env.store()
    [archive_id] = ingest(store, [with_attachment(3, os.urandom(20000))])
    [sha] = store.objects.all_blobs()
    assert env.cli("blobs").stdout.decode().strip() == "1 blobs, 1 references from messages; 0 unreferenced blobs, 0 missing blobs"
    stray = "ab" * 32
    store.objects.write_blob(stray, b"x")
    sealed = store.objects.read_blob(sha)
    store.objects.delete_blob(sha)
    check = env.cli("blobs", check=False)
    assert check.returncode == 1
    assert check.stdout.decode().splitlines()[-1] == "1 blobs, 1 references from messages; 1 unreferenced blobs, 1 missing blobs"
    verify = env.cli("verify", "--all", check=False).stdout.decode()
    assert f"FAIL id {archive_id}: blob {sha}: expected at" in verify and f"FAIL blob {sha}: referred to by 1 messages" in verify
    assert f"FAIL blob {stray}: on disk" in verify
    store.objects.write_blob(sha, sealed)
    store.objects.delete_blob(stray)
    assert env.cli("verify", "--all").returncode == 0


def run(env, *args, crash_at=None):
    environment = store_environment()
    if crash_at:
        environment["ARCHIVE_STORE_CRASH_AT"] = crash_at
    return subprocess.run([sys.executable, "-m", "archive_store", "-c", str(env.conf_path), *args],
                          env=environment, capture_output=True, check=False, timeout=300)


REMOVE = ("import sys\nfrom archive_store import config, retention\nfrom archive_store.store import Store\n"
          "store = Store(config.load(sys.argv[1]))\n"
          "for archive_id in sys.argv[2:]:\n"
          "    retention.audit(store.config.audit_log, 'purge', id=archive_id, reason='test')\n"
          "    store.remove(archive_id)\n")


def test_kill_9_while_ingesting_and_removing_loses_and_leaks_nothing(env):
    env.write_conf(batch_size=10)
    pool = [os.urandom(5000 + n) for n in range(6)]
    sent, attachments = {}, set()
    for number in range(60):
        attachment = pool[number % len(pool)] if number % 3 else os.urandom(6000)
        raw = with_attachment(number, attachment)
        env.deliver(raw)
        sent[hashlib.sha256(raw).hexdigest()] = raw
        attachments.add(hashlib.sha256(attachment).hexdigest())
    for crash_at in ("blob:2", "intent:2", "object:5", "committed:1", "blob:1"):
        assert run(env, "drain", crash_at=crash_at).returncode == -signal.SIGKILL, crash_at
    assert run(env, "drain").returncode == 0
    store = env.store()
    assert {hashlib.sha256(store.get_raw(i)).hexdigest() for i in store.index.all_ids()} == set(sent)
    assert store.blob_problems() == [] and set(store.objects.all_blobs()) == attachments
    # Removals killed between deleting a message's object and deleting the blobs it was the last to use.
    ids = store.index.all_ids()
    store.close()
    for crash_at in ("removed:4", "removed:9"):
        proc = subprocess.run([sys.executable, "-c", REMOVE, str(env.conf_path), *ids], env=dict(
            store_environment(), ARCHIVE_STORE_CRASH_AT=crash_at), capture_output=True, check=False, timeout=300)
        assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-500:]
        store = env.store()  # a start finishes what the removal left
        assert store.blob_problems() == []
        ids = store.index.all_ids()
        assert all(hashlib.sha256(store.get_raw(i)).hexdigest() in sent for i in ids) and len(ids) < 60
        store.close()
    proc = subprocess.run([sys.executable, "-c", REMOVE, str(env.conf_path), *ids], env=store_environment(),
                          capture_output=True, check=False, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()[-500:]
    store = env.store()
    assert store.index.all_ids() == [] and list(store.objects.all_blobs()) == [] and store.blob_problems() == []


def test_messages_stored_whole_are_converted_in_place_resumably_and_verified(env):
    env.write_conf(blob_min_bytes=0)
    store = env.store()
    raws = [f.read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n") for f in corpus_files()]
    stored = dict(zip(ingest(store, raws), raws))
    assert list(store.objects.all_blobs()) == []
    before = sum(store.objects.path_for(i).stat().st_size for i in stored)
    store.close()
    env.write_conf(blob_min_bytes=1024)  # the corpus's attachments are small: 1 kB cuts most of them
    assert run(env, "convert", "--batch", "20", crash_at="converted:5").returncode == -signal.SIGKILL
    out = run(env, "convert", "--batch", "20")
    assert out.returncode == 0, out.stderr.decode()
    assert out.stdout.decode().splitlines()[-1].startswith(f"{len(stored)} of {len(stored)} messages looked at:")
    store = env.store()
    for archive_id, raw in stored.items():
        assert store.get_raw(archive_id) == raw
    after = sum(store.objects.path_for(i).stat().st_size for i in stored)
    assert after < before and store.blob_problems() == []
    assert run(env, "verify", "--all").returncode == 0
    again = run(env, "convert").stdout.decode()
    assert ": 0 converted" in again


def test_reindex_rebuilds_the_references_from_the_objects_alone(env):
    store = env.store()
    pdf = os.urandom(30000)
    raws = [with_attachment(n, pdf if n % 2 else os.urandom(9000)) for n in range(6)]
    ids = ingest(store, raws)
    before = store.index.blob_rows()
    assert store.reindex() == 6
    assert store.index.blob_rows() == before and before[hashlib.sha256(pdf).hexdigest()] == 3
    assert [store.get_raw(i) for i in ids] == raws and store.blob_problems() == []
    store.remove(ids[1])  # the references still count: the shared blob stays for the other two
    assert store.index.blob_rows()[hashlib.sha256(pdf).hexdigest()] == 2 and store.get_raw(ids[3]) == raws[3]


def test_a_restore_from_an_index_snapshot_and_later_objects_keeps_every_blob_referred_to(env):
    """A backup's index snapshot is taken first, its objects and blobs after (the backup role): messages
    stored in between are on disk but not in the snapshot. After the restore, reindex --missing gives them
    their references, and nothing is missing or unreferenced."""
    store = env.store()
    shared = os.urandom(20000)
    first = ingest(store, [with_attachment(n, shared if n % 2 else os.urandom(7000)) for n in range(4)])
    assert env.cli("snapshot", "--out", str(env.base / "index.snapshot")).returncode == 0
    later = ingest(store, [with_attachment(10 + n, shared if n % 2 else os.urandom(7000)) for n in range(4)])
    expected = {i: store.get_raw(i) for i in first + later}
    rows = store.index.blob_rows()
    store.close()
    env.put_back_snapshot(env.base / "index.snapshot")
    assert env.cli("reindex", "--missing").returncode == 0
    store = env.store()
    assert {i: store.get_raw(i) for i in first + later} == expected
    assert store.index.blob_rows() == rows and store.blob_problems() == []
