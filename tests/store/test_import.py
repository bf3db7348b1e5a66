"""Importing old mail (src/archive_common/importer.py, mailsources.py, the CLI) into two real served stores.

Sources are real files made here (mbox in both conventions, Maildir++, .eml trees), the shared
corpus's Outlook PST through Debian's readpst, and Debian's dovecot as the IMAP server (imap_server.py).
"""

import email.utils
import hashlib
import json
import os
import signal
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from archive_common import importer, mailsources
from archive_common.client import ArchiveApi, ArchiveApiError
from helpers import CORPUS, ROOT, store_environment, wait_until
from archive_store.access import token_hash
from storeenv import StoreEnv

PST = CORPUS / "pst" / "support.pst"
CLI = ROOT / "scripts" / "mailarchive-import"
LIMIT = 52000000


def message(number, body="Hello.\n", date="Mon, 02 Feb 2015 14:38:11 +0100", eol="\n", extra=""):
    text = (f"From: Sender {number} <sender{number}@example.org>\nTo: rcpt@example.com\n"
            f"Subject: import test {number}\nDate: {date}\nMessage-ID: <import{number}@example.org>\n{extra}\n{body}")
    return text.replace("\n", eol).encode()


@pytest.fixture
def site(tmp_path):
    """Two served stores (server_id 0 and 1) sharing one importer token, and a site file for the CLI."""
    envs = [StoreEnv(tmp_path / f"w{server_id}", server_id=server_id) for server_id in (0, 1)]
    for env in envs[1:]:
        env.clients_path.write_text(env.clients_path.read_text().replace(token_hash(env.import_token),
                                                                         token_hash(envs[0].import_token)))
        env.import_token = envs[0].import_token
    for env in envs:
        env.serve()
    token_file = tmp_path / "import.token"
    token_file.write_text(envs[0].import_token)
    yield Site(envs, tmp_path / "site.json", token_file, tmp_path / "state")
    for env in envs:
        env.stop()


class Site:
    def __init__(self, envs, site_file, token_file, state_dir):
        self.envs, self.site_file, self.token_file, self.state_dir = envs, site_file, token_file, state_dir

    def write_site_file(self):
        """The CLI's site file, naming the workers' current ports."""
        self.site_file.write_text(json.dumps({"token_file": str(self.token_file), "max_message_bytes": LIMIT, "workers": [
            {"name": f"worker{e.server_id}", "url": e.url, "server_id": e.server_id, "ca_file": str(e.ca.cert_file)}
            for e in self.envs]}))

    def apis(self, token=None):
        return [ArchiveApi(f"worker{e.server_id}", e.url, token or self.envs[0].import_token, timeout=60,
                           cafile=str(e.ca.cert_file)) for e in self.envs]

    def run(self, kind, location, **options):
        """Import in this process; return (summary, state file)."""
        state_file = importer.state_path(str(self.state_dir), kind, str(location))
        state = importer.State(state_file)
        try:
            items = mailsources.read(kind, str(location), limit=options.pop("limit", LIMIT), **options)
            summary = importer.Importer(self.apis(), state).run(items, stop_on=(mailsources.SourceError,))
        finally:
            state.close()
        return summary, state_file

    def cli(self, *args, wait=True):
        self.write_site_file()
        argv = [str(CLI), "--site", str(self.site_file), "--state-dir", str(self.state_dir), "--no-progress", *map(str, args)]
        if not wait:
            # A command started in the background by a script inherits SIGINT ignored: give Ctrl-C back.
            return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=store_environment(),
                                    preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        return subprocess.run(argv, capture_output=True, text=True, env=store_environment(), timeout=600, check=False)

    def stored(self):
        """{sha256: (worker, metadata)} of every message in the site, and the count of rows (to see duplicates)."""
        found, rows = {}, 0
        for env in self.envs:
            store = env.store(readonly=True)
            try:
                for archive_id in store.index.all_ids():
                    row = store.index.get(archive_id)
                    row["transit"] = store.index.transit(archive_id)
                    found[row["sha256"]] = (env.server_id, row)
                    rows += 1
            finally:
                store.close()
        return found, rows

    def raw(self, sha):
        server_id, row = self.stored()[0][sha]
        store = self.envs[server_id].store(readonly=True)
        try:
            return store.get_raw(row["id"])
        finally:
            store.close()


def sha(data):
    return hashlib.sha256(data).hexdigest()


