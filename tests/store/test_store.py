"""Round trips, duplicates, search, verify, reindex, purge and holds."""

import email
import email.policy
import re
import time

import pytest

from archive_common import ids
from archive_store import retention
from archive_store.errors import StoreError
from archive_store.spool import Arrival, from_postfix

from storeenv import corpus_files, wire_form


def _subject_word(raw: bytes):
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    from archive_store.parse import _text

    words = re.findall(r"\w{4,}", _text(msg.get("Subject", "")))
    return words[0] if words else None


@pytest.mark.parametrize("path", corpus_files(), ids=lambda p: p.name)
def test_corpus_file_round_trips_and_is_found_by_subject(env, path):
    raw = path.read_bytes()
    store = env.store()
    [outcome] = store.ingest([Arrival(raw=raw, spool_name=path.name)])
    assert outcome.status == "stored"
    assert ids.server_id_of(outcome.archive_id) == 0
    assert store.get_raw(outcome.archive_id) == raw
    store.verify(outcome.archive_id)
    word = _subject_word(raw)
    if word:
        found = [r["id"] for r in store.index.search(word)]
        assert outcome.archive_id in found, f"subject word {word!r} does not find {path.name}"


def test_whole_corpus_through_the_postfix_spool_is_byte_identical(env):
    files = corpus_files()
    assert len(files) == 75
    sent = {}
    for path in files:
        raw = wire_form(path.read_bytes())
        sent[env.deliver(raw)] = raw
    out = env.cli("drain")
    assert b"drained 75" in out.stdout
    assert not list((env.spool / "new").iterdir())
    store = env.store(readonly=True)
    assert store.index.stats()["messages"] == 75
    for row in (store.index.get(i) for i in store.index.all_ids()):
        raw = store.get_raw(row["id"])
        assert raw in sent.values()
        assert row["env_from"] == "journal@example.org"
    # The CRLF files are the files themselves, byte for byte.
    crlf = [p for p in files if p.read_bytes() == wire_form(p.read_bytes())]
    assert len(crlf) == 69
    stored = {store.get_raw(i) for i in store.index.all_ids()}
    assert all(p.read_bytes() in stored for p in crlf)


def test_transit_headers_are_kept_as_metadata_not_in_the_message(env):
    raw = b"Received: from a.customer.example by b.customer.example (Postfix) with SMTP\r\nSubject: hi\r\n\r\nbody\r\n"
    name = env.deliver(raw)
    data = (env.spool / "new" / name).read_bytes()
    arrival = from_postfix(data, name, env.config().transit_hosts)
    assert arrival.raw == raw
    assert arrival.env_from == "journal@example.org"
    assert arrival.env_to == ["archive@archive.example.com"]
    assert len(arrival.transit) == 2 and "by archive-gw.example.com (Postfix)" in arrival.transit[1]


def test_each_envelope_recipient_is_recorded_once(env):
    """virtual(8) writes X-Original-To and Delivered-To, both the archive's address: one recipient."""
    raw = b"Subject: hi\r\n\r\nbody\r\n"
    data = (b"Return-Path: <journal@example.org>\nX-Original-To: archive@archive.example.com\n"
            b"Delivered-To: archive@archive.example.com\n" + raw.replace(b"\r\n", b"\n"))
    arrival = from_postfix(data, "1.V1I1M1.worker0", env.config().transit_hosts)
    assert arrival.env_to == ["archive@archive.example.com"]
    assert arrival.raw == raw


def test_loading_the_config_makes_no_dns_lookup(env, monkeypatch):
    import socket

    def no_dns(*_args, **_kw):
        raise AssertionError("config.load looked up DNS")
    for name in ("getfqdn", "gethostbyaddr", "gethostbyname", "gethostbyname_ex", "getaddrinfo"):
        monkeypatch.setattr(socket, name, no_dns)
    conf = env.config()
    assert socket.gethostname() in conf.transit_hosts


def test_same_bytes_twice_are_stored_once_and_counted(env):
    raw = b"Message-ID: <a@x>\r\nSubject: twice\r\n\r\nsame\r\n"
    env.deliver(raw)
    env.deliver(raw)
    env.cli("drain")
    store = env.store(readonly=True)
    [row] = store.index.search("twice")
    assert row["arrivals"] == 2
    assert store.index.stats() == {**store.index.stats(), "messages": 1, "arrivals": 2, "duplicate_arrivals": 1}


