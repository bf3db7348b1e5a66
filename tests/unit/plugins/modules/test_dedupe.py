"""The dedupe module against two real archive stores (see stores.py) holding one gateway delivery twice."""

import pytest

from stores import StoreSite, wait_for

RAW = b"From: a@customer.example\r\nTo: b@customer.example\r\nSubject: twice\r\nMessage-ID: <twice@customer.example>\r\n\r\nhi\r\n"


@pytest.fixture
def workers(tmp_path):
    stores = []
    for number in range(2):
        (tmp_path / str(number)).mkdir()
        stores.append(StoreSite(tmp_path / str(number), f"w{number}", number))
    yield stores
    for store in stores:
        store.stop()


def options(workers, **over):
    return dict({"since": -3600, "workers": [{"name": w.name, "url": w.url, "server_id": w.server_id, "token": w.token,
                                              "ca_file": w.ca_file} for w in workers]}, **over)


def test_check_mode_reports_then_a_run_removes_the_second_delivery_and_a_rerun_changes_nothing(workers, module):
    for worker in workers:
        worker.delivered_by_gateway(RAW, "4Kq7")
        wait_for(worker, 1)
    workers[1].delivered_by_gateway(RAW.replace(b"hi", b"other"), "4Kq8")
    wait_for(workers[1], 2)

    checked = module("dedupe", options(workers), check=True)
    assert not checked.get("failed"), checked.get("msg")
    assert checked["changed"] is False and checked["removed"] == []
    assert [(d["kept"]["worker"], d["extra"]["worker"], d["gateway"], d["queue_id"]) for d in checked["duplicates"]] == [
        ("w0", "w1", "gw.test", "4Kq7")]
    assert workers[1].count() == 2

    done = module("dedupe", options(workers))
    assert done["changed"] is True and [r["extra"]["id"] for r in done["removed"]] == [checked["duplicates"][0]["extra"]["id"]]
    assert done["report"]["listed"] == {"w0": 1, "w1": 2}
    assert workers[1].count() == 1 and workers[0].count() == 1

    again = module("dedupe", options(workers))
    assert again["changed"] is False and again["duplicates"] == []


def test_a_window_that_ends_before_it_starts_fails_in_one_line(workers, module):
    result = module("dedupe", options(workers, since=2000000000, until=1000000000))
    assert result["failed"] is True and result["msg"] == "dedupe: since (2000000000) must be before until (1000000000)"