def mbox(messages, fmt):
    """An mbox file's bytes: each message after a From line, quoted the format's way, and an empty line."""
    out = []
    for number, raw in enumerate(messages):
        out.append(b"From sender%d@example.org Mon Feb  2 14:38:11 2015\n" % number)
        for line in raw.splitlines(keepends=True):
            quote = line.lstrip(b">").startswith(b"From ") if fmt == "mboxrd" else line.startswith(b"From ")
            out.append(b">" + line if quote else line)
        out.append(b"\n")
    return b"".join(out)


# -- sources, bytes and metadata ----------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["mboxrd", "mboxo"])
def test_mbox_messages_are_archived_byte_for_byte_with_their_from_lines_unquoted(site, tmp_path, fmt):
    bodies = ["Plain.\n", "From the start of a line.\n", ">From quoted once by the sender.\n" if fmt == "mboxrd" else "x\n",
              "Line one\r\nCRLF line ends\r\n", "Ends with empty lines.\n\n\n"]
    messages = [message(n, body) for n, body in enumerate(bodies)]
    path = tmp_path / f"old.{fmt}"
    path.write_bytes(mbox(messages, fmt))
    summary, _state = site.run("mbox", path, mbox_format=fmt)
    assert (summary.read, summary.imported, summary.present, sum(summary.failed.values())) == (5, 5, 0, 0), summary.lines()
    stored, rows = site.stored()
    assert rows == 5 and set(stored) == {sha(m) for m in messages}
    for raw in messages:
        assert site.raw(sha(raw)) == raw
    # Spread over both workers by digest.
    assert {worker for worker, _row in stored.values()} == {0, 1}


def test_imported_mail_is_marked_with_its_source_and_kept_from_its_own_date(site, tmp_path):
    old = message(1, date="Thu, 01 Jan 2015 10:00:00 +0000")
    undated = b"From: a@example.org\nSubject: no date header\n\nbody\n"
    path = tmp_path / "dated.mbox"
    path.write_bytes(mbox([old, undated], "mboxrd"))
    site.run("mbox", path)
    stored, _rows = site.stored()
    days = site.envs[0].config().retention_days * 86400
    _worker, row = stored[sha(old)]
    assert row["retain_until"] == int(datetime(2015, 1, 1, 10, tzinfo=timezone.utc).timestamp()) + days
    assert row["transit"][0].startswith(f"imported by importer from mbox {path} position message 1 at byte 0;"), row["transit"]
    # The API says so, for the web interface's message page.
    env = site.envs[_worker]
    meta = ArchiveApi("w", env.url, env.token, cafile=str(env.ca.cert_file)).message(row["id"])
    assert meta["imported_from"] == row["transit"][0][len("imported "):]
    assert meta["imported_from"].startswith(f"by importer from mbox {path} position message 1 at byte 0;")
    # Without a Date header, the mbox From line's time counts.
    _worker, row = stored[sha(undated)]
    assert row["retain_until"] == int(datetime(2015, 2, 2, 14, 38, 11, tzinfo=timezone.utc).timestamp()) + days
    # Searchable like journaled mail.
    hits = [r for e in site.envs for r in _search(e, "subject:import")]
    assert [h["sha256"] for h in hits] == [sha(old)]


def _search(env, query):
    store = env.store(readonly=True)
    try:
        return store.index.search(query)
    finally:
        store.close()


def test_maildir_plus_plus_folders_are_recorded_and_a_second_run_finds_everything_present(site, tmp_path):
    root = tmp_path / "Maildir"
    placed = {}
    for folder, sub, name in [("", "cur", "1420106400.M1P1.host:2,S"), ("", "new", "1420106401.M2P1.host"),
                              (".Sent", "cur", "1420106402.M3P1.host:2,RS"), (".Lists.team", "cur", "1420106403.M4P1.host:2,")]:
        for part in ("cur", "new", "tmp"):
            (root / folder / part).mkdir(parents=True, exist_ok=True)
        raw = message(len(placed), body=f"In {folder or 'INBOX'}.\n")
        (root / folder / sub / name).write_bytes(raw)
        placed[sha(raw)] = {"": "INBOX", ".Sent": "Sent", ".Lists.team": "Lists/team"}[folder]
    (root / "cur" / ".hidden").write_bytes(b"not mail")
    summary, _state = site.run("maildir", root)
    assert (summary.read, summary.imported) == (4, 4), summary.lines()
    stored, _rows = site.stored()
    for digest, folder in placed.items():
        assert f" folder {folder} " in stored[digest][1]["transit"][0]
    # A flag changed in the mail client renames the file: it is still the same message.
    flagged = next((root / ".Lists.team" / "cur").iterdir())
    flagged.rename(flagged.with_name(flagged.name + "S"))
    again, _state = site.run("maildir", root)
    assert (again.read, again.imported, again.present) == (4, 0, 4), again.lines()


