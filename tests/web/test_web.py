"""The web interface over two real stores: who sees what, reading, exporting, holds, and the audit trail."""

import csv
import hashlib
import io
import json
import mailbox
import re
import sqlite3
import time
import zipfile

from journal import ENVELOPE, journal_report
from webenv import PASSWORD, Browser, add_user, cli


def _text(response):
    return response.get_data(as_text=True)


def _trail(app, action=None):
    from archive_web import context, trail

    with app.app_context():
        return trail.entries(context.database(), action=action or "", limit=0)


def test_a_wrong_password_is_refused_and_the_sixth_fast_attempt_gets_429(app):
    add_user(app, "alice", ["user"], ["alice@example.com"])
    browser = Browser(app)
    for _attempt in range(5):
        response = browser.login("alice", "wrong password, not hers")
        assert response.status_code == 401
        assert "Wrong username or password" in _text(response)
    response = browser.login("alice", PASSWORD)
    assert response.status_code == 429 and "Too many failed logins" in _text(response)
    assert int(response.headers["Retry-After"]) > 0
    # Another address is locked out too, because the throttle counts per user as well as per address.
    assert Browser(app, address="198.18.0.51").login("alice", PASSWORD).status_code == 429
    assert [e["username"] for e in _trail(app, "login_failed")] == ["alice"] * 5
    assert len(_trail(app, "login_throttled")) == 2


def test_the_login_form_needs_its_csrf_token(app):
    add_user(app, "alice", ["user"], ["alice@example.com"])
    browser = Browser(app)
    browser.get("/login")
    response = browser.post("/login", {"username": "alice", "password": PASSWORD, "csrf": "forged"})
    assert response.status_code == 400 and "CSRF" in _text(response)


def test_session_cookie_is_secure_httponly_strict(app):
    add_user(app, "alice", ["user"], ["alice@example.com"])
    response = Browser(app).login("alice")
    assert response.status_code == 302
    cookie = [v for k, v in response.headers.items() if k == "Set-Cookie" and v.startswith("__Host-archive-session=")][0]
    for attribute in ("Secure", "HttpOnly", "SameSite=Strict", "Path=/"):
        assert attribute in cookie


def test_an_auditor_searches_reads_downloads_and_exports(site, app):
    add_user(app, "audrey", ["auditor"])
    first = site.send(0, "quarterly figures", body="the word is marmalade")
    second = site.send(1, "re: quarterly figures", body="more marmalade here")
    site.send(1, "unrelated", body="nothing to see")
    browser = Browser(app)
    browser.login("audrey")
    page = browser.get("/search?q=marmalade")
    assert page.status_code == 200
    assert "re: quarterly figures" in _text(page) and "unrelated" not in _text(page)
    assert _text(page).index("re: quarterly figures") < _text(page).index(">quarterly figures<")  # newest first
    message = browser.get(f"/messages/{first}")
    assert "quarterly figures" in _text(message) and "verified" in _text(message)
    original = browser.get(f"/messages/{first}/original")
    assert original.headers["Content-Disposition"] == f'attachment; filename="{first}.eml"'
    assert hashlib.sha256(original.get_data()).hexdigest() == site.sha256(first)
    export = browser.post("/export", {"q": "marmalade", "format": "mbox"})
    assert export.status_code == 200
    with open(site.base / "export.mbox", "wb") as handle:
        handle.write(export.get_data())
    exported = sorted(m["Message-ID"] for m in mailbox.mbox(str(site.base / "export.mbox")))
    wanted = sorted(line.split(b": ", 1)[1].decode() for i in (first, second) for line in site.sent[i].split(b"\r\n")
                    if line.startswith(b"Message-ID: "))
    assert exported == wanted
    archive = zipfile.ZipFile(io.BytesIO(browser.post("/export", {"id": [first, second], "format": "zip"}).get_data()))
    assert archive.read(f"{first}.eml") == site.sent[first] and archive.read(f"{second}.eml") == site.sent[second]
    manifest = list(csv.DictReader(io.StringIO(archive.read("manifest.csv").decode())))
    assert {(r["archive_id"], r["sha256"], r["verified"]) for r in manifest} == {
        (first, site.sha256(first), "yes"), (second, site.sha256(second), "yes")}
    # The manifest alone lists the query's matches, reading no mail; the audit's manifest digest is the zip's file's.
    listing = list(csv.DictReader(io.StringIO(browser.post("/export", {"q": "marmalade", "format": "manifest"}).get_data().decode())))
    assert sorted(r["archive_id"] for r in listing) == sorted([first, second]) and {r["verified"] for r in listing} == {""}
    zipped = zipfile.ZipFile(io.BytesIO(browser.post("/export", {"q": "marmalade", "format": "zip"}).get_data())).read("manifest.csv")
    assert zipped.startswith(b"archive_id,sha256,message_id,worker,size,verified\r\n") and zipped.count(b"\r\n") == 3
    newest = _trail(app, "export_done")[0]  # newest first
    assert newest["detail"]["format"] == "zip" and newest["detail"]["manifest_sha256"] == hashlib.sha256(zipped).hexdigest()
    actions = [(e["username"], e["action"]) for e in _trail(app)]
    for action in ("login", "search", "view", "download", "export", "export_done"):
        assert ("audrey", action) in actions, action
    # Every message the interface showed is in the worker's own access log under the interface's name.
    logged = [json.loads(line) for line in site.workers[0].access_log.read_text().splitlines()]
    assert any(e["client"] == "ui" and first in e.get("ids", []) and e["endpoint"] == "get raw" for e in logged)


