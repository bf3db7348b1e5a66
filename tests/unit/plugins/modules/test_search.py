"""The search module against three real archive stores (see stores.py): one query, every worker, one answer."""

import socket

import pytest

from stores import StoreSite, wait_for


@pytest.fixture
def workers(tmp_path):
    stores = []
    for number in range(3):
        (tmp_path / str(number)).mkdir()
        stores.append(StoreSite(tmp_path / str(number), f"w{number}", number))
    yield stores
    for store in stores:
        store.stop()


def spec(store, **over):
    return dict({"name": store.name, "url": store.url, "server_id": store.server_id, "token": store.token,
                 "ca_file": store.ca_file}, **over)


def test_one_query_finds_the_newest_matches_on_every_worker_merged_in_time_order(workers, module):
    sent = []  # (worker, Message-ID), oldest first: each is stored before the next is sent
    for number in range(12):
        store = workers[number % 3]
        message_id = f"<fan-{number}@customer.example>"
        words = "quarterly invoice" if number % 2 == 0 else "lunch menu"
        store.deliver(f"From: a{number}@customer.example\r\nMessage-ID: {message_id}\r\nSubject: {words}\r\n\r\n"
                      f"{words} {number}\r\n".encode())
        wait_for(store, number // 3 + 1)
        sent.append((store.name, message_id))
    invoices = [entry for number, entry in enumerate(sent) if number % 2 == 0][::-1]  # newest first

    result = module("search", {"query": "invoice", "limit": 4, "workers": [spec(w) for w in workers]})
    assert not result.get("failed"), result.get("msg")
    assert [(row["worker"], row["message_id"]) for row in result["results"]] == invoices[:4]
    assert result["count"] == 4 and result["changed"] is False
    page2 = module("search", {"query": "invoice", "limit": 4, "offset": 4, "workers": [spec(w) for w in workers]})
    assert [(row["worker"], row["message_id"]) for row in page2["results"]] == invoices[4:]
    sender = module("search", {"query": "from:a3@customer.example", "workers": [spec(w) for w in workers]})
    assert [(row["worker"], row["message_id"]) for row in sender["results"]] == [sent[3]]


def test_a_worker_that_does_not_answer_fails_the_search_naming_it(workers, module):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    broken = [spec(w) for w in workers] + [{"name": "w9", "url": f"https://127.0.0.1:{dead}", "server_id": 9,
                                           "token": "x" * 32}]
    result = module("search", {"query": "invoice", "workers": broken})
    assert result["failed"] is True
    assert result["msg"].startswith("search 'invoice': w9: GET https://127.0.0.1:") and "\n" not in result["msg"]


def test_a_worker_answering_with_another_server_id_is_caught(workers, module):
    workers[0].deliver(b"From: a@customer.example\r\nSubject: invoice\r\n\r\ninvoice\r\n")
    wait_for(workers[0], 1)
    result = module("search", {"query": "invoice", "workers": [spec(workers[0], server_id=7)]})
    assert result["failed"] is True and "do not carry their worker's server_id" in result["msg"]


def test_a_page_beyond_the_store_api_window_is_refused(workers, module):
    result = module("search", {"query": "invoice", "limit": 50, "offset": 990, "workers": [spec(workers[0])]})
    assert result["failed"] is True and "offset + limit at most 1000" in result["msg"]


def test_no_workers_fails_naming_the_option(module):
    """An empty list once crashed in the thread pool with a ValueError."""
    result = module("search", {"query": "invoice", "workers": []})
    assert result["failed"] is True
    assert result["msg"] == "search 'invoice': workers: expected at least one worker, found an empty list"
