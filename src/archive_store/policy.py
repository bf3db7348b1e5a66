"""A postfix policy service: the worker says 4xx while the store cannot take mail.

Postfix on the worker asks it at RCPT TO (smtpd_recipient_restrictions =
check_policy_service ...).  It answers DUNNO while the store ingests, and a
temporary error naming the reason while

* the license is invalid (expired, wrong server_id, ...): ingest has
  stopped, so new mail would only pile up here;
* the store's data or spool filesystem has less than ``min_free_mb`` free,
  plus the size the client announced;
* the worker is in maintenance (``archive_store maintenance on``): it is
  being drained before a restart, so that no SMTP session is cut.

A 4xx makes the gateway try the next MX host, so the mail lands on another
worker instead of waiting here.  If this service does not answer at all
(the store is down), postfix's default_action does the same.

The protocol: ``name=value`` lines ending with an empty line; the answer is
``action=...`` and an empty line.
"""

import logging
import shutil
import socketserver
from typing import Callable, Dict

from archive_store import metrics
from archive_store.config import Config

log = logging.getLogger("archive_store.policy")
MB = 1024 * 1024


def maintenance(config: Config) -> str:
    """The reason this worker is in maintenance, or "" when it is not."""
    try:
        reason = config.maintenance_file.read_text(encoding="utf-8", errors="replace").strip()
    except FileNotFoundError:
        return ""
    return reason or "maintenance"


def set_maintenance(config: Config, reason: str) -> None:
    config.maintenance_file.write_text(reason.replace("\n", " ").strip() + "\n", encoding="utf-8")


def clear_maintenance(config: Config) -> None:
    config.maintenance_file.unlink(missing_ok=True)


def decide(config: Config, license_error: Callable[[], str], attributes: Dict[str, str]) -> str:
    """The action for one policy request."""
    if attributes.get("request") != "smtpd_access_policy":
        return "DUNNO"
    reason = maintenance(config)
    if reason:
        return f"451 4.3.2 archive store in maintenance ({reason}); try another worker"
    problem = license_error()
    if problem:
        return f"451 4.7.0 archive store refuses mail for now: {problem}"
    try:
        size = int(attributes.get("size") or 0)
    except ValueError:
        size = 0
    need = config.min_free_mb * MB + size
    for name, path in (("data", config.data_dir), ("spool", config.spool_dir)):
        try:
            free = shutil.disk_usage(path).free
        except OSError:
            continue
        if free < need:
            return (f"452 4.3.1 archive store {name} filesystem has {free // MB} MB free, "
                    f"needs {need // MB} MB; try another worker")
    return "DUNNO"


class PolicyServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, config: Config, license_error: Callable[[], str]) -> None:
        super().__init__(address, PolicyHandler)
        self.config = config
        self.license_error = license_error


class PolicyHandler(socketserver.StreamRequestHandler):
    server: PolicyServer
    timeout = 60

    def handle(self):
        try:
            self._serve()
        except OSError:  # postfix went away, or stayed idle past the timeout
            return

    def _serve(self):
        attributes = {}
        while True:  # postfix keeps the connection open for more requests
            line = self.rfile.readline(8192)
            if not line:
                return
            line = line.rstrip(b"\r\n").decode("utf-8", "replace")
            if line:
                name, _sep, value = line.partition("=")
                attributes[name] = value
                continue
            action = decide(self.server.config, self.server.license_error, attributes)
            metrics.POLICY_ANSWERS.labels(metrics.policy_code(action)).inc()
            if action != "DUNNO":
                log.warning("policy: %s from %s: %s", attributes.get("recipient", "-"),
                            attributes.get("client_address", "-"), action)
            self.wfile.write(f"action={action}\n\n".encode("utf-8"))
            self.wfile.flush()
            attributes = {}