def test_a_user_sees_only_mail_one_of_their_addresses_took_part_in(site, app):
    add_user(app, "erin", ["user"], ["erin@example.com", "e.smith@example.com"])
    mine = site.send(0, "lunch plans", to="team@example.com", cc="E.Smith@Example.com", body="pelican")
    theirs = site.send(1, "board minutes", to="frank.erin@example.com", body="pelican")  # tokens erin example com, not hers
    browser = Browser(app)
    browser.login("erin")
    page = _text(browser.get("/search?q=pelican"))
    assert "lunch plans" in page and "board minutes" not in page
    assert browser.get(f"/messages/{mine}").status_code == 200
    for path in (f"/messages/{theirs}", f"/messages/{theirs}/original", f"/messages/{theirs}/html"):
        assert browser.get(path).status_code == 404
    assert browser.post("/export", {"id": [theirs], "format": "zip"}).status_code == 404
    exported = zipfile.ZipFile(io.BytesIO(browser.post("/export", {"q": "pelican", "format": "zip"}).get_data()))
    assert exported.namelist() == [f"{mine}.eml", "manifest.csv"] and exported.read(f"{mine}.eml") == site.sent[mine]
    denied = _trail(app, "denied")
    assert {e["detail"]["id"] for e in denied} == {theirs} and all(e["username"] == "erin" for e in denied)
    assert browser.get("/audit").status_code == 403  # the trail is for auditors


def test_a_bcc_recipient_of_a_journal_report_sees_it_with_its_envelope(site, app):
    add_user(app, "heidi", ["user"], ["heidi.hidden@example.com"])
    report = site.deliver(0, journal_report(ENVELOPE), "<orig-1@example.com>")
    browser = Browser(app)
    browser.login("heidi")
    assert "Confidential pricing for Nightingale" in _text(browser.get("/search?q=floor"))
    page = _text(browser.get(f"/messages/{report}"))
    assert "Journal envelope" in page and "<th>Bcc</th><td>heidi.hidden@example.com" in page
    assert "frank@example.com (member of sales-team@example.com)" in page


def test_hostile_mail_is_shown_as_text_and_its_html_runs_and_loads_nothing(site, app):
    add_user(app, "audrey", ["auditor"])
    hostile = site.send(0, 'x <b>bold</b> "><script>alert(1)</script>', sender='"<b>Eve</b>" <eve@example.com>',
                        body="plain part", html='<p>Hi <img src="https://tracker.example/p.gif" onerror="alert(2)">'
                             '<script>alert(3)</script><a href="https://phish.example/">click</a></p>')
    browser = Browser(app)
    browser.login("audrey")
    for page in (_text(browser.get("/search?q=plain")), _text(browser.get(f"/messages/{hostile}"))):
        assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
        assert "<b>bold</b>" not in page and "&lt;b&gt;bold&lt;/b&gt;" in page
    frame = browser.get(f"/messages/{hostile}/html")
    body = _text(frame)
    for absent in ("<script", "onerror", "tracker.example", "phish.example", "alert("):
        assert absent not in body, absent
    assert "Hi" in body and "click" in body
    policy = frame.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "sandbox" in policy
    assert "script-src" not in policy  # nothing may run: default-src 'none' covers scripts
    assert "frame-ancestors 'none'" in browser.get("/search").headers["Content-Security-Policy"]


