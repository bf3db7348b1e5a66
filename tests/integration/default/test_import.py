"""playbooks/import.yml against the deployed site: the shared PST through the importer's own API client
(its token, its scope, the workers' nftables), once site-wide, next to mail journaled through the gateway."""

import hashlib
import json
import time

from conftest import playbook
from helpers import CORPUS
from mailflow import make_messages, send, wait_archived

PST = CORPUS / "pst" / "support.pst"


def playbook_import(state_dir, kind, location):
    """playbooks/import.yml for one source, with a state directory of the test's own."""
    return playbook("playbooks/import.yml", "-e", f"import_kind={kind}", "-e", f"import_location={location}",
                    "-e", f"import_state_dir={state_dir}")


def test_the_shared_pst_is_imported_once_spread_over_the_workers_and_searchable(site, tmp_path):
    first = playbook_import(tmp_path, "pst", PST)
    assert first.returncode == 0, first.stdout[-3000:]
    assert "read 17, imported 17" in first.stdout, first.stdout[-3000:]
    # The state file names the worker and archive ID of each message; each is there and says where it came from.
    (state,) = [path for path in tmp_path.iterdir() if path.is_file() and not path.name.endswith(".failures")]
    entries = [json.loads(line) for line in state.read_text().splitlines()]
    assert len(entries) == 17 and {entry["status"] for entry in entries} == {"imported"}, entries
    assert {entry["worker"] for entry in entries} == set(site.workers)
    for entry in entries:
        meta = site.client(entry["worker"]).message(entry["id"])
        assert meta["imported_from"].startswith(f"by importer from pst {PST} folder "), meta["imported_from"]
    # The store's search finds them: 14 of the 17 were sent by support@hackingteam.com.
    found = {row["id"] for worker in site.workers for row in site.client(worker).search("from:support@hackingteam.com", 1000)}
    assert len(found & {entry["id"] for entry in entries}) == 14
    # A second run with a fresh state file finds every message by its digest.
    again = playbook_import(tmp_path / "again", "pst", PST)
    assert again.returncode == 0 and "read 17, imported 0 (0.0 MB), already present 17" in again.stdout, again.stdout[-3000:]


def test_mail_journaled_through_the_gateway_is_already_present_for_an_import(site, tmp_path):
    tag = f"imp{int(time.time())}"
    journaled = make_messages(tag, 3)
    send(site.ip[site.gateways[0]], site.journal_address, journaled)
    wanted, found = wait_archived(site, tag, journaled)
    assert wanted <= set(found)
    folder = tmp_path / "eml"
    folder.mkdir()
    for number, raw in enumerate(journaled + make_messages(tag + "new", 2)):
        (folder / f"{number}.eml").write_bytes(raw)
    result = playbook_import(tmp_path, "eml", folder)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "read 5, imported 2 (0.0 MB), already present 3" in result.stdout, result.stdout[-3000:]
    for raw in journaled:
        assert len(found[hashlib.sha256(raw).hexdigest()]) == 1