def test_shared_or_missing_message_ids_never_collapse(env):
    store = env.store()
    batch = [
        Arrival(raw=b"Message-ID: <same@x>\r\nSubject: one\r\n\r\nfirst\r\n", spool_name="a"),
        Arrival(raw=b"Message-ID: <same@x>\r\nSubject: one\r\n\r\nsecond\r\n", spool_name="b"),
        Arrival(raw=b"Subject: none\r\n\r\nthird\r\n", spool_name="c"),
        Arrival(raw=b"Subject: none\r\n\r\nfourth\r\n", spool_name="d"),
    ]
    outcomes = store.ingest(batch)
    assert [o.status for o in outcomes] == ["stored"] * 4
    assert len({o.archive_id for o in outcomes}) == 4
    assert len(store.index.search("msgid:same@x")) == 2


def test_sizes_names_each_held_message_once_across_chunks_and_refuses_a_malformed_id(env):
    store = env.store()
    raws = [b"Message-ID: <size-%d@x>\r\nSubject: size\r\n\r\n%s\r\n" % (n, b"y" * n) for n in range(600)]
    outcomes = store.ingest([Arrival(raw=raw, spool_name=f"s{n}") for n, raw in enumerate(raws)])
    missing = "4" + "0" * 35
    wanted = [o.archive_id for o in outcomes] + [missing, outcomes[0].archive_id]
    assert store.index.sizes(wanted) == {o.archive_id: len(raw) for o, raw in zip(outcomes, raws)}
    assert store.index.sizes([]) == {}
    with pytest.raises(StoreError, match="expected hexadecimal"):
        store.index.sizes(["not-an-id"])


def test_malformed_mail_is_stored_and_what_can_be_indexed_is(env):
    nested = b"Content-Type: multipart/mixed; boundary=b0\r\nSubject: deep nest\r\n\r\n"
    for depth in range(1, 400):
        nested += b"--b%d\r\nContent-Type: multipart/mixed; boundary=b%d\r\n\r\n" % (depth - 1, depth)
    cases = [
        b"",
        b"\x00\x01\x02 not a mail at all",
        b"Subject: \xff\xfe 8bit header\r\nFrom: \xe9t\xe9 <x@y>\r\n\r\nbody with NUL \x00 inside\r\n",
        b"Subject: long line\r\n\r\n" + b"x" * 100_000 + b"\r\n",
        b"Content-Type: multipart/mixed; boundary=never\r\nSubject: unterminated\r\n\r\n"
        b"--never\r\nContent-Type: text/plain; charset=bogus-charset\r\n\r\nhello\r\n",
        nested,
    ]
    store = env.store()
    outcomes = store.ingest([Arrival(raw=raw, spool_name=f"m{i}") for i, raw in enumerate(cases)])
    for raw, outcome in zip(cases, outcomes):
        assert outcome.status == "stored"
        assert store.get_raw(outcome.archive_id) == raw
    assert store.index.search("unterminated")
    assert store.index.search("hello")


def test_search_operators(env):
    store = env.store()
    store.ingest([
        Arrival(raw=b"From: Alice <alice@corp.example>\r\nTo: bob@corp.example\r\nSubject: quarterly budget\r\n"
                    b"Date: Tue, 02 Jan 2024 10:00:00 +0000\r\n\r\nnumbers attached\r\n", spool_name="1"),
        Arrival(raw=b"From: carol@other.example\r\nTo: alice@corp.example\r\nSubject: lunch\r\n"
                    b"Date: Wed, 03 Jul 2024 10:00:00 +0000\r\n\r\nbudget is fine\r\n", spool_name="2"),
    ])

    def subjects(query):
        return sorted(r["subject"] for r in store.index.search(query))

    assert subjects("budget") == ["lunch", "quarterly budget"]
    assert subjects("from:alice@corp.example budget") == ["quarterly budget"]
    assert subjects("to:alice@corp.example") == ["lunch"]
    assert subjects("subject:budget") == ["quarterly budget"]
    assert subjects("budget after:2024-06-01") == ["lunch"]
    assert subjects("budget before:2024-06-01") == ["quarterly budget"]
    assert subjects("quart*") == ["quarterly budget"]
    assert subjects('"is fine"') == ["lunch"]
    with pytest.raises(StoreError, match="unknown field 'colour'"):
        store.index.search("colour:blue")


