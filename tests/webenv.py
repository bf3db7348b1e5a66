"""A site for the web interface's tests (tests/web): two real stores serving their HTTPS API (one site CA), and the
interface's Flask application over them, driven through Werkzeug's test client as HTTPS."""

import hashlib
import re
import secrets
import sys
from pathlib import Path

from archive_common import client as archive_client
from helpers import wait_until
from storeenv import StoreEnv

PASSWORD = "correct horse battery staple"


class Browser:
    """A person with cookies: follows the CSRF token of the last page into the next form."""

    def __init__(self, app, address="198.18.0.50"):
        self.http = app.test_client()
        self.address = address
        self.csrf = ""

    def _remember(self, response):
        found = re.search(rb'name="csrf" value="([^"]+)"', response.get_data())
        if found:
            self.csrf = found.group(1).decode()
        return response

    def get(self, path, **kw):
        return self._remember(self.http.get(path, base_url="https://ui.example.com",
                                            environ_base={"REMOTE_ADDR": self.address}, **kw))

    def post(self, path, data=None, csrf=True, **kw):
        data = dict(data or {})
        if csrf:
            data.setdefault("csrf", self.csrf)
        return self._remember(self.http.post(path, data=data, base_url="https://ui.example.com",
                                             environ_base={"REMOTE_ADDR": self.address}, **kw))

    def login(self, username, password=PASSWORD):
        self.get("/login")
        return self.post("/login", {"username": username, "password": password})


class Site:
    def __init__(self, base: Path):
        self.base = base
        self.workers = [StoreEnv(base / "worker0", 0), StoreEnv(base / "worker1", 1)]
        second = self.workers[1]
        second.ca = self.workers[0].ca  # one site CA
        second.cert_file, second.key_file = second.ca.issue("worker1")
        second.token, second.read_token, second.ui_token = self.workers[0].token, self.workers[0].read_token, self.workers[0].ui_token
        second.clients_path.write_text(self.workers[0].clients_path.read_text())
        for worker in self.workers:
            worker.serve()
        self.sent = {}

    def web_conf(self, **web) -> Path:
        token_file = self.base / "ui.token"
        token_file.write_text(self.workers[0].ui_token + "\n")
        lines = ["[web]", f"database = {self.base / 'web.db'}", "site_name = archive test site"]
        lines += [f"{k} = {v}" for k, v in web.items()]
        lines += ["[api]", "client_name = ui", f"token_file = {token_file}", f"ca_file = {self.workers[0].ca.cert_file}", "timeout = 3"]
        for worker in self.workers:
            lines += [f"[worker worker{worker.server_id}]", f"url = {worker.url}", f"server_id = {worker.server_id}"]
        path = self.base / "web.conf"
        path.write_text("\n".join(lines) + "\n")
        return path

    def api(self, index):
        worker = self.workers[index]
        return archive_client.ArchiveApi(f"worker{index}", worker.url, worker.token, cafile=str(worker.ca.cert_file))

    def send(self, worker_index, subject, sender="carol@example.com", to="dave@example.com", cc="", body="hello",
             html=None, extra_headers="") -> str:
        """Deliver one message to a worker and wait until it is searchable; returns its archive ID."""
        message_id = f"<{secrets.token_hex(8)}@test.example>"
        headers = (f"From: {sender}\r\nTo: {to}\r\n" + (f"Cc: {cc}\r\n" if cc else "") +
                   f"Subject: {subject}\r\nMessage-ID: {message_id}\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n"
                   f"MIME-Version: 1.0\r\n{extra_headers}")
        if html is None:
            raw = (headers + "Content-Type: text/plain; charset=utf-8\r\n\r\n" + body + "\r\n").encode()
        else:
            raw = (headers + 'Content-Type: multipart/alternative; boundary="b1"\r\n\r\n--b1\r\n'
                   "Content-Type: text/plain; charset=utf-8\r\n\r\n" + body + "\r\n--b1\r\n"
                   "Content-Type: text/html; charset=utf-8\r\n\r\n" + html + "\r\n--b1--\r\n").encode()
        return self.deliver(worker_index, raw, message_id)

    def deliver(self, worker_index, raw, message_id) -> str:
        """Deliver ``raw`` to a worker, wait until its Message-ID is searchable, return its archive ID."""
        self.workers[worker_index].deliver(raw)
        api = self.api(worker_index)
        rows = wait_until(lambda: api.search(f"msgid:{message_id}"), f"{message_id} to be archived on worker{worker_index}",
                          log=self.workers[worker_index].services[-1].log)
        archive_id = rows[0]["id"]
        self.sent[archive_id] = raw
        return archive_id

    def sha256(self, archive_id):
        return hashlib.sha256(self.sent[archive_id]).hexdigest()

    def stop(self):
        for worker in self.workers:
            worker.stop()


def add_user(app, username, roles, addresses=(), password=PASSWORD):
    from archive_web import context, users

    with app.app_context():
        users.save(context.database(), username, roles, addresses, password=password)


def cli(site, *args, stdin=""):
    import subprocess

    from helpers import store_environment

    return subprocess.run([sys.executable, "-m", "archive_web", "-c", str(site.base / "web.conf"), *args], input=stdin,
                          capture_output=True, text=True, env=store_environment(), check=False)