def test_bad_input_is_reported_one_line_each_and_everything_readable_is_imported(site, tmp_path):
    tree = tmp_path / "eml"
    (tree / "2015" / "q1").mkdir(parents=True)
    good = [message(n) for n in range(3)]
    for number, raw in enumerate(good):
        (tree / "2015" / "q1" / f"{number}.eml").write_bytes(raw)
    (tree / "nul.eml").write_bytes(message(9)[:40] + b"\0\0binary")
    (tree / "empty.eml").write_bytes(b"")
    with open(tree / "huge.eml", "wb") as handle:  # 60 MB, above the store's limit
        handle.write(message(10, body=""))
        line = b"x" * 998 + b"\n"
        for _line in range(60 * 1000):
            handle.write(line)
    (tree / "notes.txt").write_bytes(b"not an .eml file")
    result = site.cli("eml", tree)
    assert result.returncode == 1, result.stdout
    summary = result.stdout.splitlines()[0]
    assert summary == "read 6, imported 3 (0.0 MB), already present 0, skipped 1, failed 2", result.stdout
    failures = Path(result.stdout.split("failures listed in ")[1].strip()).read_text().splitlines()
    assert len(failures) == 2
    assert any(f.startswith(f"eml {tree} position huge.eml: too large: more than the limit of {LIMIT}") for f in failures), failures
    assert any(f.startswith(f"eml {tree} position nul.eml: NUL bytes: the first at offset 40") for f in failures), failures
    assert set(site.stored()[0]) == {sha(m) for m in good}


def test_a_truncated_mbox_fails_only_its_last_message(site, tmp_path):
    messages = [message(n) for n in range(3)]
    data = mbox(messages, "mboxrd")
    path = tmp_path / "cut.mbox"
    path.write_bytes(data[:-30])
    summary, state_file = site.run("mbox", path)
    assert (summary.imported, dict(summary.failed)) == (2, {"truncated": 1}), summary.lines()
    failure = Path(state_file + ".failures").read_text().strip()
    start = data.rindex(b"From sender2")
    assert failure == f"mbox {path} position message 3 at byte {start}: truncated: the file ends inside this message"


def test_a_source_that_cannot_be_read_stops_with_one_line(site, tmp_path):
    not_mbox = tmp_path / "notes.txt"
    not_mbox.write_bytes(b"Dear diary\n")
    result = site.cli("mbox", not_mbox)
    assert result.returncode == 1
    assert f"stopped: mbox {not_mbox}: expected a 'From ' line first" in result.stdout, result.stdout
    bad_pst = tmp_path / "broken.pst"
    bad_pst.write_bytes(b"!BDN" + os.urandom(4000))
    result = site.cli("pst", bad_pst)
    assert result.returncode == 1
    assert f"stopped: PST {bad_pst}: readpst cannot read it (exit" in result.stdout, result.stdout


# -- Outlook PST -------------------------------------------------------------------------------------


def test_the_shared_pst_imports_all_17_messages_findable_by_subject_and_sender(site, tmp_path):
    result = site.cli("pst", PST)
    assert result.returncode == 0, result.stdout
    assert result.stdout.splitlines()[0].startswith("read 17, imported 17"), result.stdout
    stored, rows = site.stored()
    assert rows == 17
    folders = sorted(row["transit"][0].split(" folder ")[1].split(" position")[0] for _w, row in stored.values())
    assert folders == ["Drafts"] * 6 + ["Sent Messages"] * 11
    subjects = [row["subject"] for _w, row in stored.values()]
    assert "Release 9.5.2" in subjects
    # Each found by its subject and by its sender through the store's search.
    for _worker, row in stored.values():
        words = " ".join(f"subject:{w}" for w in row["subject"].replace('"', " ").split() if w.isalnum())
        assert row["id"] in {h["id"] for e in site.envs for h in _search(e, words)}, row["subject"]
        sender = email.utils.parseaddr(row["hdr_from"])[1]
        assert row["id"] in {h["id"] for e in site.envs for h in _search(e, f"from:{sender}")}, sender
    assert len([h for e in site.envs for h in _search(e, "from:support@hackingteam.com")]) == 14
    # The Bcc recipients a sent message kept are its recipients: to: finds it.
    hidden = "tulum@tutanota.de"
    with_bcc = [row["id"] for _w, row in stored.values() if hidden in row["env_to"]]
    assert with_bcc and {h["id"] for e in site.envs for h in _search(e, f"to:{hidden}")} == set(with_bcc)
    # Byte for byte what the importer read: the converted messages' digests are the stored ones.
    converted = {sha(item.raw) for item in mailsources.read_pst(str(PST)) if item.status == "message"}
    assert converted == set(stored)
    # readpst's random MIME boundaries were made stable: a second run finds all 17 present.
    again = site.cli("pst", PST, "--state-dir", tmp_path / "fresh-state")
    assert again.stdout.splitlines()[0].startswith("read 17, imported 0 (0.0 MB), already present 17"), again.stdout