def test_phrases_exact_addresses_and_fields_in_the_compact_index(env):
    """Layout 2 keeps no positions: a phrase is found by its words, then checked on the candidates' text."""
    store = env.store()
    store.ingest([
        Arrival(raw=b"From: Alice <alice@corp.example>\r\nTo: bob@corp.example\r\nSubject: =?utf-8?q?Prix_d=C3=A9j=C3=A0_vu?=\r\n"
                    b"Content-Type: text/plain; charset=utf-8\r\n\r\nThe floor price is firm.\r\n", spool_name="1"),
        Arrival(raw=b"From: bob.alice@corp.example\r\nTo: carol@corp.example\r\nSubject: price floor\r\n\r\n"
                    b"Is the price a floor, alice?\r\n", spool_name="2"),
    ])

    def subjects(query):
        return sorted(r["subject"] for r in store.index.search(query))

    assert subjects("floor price") == ["Prix d\u00e9j\u00e0 vu", "price floor"]
    assert subjects('"floor price"') == ["Prix d\u00e9j\u00e0 vu"], "the words in this order, adjacent, in the body"
    assert subjects('"price floor"') == ["price floor"], "in the subject"
    assert subjects('subject:"price floor"') == ["price floor"] and subjects('body:"price floor"') == []
    assert subjects("from:alice@corp.example") == ["Prix d\u00e9j\u00e0 vu"], "a whole address, not bob.alice@"
    assert subjects("from:alice") == ["Prix d\u00e9j\u00e0 vu", "price floor"], "a word of the address"
    assert subjects("body:alice") == ["price floor"] and subjects("subject:alice") == []
    assert subjects("deja") == ["Prix d\u00e9j\u00e0 vu"] and subjects("subject:DEJ*") == ["Prix d\u00e9j\u00e0 vu"]
    assert subjects("to:carol@corp.example flo*") == ["price floor"]
    [row] = store.index.search("subject:floor")
    assert subjects(f"msgid:{row['message_id'] or 'none'}") == [] and subjects(f"id:{row['id']}") == ["price floor"]
    with pytest.raises(StoreError, match="expected hexadecimal"):
        store.index.search("sha256:xyz")


def test_search_involving_matches_whole_participant_addresses_only(env):
    store = env.store()
    store.ingest([
        Arrival(raw=b"From: Erin <Erin@Corp.example>\r\nTo: x@corp.example\r\nSubject: hers as sender\r\n\r\nkiwi\r\n",
                spool_name="1"),
        Arrival(raw=b"From: y@corp.example\r\nTo: a@corp.example\r\nCc: \"Smith, E\" <erin@corp.example>\r\n"
                    b"Subject: hers in cc\r\n\r\nkiwi\r\n", spool_name="2"),
        Arrival(raw=b"From: y@corp.example\r\nTo: frank.erin@corp.example\r\nSubject: not hers\r\n\r\nkiwi erin@corp.example\r\n",
                spool_name="3"),
        Arrival(raw=b"From: y@corp.example\r\nTo: list@corp.example\r\nSubject: envelope\r\n\r\nkiwi\r\n",
                spool_name="4", env_to=["erin@corp.example"]),
    ])

    def subjects(query, involving):
        return sorted(r["subject"] for r in store.index.search(query, involving=involving))

    assert subjects("kiwi", ["erin@corp.example"]) == ["envelope", "hers as sender", "hers in cc"]
    assert subjects("", ["<ERIN@corp.example>"]) == ["envelope", "hers as sender", "hers in cc"]
    assert subjects("kiwi", ["frank.erin@corp.example", "nobody@corp.example"]) == ["not hers"]
    assert subjects("kiwi", []) == ["envelope", "hers as sender", "hers in cc", "not hers"]
    [brief] = store.index.search("subject:envelope", brief=True)
    assert brief["env_to"] == ["erin@corp.example"] and "attachments" not in brief and "arrivals" not in brief
    with pytest.raises(StoreError, match="at most 50 participant addresses"):
        store.index.search("kiwi", involving=[f"u{n}@corp.example" for n in range(51)])


def test_verify_detects_a_flipped_byte(env):
    store = env.store()
    [outcome] = store.ingest([Arrival(raw=b"Subject: x\r\n\r\ny\r\n", spool_name="1")])
    assert env.cli("verify", "--all").returncode == 0
    path = store.objects.path_for(outcome.archive_id)
    blob = bytearray(path.read_bytes())
    blob[-5] ^= 0x01
    path.write_bytes(bytes(blob))
    proc = env.cli("verify", "--all", check=False)
    assert proc.returncode == 1
    assert b"authentication tag does not verify" in proc.stdout


