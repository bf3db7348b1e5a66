"""The clients file: one line per client, token hashes only, scopes; each fault is one line."""

import pytest

from archive_store.access import authenticate, load_clients, token_hash
from archive_store.errors import StoreError

TOKEN = "a" * 64
HASH = token_hash(TOKEN)


def clients(tmp_path, text):
    path = tmp_path / "api.clients"
    path.write_text(text)
    return load_clients(path)


def test_a_token_finds_its_client_and_scopes(tmp_path):
    found = clients(tmp_path, f"# name hash scopes\ncontroller {HASH} read,probes  # the controller\n"
                              f"web1 {token_hash('b' * 64)} read\n")
    client = authenticate(found, f"Bearer {TOKEN}")
    assert (client.name, sorted(client.scopes)) == ("controller", ["probes", "read"])
    assert authenticate(found, "Bearer " + "b" * 64).name == "web1"
    for header in ("", f"Basic {TOKEN}", "Bearer ", f"Bearer {TOKEN[:-1]}", HASH):
        assert authenticate(found, header) is None, header


@pytest.mark.parametrize("text, message", [
    ("controller sha256:abc read\n", "line 1: expected the token's hash as sha256:<64 hex digits>, found 'sha256:abc'"),
    (f"controller {HASH} read,delete\n", "line 1: unknown scope 'delete'; scopes are read, probes, holds, import, metrics, dedupe"),
    (f"controller {HASH}\n", "line 1: expected 'name sha256:<hex> scope,...', found 2 fields"),
    (f"c {HASH} read\nc {HASH} read\n", "line 2: client c is listed twice"),
    (f"bad/name {HASH} read\n", "line 1: expected a client name of letters, digits, '.', '_' or '-', found 'bad/name'"),
    ("# nobody\n", "expected at least one client, found none"),
])
def test_a_faulty_clients_file_is_refused_in_one_line(tmp_path, text, message):
    with pytest.raises(StoreError) as err:
        clients(tmp_path, text)
    assert str(err.value).endswith(message)
    assert "\n" not in str(err.value)


def test_a_missing_clients_file_is_named(tmp_path):
    with pytest.raises(StoreError, match="api.clients: expected it to exist, found nothing"):
        load_clients(tmp_path / "api.clients")