def test_a_worker_that_does_not_answer_is_named_on_the_results_page(site, app):
    add_user(app, "audrey", ["auditor"])
    site.send(0, "still here", body="heron")
    site.workers[1].stop()
    browser = Browser(app)
    browser.login("audrey")
    page = _text(browser.get("/search?q=heron"))
    assert "still here" in page
    assert "These results are incomplete" in page and "worker1" in page
    assert _trail(app, "search")[0]["detail"]["incomplete"] == ["worker1"]
    export = browser.post("/export", {"q": "heron", "format": "mbox"})  # never an export that lacks a worker's mail
    assert export.status_code == 502 and "export refused, not every worker answers: worker1" in _text(export)
    [failed] = _trail(app, "export_failed")
    assert failed["detail"]["count"] == 0 and "worker1" in failed["detail"]["reason"] and _trail(app, "export_done") == []


def test_a_malformed_query_gets_a_readable_message_not_a_500(app):
    add_user(app, "audrey", ["auditor"])
    browser = Browser(app)
    browser.login("audrey")
    for query, expected in (("colour:blue", "unknown field"), ("q=x&after=23.11.2026", "must look like")):
        response = browser.get("/search?q=" + query if "=" not in query else "/search?" + query)
        assert response.status_code == 400 and expected in _text(response), _text(response)
    assert browser.get("/search?q=x&pos=%%%").status_code == 400
    export = browser.post("/export", {"q": "x after:2026-13-45", "format": "mbox"})
    assert export.status_code == 400 and "could not run this export: search after: expected a date" in _text(export), _text(export)
    assert "expected a date" in _trail(app, "export_failed")[0]["detail"]["reason"]  # refused exports are audited too
    assert browser.get("/messages/not-an-archive-id").status_code == 404


def test_paging_reaches_every_match_once_in_order_across_workers(site, app):
    from archive_common import client

    add_user(app, "audrey", ["auditor"])
    sent = {site.send(n % 2, f"page test {n}", body="ibis") for n in range(23)}
    apis = [site.api(0), site.api(1)]
    seen, positions, more = [], {}, True
    while more:
        rows, positions, more, failed = client.search_page(apis, "ibis", positions, limit=5)
        assert not failed
        seen += [r["id"] for r in rows]
    assert seen == sorted(sent, reverse=True)
    browser = Browser(app)
    browser.login("audrey")
    page = browser.get("/search?q=ibis&format=json").get_json()
    assert len(page["results"]) == 23 and page["next"] is None
    # The "next" link a person (or a script) follows: 63 messages over two workers are two pages.
    for n in range(40):
        site.send(n % 2, f"more {n}", body="ibis")
    first = browser.get("/search?q=ibis&format=json").get_json()
    second = browser.get(first["next"]).get_json()
    ids = [r["id"] for r in first["results"] + second["results"]]
    assert len(first["results"]) == 50 and len(second["results"]) == 13 and second["next"] is None
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == 63 and second["start"] == 50


def test_legal_holds_reach_every_worker_and_are_audited(site, app):
    add_user(app, "adam", ["admin"])
    browser = Browser(app)
    browser.login("adam")
    assert browser.get("/search?q=x").status_code == 403  # an administrator sees no mail
    browser.get("/holds")
    response = browser.post("/holds", {"address": "Grace@Example.com", "reason": "matter 17", "action": "add"})
    assert response.status_code == 302
    for index in (0, 1):
        assert "grace@example.com" in site.api(index).holds()
    page = _text(browser.get("/holds"))
    assert "grace@example.com" in page and "matter 17" in page
    browser.post("/holds", {"address": "grace@example.com", "reason": "matter closed", "action": "remove"})
    assert all("grace@example.com" not in site.api(i).holds() for i in (0, 1))
    assert [e["action"] for e in _trail(app) if e["action"].startswith("hold")] == ["hold_remove", "hold_add"]


def test_administrators_manage_users_and_the_change_is_audited(app):
    add_user(app, "adam", ["admin"])
    browser = Browser(app)
    browser.login("adam")
    browser.get("/admin/users")
    response = browser.post("/admin/users", {"username": "henry", "role": ["user"], "addresses": "henry@example.com",
                                             "password": "short"})
    assert response.status_code == 400 and "at least 12 characters" in _text(response)
    browser.post("/admin/users", {"username": "henry", "role": ["user"], "addresses": "henry@example.com", "password": PASSWORD})
    assert Browser(app).login("henry").status_code == 302
    [added] = _trail(app, "user_add")
    assert added["username"] == "adam" and added["detail"]["user"] == "henry" and PASSWORD not in json.dumps(added)


def test_a_user_without_addresses_is_told_so_rather_than_shown_nothing(app):
    add_user(app, "nina", ["user"], [])
    browser = Browser(app)
    browser.login("nina")
    response = browser.get("/search?q=x")
    assert response.status_code == 403 and "no mail addresses" in _text(response)