def test_reindex_rebuilds_everything_from_objects_alone(env):
    store = env.store()
    files = corpus_files()[:20]
    store.ingest([Arrival(raw=p.read_bytes(), spool_name=p.name, env_from="j@x") for p in files])
    before = {r: store.index.get(r) for r in store.index.all_ids()}
    hits_before = [r["id"] for r in store.index.search("the")]
    store.close()
    for suffix in ("", "-wal", "-shm"):
        path = env.config().db_path.with_name("index.sqlite" + suffix)
        if path.exists():
            path.unlink()
    out = env.cli("reindex")
    assert b"reindexed 20 messages" in out.stdout
    store = env.store(readonly=True)
    after = {r: store.index.get(r) for r in store.index.all_ids()}
    assert after == before
    assert [r["id"] for r in store.index.search("the")] == hits_before


def test_purge_respects_retention_holds_and_audits(env):
    store = env.store()
    old = time.time() - 10 * 365 * 86400
    outcomes = store.ingest([
        Arrival(raw=b"From: keep@corp.example\r\nSubject: held\r\n\r\na\r\n", spool_name="1"),
        Arrival(raw=b"From: gone@corp.example\r\nSubject: expired\r\n\r\nb\r\n", spool_name="2"),
    ], now=old)
    [fresh] = store.ingest([Arrival(raw=b"Subject: fresh\r\n\r\nc\r\n", spool_name="3")])
    store.close()
    env.cli("hold", "add", "keep@corp.example", "--reason", "case 42")
    dry = env.cli("purge", "--dry-run").stdout.decode()
    assert outcomes[1].archive_id in dry and outcomes[0].archive_id not in dry
    env.cli("purge")
    store = env.store(readonly=True)
    assert set(store.index.all_ids()) == {outcomes[0].archive_id, fresh.archive_id}
    assert not store.objects.exists(outcomes[1].archive_id)
    audit = env.config().audit_log.read_text()
    assert '"action": "purge"' in audit and outcomes[1].archive_id in audit
    assert env.cli("verify", "--all").returncode == 0


def test_export_eml_and_mbox(env, tmp_path):
    store = env.store()
    raws = [b"From: a@x\r\nSubject: export me\r\n\r\nFrom the start\r\n", b"Subject: export too\r\n\r\nbody\r\n"]
    store.ingest([Arrival(raw=r, spool_name=str(i)) for i, r in enumerate(raws)])
    env.cli("export", "export", "--out", str(tmp_path / "eml"))
    assert sorted(p.read_bytes() for p in (tmp_path / "eml").iterdir()) == sorted(raws)
    env.cli("export", "export", "--format", "mbox", "--out", str(tmp_path / "out.mbox"))
    import mailbox

    def unquote(msg):  # mboxrd: one '>' was added before every (>*)From line
        return re.sub(rb"(?m)^>(>*From )", rb"\1", msg.as_bytes()).replace(b"\n", b"\r\n")

    got = sorted(unquote(m) for m in mailbox.mbox(str(tmp_path / "out.mbox")))
    assert got == sorted(raws)


def test_ids_are_time_ordered_and_carry_server_id():
    made = [ids.new_id(7) for _n in range(1000)]
    assert made == sorted(made) and len(set(made)) == 1000
    assert all(ids.server_id_of(i) == 7 and len(i) == 36 for i in made)
    assert abs(ids.unix_time_of(made[0]) - time.time()) < 5
    with pytest.raises(ValueError):
        ids.new_id(256)


def test_single_part_fast_path_indexes_exactly_what_the_full_parser_does():
    import dataclasses

    from archive_store import parse

    raws = [p.read_bytes() for p in corpus_files()] + [
        b"Subject: a\r\nContent-Transfer-Encoding: base64\r\n\r\naGVsbG8gd29ybGQ=\r\n",
        b"Subject: q\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nd=E9j=E0 vu\r\n",
        b"Subject: h\r\nContent-Type: text/html\r\n\r\n<p>hi <b>there</b></p>\r\n",
        b"Subject: no body",
    ]
    fast_parse = parse._parse
    for raw in raws:
        fast = dataclasses.asdict(parse.extract(raw))
        parse._parse = lambda data, *_cut_and_body: email.message_from_bytes(data, policy=email.policy.compat32)
        try:
            full = dataclasses.asdict(parse.extract(raw))
        finally:
            parse._parse = fast_parse
        assert fast == full, raw[:60]