# -- the site: duplicates, resume, lost workers ------------------------------------------------------


def test_bytes_already_journaled_anywhere_in_the_site_are_not_imported(site, tmp_path):
    raw = message(1, eol="\r\n")
    site.envs[1].deliver(raw)
    wait_until(lambda: sha(raw) in site.stored()[0], "the journaled message")
    eml = tmp_path / "eml"
    eml.mkdir()
    (eml / "journaled.eml").write_bytes(raw)
    (eml / "new.eml").write_bytes(message(2, eol="\r\n"))
    summary, _state = site.run("eml", eml)
    assert (summary.imported, summary.present) == (1, 1), summary.lines()
    assert site.stored()[1] == 2


def test_an_importer_killed_halfway_through_5000_messages_goes_on_without_duplicates(site, tmp_path):
    messages = [message(n, body=f"Message {n}.\n" + "Lorem ipsum dolor sit amet.\n" * 40) for n in range(5000)]
    path = tmp_path / "big.mbox"
    path.write_bytes(mbox(messages, "mboxrd"))
    state_file = Path(importer.state_path(str(site.state_dir), "mbox", str(path)))
    first = site.cli("mbox", path, wait=False)

    def halfway():
        return state_file.exists() and state_file.read_bytes().count(b"\n") >= 2000
    wait_until(halfway, "the importer to commit 2,000 messages", timeout=300)
    first.send_signal(signal.SIGKILL)
    first.wait()
    committed = state_file.read_bytes().count(b"\n")
    assert committed < 5000
    second = site.cli("mbox", path)
    assert second.returncode == 0, second.stdout
    read, imported = second.stdout.split(",")[:2]
    present = int(second.stdout.split("already present ")[1].split(",")[0])
    assert read == "read 5000" and present >= committed, second.stdout
    assert int(imported.split()[1]) + present == 5000
    stored, rows = site.stored()
    assert rows == 5000 and set(stored) == {sha(m) for m in messages}


def test_two_sources_with_the_same_layout_are_both_imported(site, tmp_path):
    """Keys name positions within a source (an .eml's relative path): a second folder laid out like the first is
    imported, not taken for the first one's messages."""
    for name, start in (("first", 0), ("second", 10)):
        folder = tmp_path / name
        folder.mkdir()
        for number in range(3):
            (folder / f"{number}.eml").write_bytes(message(start + number))
        result = site.cli("eml", folder)
        assert result.stdout.splitlines()[0].startswith("read 3, imported 3 (0.0 MB), already present 0"), result.stdout
    stored, rows = site.stored()
    assert rows == 6


def test_ctrl_c_and_a_lost_worker_stop_cleanly_and_the_next_run_goes_on(site, tmp_path):
    # Enough messages (30 batches) that the first committed batch leaves most of the run to interrupt.
    messages = [message(n, body="x\n" * 500) for n in range(6000)]
    path = tmp_path / "stop.mbox"
    path.write_bytes(mbox(messages, "mboxrd"))
    state_file = Path(importer.state_path(str(site.state_dir), "mbox", str(path)))
    run = site.cli("mbox", path, wait=False)
    wait_until(lambda: state_file.exists() and state_file.read_bytes().count(b"\n"), "a first batch committed", interval=0.02)
    run.send_signal(signal.SIGINT)
    out = run.communicate(timeout=120)[0].decode()
    assert run.returncode == 1 and "stopped: interrupted (Ctrl-C); run the same command again to go on" in out, out
    # A worker lost in the middle of the next run stops it with its name.
    site.envs[1].stop()
    lost = site.cli("mbox", path)
    assert lost.returncode == 1 and "stopped: worker worker1 " in lost.stdout, lost.stdout
    site.envs[1].serve()
    done = site.cli("mbox", path)
    assert done.returncode == 0, done.stdout
    stored, rows = site.stored()
    assert rows == 6000 and set(stored) == {sha(m) for m in messages}


