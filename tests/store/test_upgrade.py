"""Upgrade: a store written by the previous release (its code taken from the repository's history) is opened by
this one without losing a message, and ``reindex`` gives its old messages what this release indexes."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from journal import ENVELOPE, journal_report
from storeenv import corpus_files
from test_search_depth import CASES, WORD

ROOT = Path(__file__).resolve().parents[2]
# The last commit before attachment text and journal envelopes changed the index (its columns).
PREVIOUS_RELEASE = "b674ff1cc887e9765dcdbd4e358350bcdf72fb41"


@pytest.fixture
def previous_src(tmp_path):
    """src/ of the previous release, from git."""
    known = subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e", PREVIOUS_RELEASE + "^{commit}"],
                           capture_output=True, check=False)
    if known.returncode != 0:
        pytest.skip(f"the previous release ({PREVIOUS_RELEASE[:10]}) is not in this checkout's history (a shallow clone?)")
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", PREVIOUS_RELEASE, "src"], capture_output=True, check=True).stdout
    (tmp_path / "previous").mkdir()
    subprocess.run(["tar", "-x", "-C", str(tmp_path / "previous")], input=archive, check=True)
    return tmp_path / "previous" / "src"


def test_a_store_of_the_previous_release_upgrades_without_losing_a_message(env, tmp_path, previous_src):
    mail = {path.name: path.read_bytes() for path in corpus_files()}
    mail["contract.eml"] = CASES["pdf"]()
    mail["journal.eml"] = journal_report(ENVELOPE)
    folder = tmp_path / "mail"
    folder.mkdir()
    for name, raw in mail.items():
        (folder / name).write_bytes(raw)
    old = subprocess.run([sys.executable, "-m", "archive_store", "-c", str(env.conf_path), "ingest", *sorted(map(str, folder.iterdir()))],
                         env={"PYTHONPATH": str(previous_src), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True, check=False)
    assert old.returncode == 0, old.stderr
    digests = {hashlib.sha256(raw).hexdigest() for raw in mail.values()}

    # Read-only (a search on the command line) it says, in one line, what to do.
    refused = env.cli("search", "Nightingale", check=False)
    assert refused.returncode != 0
    assert "layout 1 of an earlier release; expected 2: run `archive_store reindex`" in refused.stderr.decode(), refused.stderr
    # This release opens it: the index of the earlier layout is rebuilt from the objects, every message is
    # there, and the old messages have what this release indexes (the PDF's text, the report's Bcc).
    store = env.store()
    assert store.index.stats()["messages"] == len(digests)
    assert {store.index.get(i)["sha256"] for i in store.index.all_ids()} == digests
    assert [r["subject"] for r in store.index.search(WORD)] == ["contract"]
    [report] = store.index.search("to:heidi.hidden@example.com")
    assert {r["address"]: r["field"] for r in report["journal"]["recipients"]}["heidi.hidden@example.com"] == "bcc"
    for archive_id in store.index.all_ids():
        assert hashlib.sha256(store.get_raw(archive_id)).hexdigest() == store.index.get(archive_id)["sha256"]
    store.close()
    env.cli("verify", "--all")


def test_the_new_layout_is_prepared_beside_the_running_release_and_taken_at_the_start(env, tmp_path, previous_src):
    """The worker role's upgrade: `reindex --prepare` while the earlier release still ingests; the upgraded
    service takes the prepared index and adds only what was stored since."""
    def previous(*args):
        return subprocess.run([sys.executable, "-m", "archive_store", "-c", str(env.conf_path), *args],
                              env={"PYTHONPATH": str(previous_src), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True, check=False)
    folder = tmp_path / "mail"
    folder.mkdir()
    before, after = corpus_files()[:40], corpus_files()[40:]
    assert previous("ingest", *map(str, before)).returncode == 0
    prepared = env.cli("reindex", "--prepare").stdout.decode()
    assert "prepared layout 2 of the index: 40 messages" in prepared, prepared
    assert (Path(str(env.config().db_path) + ".layout2").stat().st_mode & 0o777) == 0o600, "mail metadata: the store's alone"
    (folder / "journal.eml").write_bytes(journal_report(ENVELOPE))
    assert previous("ingest", *map(str, after), str(folder / "journal.eml")).returncode == 0, "the earlier release goes on"
    # The rolling restart's drain reads the backlog with this release's code from the earlier layout.
    assert json.loads(env.cli("stats").stdout)["messages"] == len(corpus_files()) + 1
    store = env.store()
    assert not Path(str(store.config.db_path) + ".layout2").exists()
    assert store.index.stats()["messages"] == len(corpus_files()) + 1
    assert store.index.search("to:heidi.hidden@example.com"), "a message stored after the index was prepared"
    assert env.cli("reindex", "--prepare").stdout.decode().startswith("index ")
