"""The web interface in a real browser (Debian's chromium, driven by Playwright) against the scenario's ui host.

Mail goes in through the gateway by SMTP; a person logs in, searches, reads, downloads and
exports; the checks are on what the page shows and on the bytes downloaded.  Screenshots go
to docs/screenshots/.
"""

import hashlib
import json
import mailbox
import re
import secrets
import ssl
import urllib.request

import pytest

from conftest import ROOT, RUNNER, rendered
from helpers import docker
from mailflow import send, wait_archived

playwright = pytest.importorskip("playwright.sync_api", reason="Playwright is in requirements.txt; make venv installs it")
CHROMIUM = "/usr/bin/chromium"
SHOTS = ROOT / "docs" / "screenshots"
ERIN_PASSWORD = "erin-" + secrets.token_hex(8)
pytestmark = pytest.mark.skipif(not RUNNER.get_hosts("ui"), reason="this scenario has no ui host")


def sh(host, command):
    """Run ``command`` in ``host``'s container (the scenario's, or the lab's: its ansible_host)."""
    return docker("exec", RUNNER.get_variables(host).get("ansible_host", host), "sh", "-c", command, check=False)


# Until the restarted application answers nginx, the login page is nginx's 502.
RESTART_WEB = ("systemctl restart archive-web && python3 -c \"import ssl, time, urllib.request\n"
               "for _ in range(120):\n"
               "    try:\n"
               "        urllib.request.urlopen('https://127.0.0.1/login', context=ssl._create_unverified_context(), timeout=2); break\n"
               "    except OSError: time.sleep(0.5)\"")


@pytest.fixture(scope="module")
def ui(site):
    host = sorted(RUNNER.get_hosts("ui"))[0]
    variables = rendered(RUNNER, host, ["mailarchive_ip", "ui_users"])
    auditor = next(u for u in variables["ui_users"] if "auditor" in u["roles"])
    sh(host, "archive_web users remove erin")
    added = sh(host, f"printf '%s\\n' {ERIN_PASSWORD} | archive_web users add erin --role user --address erin@customer.example")
    assert added.returncode == 0, added.stderr
    return {"host": host, "url": f"https://{variables['mailarchive_ip']}", "auditor": auditor}


@pytest.fixture(scope="module")
def mail(site):
    """Three messages through the gateway: A to erin, B not to her, and one with hostile HTML; all with one word."""
    word = "heliotrope" + secrets.token_hex(3)
    a = (f"From: carol@customer.example\r\nTo: dave@customer.example\r\nCc: erin@customer.example\r\n"
         f"Subject: budget {word} A\r\nMessage-ID: <a-{word}@t>\r\n\r\ntoken{word} the budget\r\n").encode()
    b = (f"From: carol@customer.example\r\nTo: frank.erin@customer.example\r\nSubject: board {word} B\r\n"
         f"Message-ID: <b-{word}@t>\r\n\r\ntoken{word} the board\r\n").encode()
    hostile = (f'From: "<b>Eve</b>" <eve@customer.example>\r\nTo: dave@customer.example\r\n'
               f'Subject: <b>bold</b> "><script>alert(1)</script> {word}\r\nMessage-ID: <h-{word}@t>\r\nMIME-Version: 1.0\r\n'
               'Content-Type: multipart/alternative; boundary="xx"\r\n\r\n--xx\r\nContent-Type: text/plain\r\n\r\n'
               f"token{word} plain\r\n--xx\r\nContent-Type: text/html\r\n\r\n"
               '<p>Hello <img src="http://198.18.30.2/pixel.gif" onerror="alert(2)"><script>alert(3)</script></p>\r\n'
               "--xx--\r\n").encode()
    messages = [a, b, hostile]
    send(site.ip[site.gateways[0]], site.journal_address, messages)
    wanted, found = wait_archived(site, word, messages)
    assert wanted <= set(found), "the three messages were not archived"
    ids = {name: found[hashlib.sha256(raw).hexdigest()][0][1]["id"] for name, raw in zip("ABH", messages)}
    holders = {name: found[hashlib.sha256(raw).hexdigest()][0][0] for name, raw in zip("ABH", messages)}
    return {"word": word, "raw": dict(zip("ABH", messages)), "id": ids, "worker": holders}


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        yield chromium
        chromium.close()


