"""The import_mail module against two real archive stores (see stores.py): the shared PST, check mode, a re-run,
and a source with a bad message."""

import hashlib

import pytest

from archive_common.client import ArchiveApi
from helpers import CORPUS
from stores import StoreSite

PST = CORPUS / "pst" / "support.pst"


@pytest.fixture
def workers(tmp_path):
    stores = []
    for number in range(2):
        (tmp_path / str(number)).mkdir()
        stores.append(StoreSite(tmp_path / str(number), f"w{number}", number))
    yield stores
    for store in stores:
        store.stop()


def args(workers, tmp_path, **over):
    return dict({"kind": "pst", "location": str(PST), "state_dir": str(tmp_path / "state"),
                 "workers": [{"name": w.name, "url": w.url, "server_id": w.server_id, "token": w.token, "ca_file": w.ca_file}
                             for w in workers]}, **over)


def test_a_pst_is_imported_once_and_check_mode_imports_nothing(workers, tmp_path, module):
    checked = module("import_mail", args(workers, tmp_path), check=True)
    assert not checked.get("failed"), checked.get("msg")
    assert checked["summary"]["imported"] == 17 and not checked["changed"]
    assert sum(w.count() for w in workers) == 0

    first = module("import_mail", args(workers, tmp_path))
    assert not first.get("failed"), first.get("msg")
    assert first["changed"] and first["summary"]["imported"] == 17 and first["summary"]["failed_total"] == 0
    assert sum(w.count() for w in workers) == 17

    again = module("import_mail", args(workers, tmp_path))
    assert not again["changed"] and again["summary"]["already_present"] == 17 and again["summary"]["imported"] == 0


def test_a_bad_message_fails_the_task_naming_it_and_the_rest_is_imported(workers, tmp_path, module):
    good = b"From: a@example.org\nSubject: fine\n\nbody\n"
    mbox = tmp_path / "cut.mbox"
    data = (b"From a@example.org Mon Feb  2 14:38:11 2015\n" + good + b"\n"
            b"From b@example.org Mon Feb  2 14:38:12 2015\nFrom: b@example.org\nSubject: cut")
    mbox.write_bytes(data)
    result = module("import_mail", args(workers, tmp_path, kind="mbox", location=str(mbox)))
    assert result["failed"] and result["summary"]["imported"] == 1
    assert result["failures"] == [f"mbox {mbox} position message 2 at byte {data.index(b'From b@')}: "
                                  "truncated: the file ends inside this message"]
    assert result["msg"].startswith(f"1 messages of mbox {mbox} failed")
    assert sum(w.count() for w in workers) == 1
    apis = [ArchiveApi(w.name, w.url, w.token, cafile=w.ca_file) for w in workers]
    found = [(api, row) for api in apis for row in api.search("subject:fine")]
    assert len(found) == 1 and found[0][1]["sha256"] == hashlib.sha256(good).hexdigest()
    assert found[0][0].raw(found[0][1]["id"]) == good
