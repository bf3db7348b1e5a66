"""Send messages by real SMTP and find them again through the store APIs."""

import hashlib
import os
import random
import smtplib
import ssl
import threading
import time

import dns.resolver

from archive_common.client import ArchiveApiError
from helpers import docker, wait_system_running, wait_until
from module_runner import run_module


def make_messages(tag, count, size=3000):
    messages = []
    for number in range(count):
        head = (f"From: sender{number}@customer.example\r\nTo: archive@archive-gw.example.com\r\n"
                f"Subject: molecule {tag} {number}\r\nMessage-ID: <{tag}-{number}@molecule.test>\r\n\r\n").encode()
        body = f"token{tag} {number}\r\n".encode() + os.urandom(size // 2).hex().encode() + b"\r\n"
        messages.append(head + body)
    return messages


def send(gateway_ip, recipient, messages, timeout=30):
    """Send each message to ``recipient`` (or a list of recipients, in one transaction) over STARTTLS."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with smtplib.SMTP(gateway_ip, 25, timeout=timeout) as client:
        client.starttls(context=context)
        for raw in messages:
            client.sendmail("journal@customer.example", recipient if isinstance(recipient, list) else [recipient], raw)


def send_by_mx(nameserver, domain, recipient, messages):
    """Send as a journaling mail server does: look up the MX set, try its hosts in turn.

    Returns the MX host that took the messages.
    """
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [nameserver]
    hosts = sorted(resolver.resolve(domain, "MX"), key=lambda mx: (mx.preference, random.random()))
    errors = []
    for mx in hosts:
        address = resolver.resolve(mx.exchange, "A")[0].address
        try:
            send(address, recipient, messages, timeout=10)
            return str(mx.exchange).rstrip(".")
        except OSError as exc:
            errors.append(f"{mx.exchange}: {exc}")
    raise AssertionError("no MX host of %s took the mail: %s" % (domain, "; ".join(errors)))


def listing(site, worker, since=0):
    """{(id, sha256)} of everything the worker archived since ``since``."""
    return {(row["id"], row["sha256"]) for row in site.client(worker).listing(since, 2 ** 62)}


def search(site, worker, query):
    """Every match on ``worker``, a page of 1000 at a time."""
    rows, offset = [], 0
    while True:
        page = site.client(worker).search(query, 1000, offset)
        rows.extend(page)
        if len(page) < 1000:
            return rows
        offset += len(page)


def wait_archived(site, tag, messages, timeout=90, workers=None):
    """Return {sha256: [(worker, row)]} once every message is found, or at the timeout."""
    wanted = {hashlib.sha256(raw).hexdigest() for raw in messages}
    deadline = time.time() + timeout
    while True:
        found = {}
        for worker in workers or site.workers:
            try:
                rows = search(site, worker, f"token{tag}")
            except (OSError, ArchiveApiError):  # a worker restarting (a fault test's doing): ask again
                continue
            for row in rows:
                found.setdefault(row["sha256"], []).append((worker, row))
        if wanted <= set(found) or time.time() > deadline:
            return wanted, found
        time.sleep(1)


def summary(name, messages, found, started):
    """Print a fault test's one line (sent, archived, lost, duplicated, time to drain); return (lost, duplicated).

    ``found`` is what wait_archived returns for ``messages``.
    """
    lost = len({hashlib.sha256(raw).hexdigest() for raw in messages} - set(found))
    duplicated = sum(1 for copies in found.values() if len(copies) > 1)
    print(f"{name}: sent {len(messages)}, archived {len(found)}, lost {lost}, duplicated {duplicated}, "
          f"drained in {time.time() - started:.1f} s")
    return lost, duplicated


class Load(threading.Thread):
    """A steady journaling load into a gateway, as a mail server sends it.

    Each of ``sessions`` threads sends its share over one SMTP session at a
    time; a message counts as sent once the gateway answered 250 to its
    DATA. On a refused or broken session the thread waits and sends the
    unacknowledged message again on a new session, as an MTA retries.
    ``stop()`` ends the load after the messages in flight; only ``acked`` were sent.
    """

    def __init__(self, gateway_ip, recipient, messages, sessions=4, pause=0.0):
        super().__init__(daemon=True)
        self.gateway_ip, self.recipient, self.pause = gateway_ip, recipient, pause
        self.queues = [messages[n::sessions] for n in range(sessions)]
        self.acked = []
        self.retries = 0
        self.lock = threading.Lock()
        self.stopping = threading.Event()

    def stop(self):
        self.stopping.set()
        self.join()

    def _session(self, queue):
        while queue and not self.stopping.is_set():
            try:
                with smtplib.SMTP(self.gateway_ip, 25, timeout=30) as client:
                    client.starttls(context=_insecure())
                    while queue and not self.stopping.is_set():
                        client.sendmail("journal@customer.example", [self.recipient], queue[0])
                        with self.lock:
                            self.acked.append(queue.pop(0))
                        time.sleep(self.pause)
            except (OSError, smtplib.SMTPException):
                with self.lock:
                    self.retries += 1
                time.sleep(1)

    def run(self):
        threads = [threading.Thread(target=self._session, args=(queue,), daemon=True) for queue in self.queues]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()


def _insecure():
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def send_all(site, messages, timeout=120):
    with smtplib.SMTP(site.ip[site.gateways[0]], 25, timeout=timeout) as client:
        client.starttls()
        for raw in messages:
            client.sendmail("journal@customer.example", [site.journal_address], raw)


def archived_since(site, since, wanted, timeout=180):
    """{sha256: [worker, ...]} for the wanted digests, once all are found or at the timeout."""
    deadline = time.time() + timeout
    while True:
        found = {}
        for worker in site.workers:
            for _id, sha in listing(site, worker, since):
                if sha in wanted:
                    found.setdefault(sha, []).append(worker)
        if set(wanted) <= set(found) or time.time() > deadline:
            return found
        time.sleep(2)


def wait_running(container, address):
    """Until systemd in the restarted container is up and its postfix answers on port 25."""
    wait_system_running(container)

    def answers():
        try:
            with smtplib.SMTP(address, 25, timeout=5) as client:
                client.noop()
            return True
        except OSError:
            return False
    wait_until(answers, f"postfix on {container} to answer", timeout=120,
               log=lambda: docker("exec", container, "tail", "-n", "30", "/var/log/postfix.log", check=False).stdout)


def reconcile(site, dr_site, **over):
    def spec(name, s):
        return {"name": name, "gateway": s.ip[s.gateways[0]], "recipient": s.journal_address,
                "workers": s.module_workers()}
    args = {"sites": [spec("primary", site), spec("dr", dr_site)], "resend_timeout": 90}
    args.update(over)
    result = run_module("reconcile", args)
    assert not result.get("failed"), result.get("msg")
    return result