def test_verify_all_does_not_flag_a_batch_that_is_being_written(env):
    store = env.store()
    [done] = store.ingest([Arrival(raw=b"Subject: committed\r\n\r\nx\r\n", spool_name="1")])
    # An ingest in another process has written its intent and an object, not yet its rows.
    from archive_common import ids

    in_flight = ids.new_id(0)
    store._write_intent([in_flight])
    store.objects.write(in_flight, store.keys.seal(in_flight, b"{}\n"))
    reader = env.store(readonly=True)
    assert [(i, e) for i, e in reader.verify_all() if e] == []
    # Once that writer is gone without committing, the orphan is reported (and recover() removes it).
    store.intent.unlink()
    assert [i for i, e in reader.verify_all() if e] == [in_flight]
    assert store.recover() == [] and done.archive_id in store.index.all_ids()


def test_snapshot_restore_and_catch_up_with_the_objects(env):
    """A backup's index snapshot is older than the objects backed up after it: reindex --missing closes the gap."""
    store = env.store()
    old = time.time() - 10 * 365 * 86400
    store.ingest([Arrival(raw=b"Subject: expired\r\n\r\nold\r\n", spool_name="old")], now=old)
    store.ingest([Arrival(raw=f"Subject: a{n}\r\n\r\nbody {n}\r\n".encode(), spool_name=f"a{n}") for n in range(9)])
    store.close()
    snapshot = env.base / "index.snapshot"
    env.cli("snapshot", "--out", str(snapshot))
    store = env.store()
    store.ingest([Arrival(raw=f"Subject: b{n}\r\n\r\nlater {n}\r\n".encode(), spool_name=f"b{n}") for n in range(5)])
    [purged] = retention.purge(store, dry_run=False)
    live = sorted(store.index.all_ids())
    store.close()
    env.put_back_snapshot(snapshot)
    assert len(env.store(readonly=True).index.all_ids()) == 10
    out = env.cli("reindex", "--missing")
    assert b"5 messages added, 1 rows removed" in out.stdout
    restored = env.store(readonly=True)
    assert sorted(restored.index.all_ids()) == live and purged["id"] not in live
    assert env.cli("verify", "--all").returncode == 0


def test_merging_a_restored_key_file_keeps_old_objects_readable(env):
    store = env.store()
    [old] = store.ingest([Arrival(raw=b"Subject: before\r\n\r\nsealed with the first key\r\n", spool_name="k1")])
    store.close()
    backup = env.base / "store.key.restored"
    key_file = env.config().key_file
    backup.write_bytes(key_file.read_bytes())
    key_file.unlink()  # the host was rebuilt: the role made a new key
    env.cli("keygen")
    assert env.cli("verify", old.archive_id, check=False).returncode != 0
    out = env.cli("keygen", "--merge", str(backup))
    assert b"1 keys from" in out.stdout
    assert env.cli("verify", old.archive_id).returncode == 0
    store = env.store()
    [new] = store.ingest([Arrival(raw=b"Subject: after\r\n\r\nsealed with the new key\r\n", spool_name="k2")])
    assert store.index.get(new.archive_id)["key_id"] != store.index.get(old.archive_id)["key_id"]
    assert (key_file.stat().st_mode & 0o777) == 0o600
    assert b"0 keys from" in env.cli("keygen", "--merge", str(backup)).stdout


def test_drain_counts_each_spool_file_once_when_a_listing_names_files_already_removed(env):
    """A listing can name files the previous batch's removal deletes a moment later.

    drain lists the spool again when a whole batch had gone (it must not stop
    while mail waits) and counts only the files it read.
    """
    from archive_store.service import Ingestor

    env.write_conf(batch_size=2)
    gone = [env.deliver(b"Subject: first\r\n\r\nx\r\n"), env.deliver(b"Subject: second\r\n\r\nx\r\n")]
    waiting = {env.deliver(b"Subject: third\r\n\r\nx\r\n"), env.deliver(b"Subject: fourth\r\n\r\nx\r\n")}
    for name in gone:
        (env.spool / "new" / name).unlink()
    ingestor = Ingestor(env.config(), env.store())
    listings = []
    real_pending = ingestor.spool.pending

    def stale_first(limit):
        listings.append(limit)
        return gone if len(listings) == 1 else real_pending(limit)

    ingestor.spool.pending = stale_first
    assert ingestor.drain() == 2
    assert len(listings) >= 2, "the batch of vanished files ended the drain"
    assert not {p.name for p in (env.spool / "new").iterdir()} & waiting
    assert ingestor.store.index.stats()["messages"] == 2
