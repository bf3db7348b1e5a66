"""Property tests: arbitrary bytes survive the store, and the spool's undo is exact."""

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings, strategies as st

from archive_store.spool import Arrival, from_postfix

from storeenv import StoreEnv

_store_env = StoreEnv(Path(tempfile.mkdtemp(prefix="archive-prop-")))
_store = _store_env.store()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=20000))
def test_arbitrary_bytes_round_trip(raw):
    [outcome] = _store.ingest([Arrival(raw=raw, spool_name=f"p{id(raw)}-{len(raw)}-{hash(raw)}")])
    assert _store.get_raw(outcome.archive_id) == raw
    _store.verify(outcome.archive_id)


wire_lines = st.lists(st.binary(max_size=200).map(lambda b: b.replace(b"\n", b"")), min_size=1, max_size=40)


@settings(max_examples=300, deadline=None)
@given(wire_lines)
def test_postfix_transform_is_undone_exactly(lines):
    # Whatever the sender put on the wire (CRLF lines, bare CRs inside), postfix
    # stores the lines without their CRLF and virtual(8) ends each with LF.
    wire = b"".join(line + b"\r\n" for line in lines)
    delivered = (b"Return-Path: <a@b>\nDelivered-To: archive@archive.example.com\n"
                 b"Received: from x (x [198.18.10.10])\n\tby worker0.example.com (Postfix) with ESMTP id 1\n"
                 b"\tfor <archive@archive.example.com>; Sun, 22 Nov 2026 10:00:01 +0000 (UTC)\n"
                 + b"".join(line + b"\n" for line in lines))
    arrival = from_postfix(delivered, "n", ["worker0.example.com"])
    assert arrival.raw == wire