# -- the store's import endpoint ---------------------------------------------------------------------------


def test_the_import_endpoint_needs_the_import_scope_and_refuses_bad_batches_in_one_line(site):
    env = site.envs[0]
    reader = ArchiveApi("worker0", env.url, env.read_token, cafile=str(env.ca.cert_file))
    item = {"raw": message(1), "sha256": sha(message(1)), "key": "k1", "dated": None,
            "origin": {"kind": "eml", "source": "x", "folder": "", "position": "1"}}
    with pytest.raises(ArchiveApiError, match="HTTP 403: client reader lacks the scope 'import'"):
        reader.import_batch([item])
    api = site.apis()[0]
    with pytest.raises(ArchiveApiError, match="HTTP 400: import: message 0: its bytes do not match"):
        api.import_batch([dict(item, sha256="0" * 64)])
    with pytest.raises(ArchiveApiError, match="HTTP 400: import: message 0: expected a key"):
        api.import_batch([dict(item, key="../etc")])
    assert api.import_batch([item])[0]["status"] == "stored"
    # The same key again (an answer lost on the way back): committed before, not stored twice.
    assert api.import_batch([item])[0]["status"] == "committed-before"
    # The same key from another source (keys name positions within a source) is another message, stored.
    other = dict(item, raw=message(2), sha256=sha(message(2)))
    assert api.import_batch([other])[0]["status"] == "stored"
    assert "import" in env.access_log.read_text()


def test_an_expired_license_refuses_imports_with_the_reason(site):
    env = site.envs[0]
    env.stop()
    env.license_path.write_text(__import__("storeenv").license_line(0, expiry=int(time.time()) - 86400) + "\n")
    env.serve()
    item = {"raw": message(1), "sha256": sha(message(1)), "key": "k1", "dated": None,
            "origin": {"kind": "eml", "source": "x", "folder": "", "position": "1"}}
    with pytest.raises(ArchiveApiError, match="HTTP 503: .*expired"):
        site.apis()[0].import_batch([item])


# -- IMAP ------------------------------------------------------------------------------------------------


@pytest.fixture
def imap(tmp_path, site):
    from imap_server import ImapServer, available

    if not available():
        pytest.skip("needs Debian's dovecot-imapd (make deps-import) and root, to serve mail as nobody")
    server = ImapServer(site.envs[0].ca)
    yield server
    server.stop()


def test_imap_folders_are_imported_over_tls_with_internal_dates_and_a_dropped_connection_goes_on(site, imap, tmp_path):
    from imap_server import CuttingProxy

    placed = {}
    for number in range(60):
        folder = ("INBOX", "Sent", "Projects.2015")[number % 3]
        raw = message(number, body="y\n" * 400, eol="\r\n")
        imap.place(folder, f"14201064{number:02d}.M{number}P1.old", raw)
        placed[sha(raw)] = folder  # as the server names it, with its hierarchy delimiter
    imap.start()
    password_file = tmp_path / "pw"
    password_file.write_text(imap.password)
    proxy = CuttingProxy(imap.port, cut_after=40000)
    url = f"imaps://127.0.0.1:{proxy.port}"
    result = site.cli("imap", url, "--username", imap.user, "--password-file", password_file,
                      "--imap-cafile", site.envs[0].ca.cert_file)
    assert result.returncode == 0, result.stdout + imap.log()
    assert result.stdout.startswith("read 60, imported 60"), result.stdout
    assert proxy.connections >= 2, "the proxy never cut the connection"
    stored, rows = site.stored()
    assert rows == 60
    for digest, folder in placed.items():
        assert f"from imap {imap.user}@127.0.0.1 folder {folder} position UID " in stored[digest][1]["transit"][0]
    # A wrong password: one line naming the account.
    password_file.write_text("wrong")
    wrong = site.cli("imap", f"imaps://127.0.0.1:{imap.port}", "--username", imap.user, "--password-file", password_file,
                     "--imap-cafile", site.envs[0].ca.cert_file)
    assert wrong.returncode == 1 and f"stopped: IMAP {imap.user}@127.0.0.1: login failed" in wrong.stdout, wrong.stdout