def test_an_idle_session_expires(site, app):
    from archive_web import config, create_app

    short = create_app(config.load(site.web_conf(), session_idle_seconds=1))
    add_user(short, "audrey", ["auditor"])
    browser = Browser(short)
    browser.login("audrey")
    assert browser.get("/search").status_code == 200
    time.sleep(1.5)
    response = browser.get("/search")
    assert response.status_code == 302 and "/login" in response.headers["Location"]
    assert "ended after a time without activity" in _text(browser.get(response.headers["Location"]))


def test_four_eyes_an_auditor_reads_mail_only_after_a_second_auditor_approves(site, app):
    from archive_web import config, create_app

    strict = create_app(config.load(site.web_conf(), four_eyes=True))
    add_user(strict, "audrey", ["auditor"])
    add_user(strict, "oscar", ["auditor"])
    first, second = Browser(strict), Browser(strict, address="198.18.0.60")
    first.login("audrey")
    response = first.get("/search?q=x")
    assert response.status_code == 302 and response.headers["Location"].endswith("/pending")
    code = re.search(r'class="code">(\d{6})<', _text(first.get("/pending"))).group(1)
    second.login("oscar")
    assert second.get("/search").status_code == 302  # oscar waits too: nobody approved him yet
    assert second.get("/approvals").headers["Location"].endswith("/pending")  # so he cannot approve anyone
    # A third auditor, already approved, approves audrey.
    with strict.app_context():
        from archive_web import context
        context.database().execute("UPDATE sessions SET approved_by = 'setup' WHERE address = '198.18.0.60'")
    approvals = _text(second.get("/approvals"))
    assert code in approvals
    token = re.search(r'name="session" value="([0-9a-f]+)"', approvals).group(1)
    second.post("/approvals", {"session": token})
    assert first.get("/search").status_code == 200
    assert [(e["username"], e["detail"]["approved"]) for e in _trail(strict, "approve")] == [("oscar", "audrey")]


def test_the_audit_trail_is_chained_and_the_verify_command_names_a_removed_row(site, app):
    add_user(app, "audrey", ["auditor"])
    browser = Browser(app)
    for _n in range(3):
        browser.login("audrey")
    ok = cli(site, "audit", "verify")
    assert ok.returncode == 0, ok.stderr
    assert "audit trail whole" in ok.stdout
    csv_text = _text(browser.get("/audit.csv"))
    assert csv_text.splitlines()[0].startswith("seq,time_utc,user,address,action")
    assert "login" in _text(browser.get("/audit?user=audrey&action=login"))
    with sqlite3.connect(site.base / "web.db") as conn:
        conn.execute("DELETE FROM audit WHERE seq = 2")
    broken = cli(site, "audit", "verify")
    assert broken.returncode == 2 and "row 2 is missing" in broken.stderr
    with sqlite3.connect(site.base / "web.db") as conn:
        conn.execute("UPDATE audit SET username = 'mallory' WHERE seq = 1")
    assert "row 1" in cli(site, "audit", "verify").stderr


def test_users_sync_applies_the_declared_accounts_once(site, app):
    declared = json.dumps([{"username": "ivy", "password": PASSWORD, "roles": ["auditor"], "addresses": []},
                           {"username": "jon", "password": PASSWORD, "roles": ["user"], "addresses": ["jon@example.com"]}])
    first = cli(site, "users", "sync", "--prune", stdin=declared)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["changed"] is True
    again = cli(site, "users", "sync", "--prune", stdin=declared)
    assert json.loads(again.stdout) == {"changed": False, "users": {}}
    pruned = cli(site, "users", "sync", "--prune", stdin=declared.replace('"jon"', '"kim"'))
    assert json.loads(pruned.stdout)["users"] == {"jon": ["removed"], "kim": ["created"]} or \
        json.loads(pruned.stdout)["users"]["jon"] == ["removed"]
    bad = cli(site, "users", "sync", stdin="not json")
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "invalid JSON" in bad.stderr


def test_mbox_entries_escape_from_lines_the_mboxrd_way():
    from archive_common import ids
    from archive_web.export import _mbox_entry

    raw = b"Subject: x\r\n\r\nFrom here on\r\n>From quoted\r\nnot From\r\n"
    entry = _mbox_entry({"id": ids.new_id(3), "env_from": "a b@example.com"}, raw)
    first, rest = entry.split(b"\n", 1)
    assert first.startswith(b"From a_b@example.com ")
    assert rest == b"Subject: x\n\n>From here on\n>>From quoted\nnot From\n\n"