class Person:
    """One browser context (its own cookies) that records every request, console message and dialog."""

    def __init__(self, browser, ui, tmp_path):
        # The site CA is not in chromium's store; the certificate itself is checked in test_the_ui_certificate_is_the_site_cas.
        self.context = browser.new_context(ignore_https_errors=True, accept_downloads=True)
        self.page = self.context.new_page()
        self.requests, self.console, self.dialogs = [], [], []
        self.context.on("request", lambda r: self.requests.append(r.url))
        self.page.on("console", lambda m: self.console.append(m.text))
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        self.ui, self.tmp = ui, tmp_path

    def login(self, username, password):
        self.page.goto(self.ui["url"] + "/login")
        self.page.fill("input[name=username]", username)
        self.page.fill("input[name=password]", password)
        with self.page.expect_navigation():
            self.page.click("button[type=submit]")
        return self.page

    def download(self, action):
        with self.page.expect_download() as info:
            action()
        path = self.tmp / info.value.suggested_filename
        info.value.save_as(path)
        return path.read_bytes()

    def shot(self, name):
        SHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_the_ui_certificate_is_the_site_cas(site, ui):
    context = ssl.create_default_context(cafile=site.ca_file)
    with urllib.request.urlopen(ui["url"] + "/login", context=context, timeout=10) as page:
        assert page.status == 200 and "Strict-Transport-Security" in page.headers


def test_an_auditor_searches_reads_downloads_and_exports(browser, ui, mail, site, tmp_path):
    person = Person(browser, ui, tmp_path)
    page = person.login(ui["auditor"]["username"], ui["auditor"]["password"])
    page.fill("input[name=q]", mail["word"])
    with page.expect_navigation():
        page.click("form.search button")
    rows = page.locator("table.results tr").all_inner_texts()
    assert sum(mail["word"] in row for row in rows) == 3, rows
    person.shot("search-results")
    with page.expect_navigation():
        page.click(f"a[href='/messages/{mail['id']['A']}']")
    assert "verified" in page.inner_text("table.headers")
    person.shot("message")
    eml = person.download(lambda: page.click("text=Download original (.eml)"))
    assert hashlib.sha256(eml).hexdigest() == hashlib.sha256(mail["raw"]["A"]).hexdigest()
    page.goto(ui["url"] + "/search?q=" + mail["word"])
    exported = person.download(lambda: page.click("form.export-all button[value=mbox]"))
    (tmp_path / "all.mbox").write_bytes(exported)
    ids = sorted(m["Message-ID"] for m in mailbox.mbox(str(tmp_path / "all.mbox")))
    assert ids == sorted(f"<{p}-{mail['word']}@t>" for p in "abh")
    # The worker's own access log names the interface as the client that read message A.
    worker = mail["worker"]["A"]
    log = sh(worker, f"cat {site.contract[worker]['access_log']}").stdout
    entries = [json.loads(line) for line in log.splitlines() if mail["id"]["A"] in line]
    assert {e["client"] for e in entries} >= {f"ui-{ui['host']}"}, entries
    assert any(e["endpoint"] == "get raw" and e["client"] == f"ui-{ui['host']}" for e in entries)


def test_a_user_finds_her_message_and_not_anothers_whose_url_gives_404(browser, ui, mail, tmp_path):
    person = Person(browser, ui, tmp_path)
    page = person.login("erin", ERIN_PASSWORD)
    page.goto(ui["url"] + "/search?q=" + mail["word"])
    text = page.inner_text("main")
    assert f"budget {mail['word']} A" in text and f"board {mail['word']} B" not in text
    response = page.goto(ui["url"] + f"/messages/{mail['id']['B']}")
    assert response.status == 404


def test_hostile_html_runs_nothing_and_loads_nothing_and_markup_shows_as_text(browser, ui, mail, tmp_path):
    person = Person(browser, ui, tmp_path)
    page = person.login(ui["auditor"]["username"], ui["auditor"]["password"])
    person.requests.clear()
    page.goto(ui["url"] + f"/messages/{mail['id']['H']}")
    page.wait_for_load_state("networkidle")
    frame = page.frame_locator("iframe.html")
    assert "Hello" in frame.locator("body").inner_text()
    assert '<b>bold</b> "><script>alert(1)</script>' in page.inner_text("h1")
    assert "<b>Eve</b>" in page.inner_text("table.headers")
    assert person.dialogs == []
    assert not [m for m in person.console if "alert" in m]
    assert [u for u in person.requests if not u.startswith(ui["url"])] == []


def test_a_worker_that_does_not_answer_is_named(browser, ui, mail, site, tmp_path):
    worker = site.workers[-1]
    sh(worker, "systemctl stop archive-store")
    try:
        person = Person(browser, ui, tmp_path)
        page = person.login(ui["auditor"]["username"], ui["auditor"]["password"])
        page.goto(ui["url"] + "/search?q=" + mail["word"])
        assert f"{worker}" in page.inner_text("p.incomplete")
    finally:
        sh(worker, "systemctl start archive-store")


def test_an_export_larger_than_allowed_gets_a_readable_page_and_is_audited_as_failed(browser, ui, mail, tmp_path):
    sh(ui["host"], "cp /etc/archive-web/web.conf /run/web.conf.saved && "
                   "sed -i 's/^\\[web\\]$/[web]\\nexport_max_messages = 2/' /etc/archive-web/web.conf && " + RESTART_WEB)
    try:
        person = Person(browser, ui, tmp_path)
        page = person.login(ui["auditor"]["username"], ui["auditor"]["password"])
        page.goto(ui["url"] + "/search?q=" + mail["word"])  # three matches, one more than the export allows
        with page.expect_navigation() as answer:
            page.click("form.export-all button[value=mbox]")
        assert answer.value.status == 400
        assert "matches more than 2 messages" in page.inner_text("main")
    finally:
        sh(ui["host"], "cp /run/web.conf.saved /etc/archive-web/web.conf && " + RESTART_WEB)
    trail = sh(ui["host"], "python3 -c \"import sqlite3; print(sqlite3.connect("
                           "'/var/lib/archive-web/web.db').execute('SELECT action FROM audit ORDER BY seq DESC LIMIT 1').fetchone()[0])\"")
    assert trail.stdout.split()[-1] == "export_failed", trail.stdout


def test_the_audit_trail_names_each_action_and_a_removed_row_is_found(browser, ui, mail, tmp_path):
    person = Person(browser, ui, tmp_path)
    page = person.login(ui["auditor"]["username"], ui["auditor"]["password"])
    page.goto(ui["url"] + "/audit")
    person.shot("audit-trail")
    text = page.inner_text("table.audit")
    for action in ("login", "search", "view", "download", "export_done", "denied"):
        assert re.search(rf"\b{action}\b", text), action
    assert "erin" in text
    assert sh(ui["host"], "archive_web audit verify").returncode == 0
    delete = "import sqlite3; c = sqlite3.connect('/var/lib/archive-web/web.db'); c.execute('DELETE FROM audit WHERE seq = 3'); c.commit()"
    removed = sh(ui["host"], f'python3 -c "{delete}"')
    assert removed.returncode == 0, removed.stderr
    broken = sh(ui["host"], "archive_web audit verify")
    assert broken.returncode == 2 and "row 3 is missing" in broken.stderr


def test_a_wrong_password_is_refused_and_the_sixth_fast_attempt_gets_429(browser, ui, tmp_path):
    person = Person(browser, ui, tmp_path)
    for attempt in range(6):
        page = person.login("erin", "not-her-password-" + str(attempt))
        text = page.inner_text("main")
        assert ("Too many failed logins" if attempt == 5 else "Wrong username or password") in text, (attempt, text)
