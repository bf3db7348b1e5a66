"""The store receives mail itself, over LMTP from the worker's postfix or over SMTP from the gateways.

Both are Debian's aiosmtpd; one handler serves them.  A session hands each
message to the ``Committer``, which stores whatever the sessions received
meanwhile in one transaction (group commit) and only then lets each session
answer 250: a message is durable, object and index row, before its sender
may delete it.  When the store cannot take it the answer is 4xx and the
sender keeps it (postfix's queue on the worker or on the gateway), as with
the Maildir spool today:

* MAIL FROM is answered with the policy service's answer (policy.decide):
  4xx in maintenance, without a valid license, or short of disk space;
* RCPT TO takes only the archive address (and its ``archive+<user>=<domain>``
  extensions, README "Journaling from postfix");
* SMTP only: STARTTLS is required and only the gateways' addresses may send;
  the size limit is announced (SIZE) and enforced.

What arrives is what postfix would have written to the spool, with CRLF line
ends and no Delivered-To header: the envelope is the session's, and the
Received headers of the cluster's postfix hops are stripped and kept as
transit metadata, as spool.from_postfix does.
"""

import asyncio
import concurrent.futures
import email.utils
import itertools
import logging
import os
import queue
import socket
import ssl
import threading
import time
from typing import Callable, Iterable, List, Optional

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP

from archive_store import metrics
from archive_store.config import Config
from archive_store.errors import Refused
from archive_store.spool import Arrival, from_postfix, spool_time

log = logging.getLogger("archive_store.receiver")
# aiosmtpd logs a dozen INFO lines a message (each command with its addresses, the peer, the AUTH
# mechanisms): 1 ms of the store's CPU a connection, and journald's.  The store logs one line per
# stored message and each refusal itself.
logging.getLogger("mail.log").setLevel(logging.WARNING)
_SEQUENCE = itertools.count(1)


def arrival_name(kind: str) -> str:
    """A unique name for a received message, in the Maildir form spool.spool_time reads (<s>.M<us>P<pid>Q<n>.<kind>)."""
    now = time.time()
    return f"{int(now)}.M{int(now % 1 * 1e6):06d}P{os.getpid()}Q{next(_SEQUENCE)}.{kind}.{socket.gethostname()}"


def arrival_from_session(content: bytes, mail_from: str, rcpt_tos: List[str], name: str,
                         transit_hosts: Iterable[str], hop: str = "") -> Arrival:
    """The Arrival ``name`` for one received message: the cluster's Received headers stripped, the session's
    envelope, and ``hop``, the store's own Received line, leading the transit."""
    arrival = from_postfix(content.replace(b"\r\n", b"\n"), name, transit_hosts, envelope_headers=False)
    arrival.env_from = mail_from
    arrival.env_to = list(dict.fromkeys(rcpt_tos))
    if hop:
        arrival.transit.insert(0, hop)
    return arrival


def received(session, hostname: str, rcpt_tos: List[str], name: str) -> str:
    """The Received line of an SMTP hop into the store, as postfix's smtpd writes one, with the arrival's name
    as its ID: the hop's record in the transit metadata, with the TLS version and cipher it was made with
    (RFC 5321 4.4). The duplicate pass (archive_common/dedupe.py) reads it as the worker's own hop."""
    tls = ""
    if session.ssl:
        version, cipher = session.ssl["ssl_object"].version(), session.ssl["cipher"]
        tls = f" (using {version} with cipher {cipher[0]} ({cipher[2]}/{cipher[2]} bits))"
    recipient = f" for <{rcpt_tos[0]}>" if len(rcpt_tos) == 1 else ""
    return (f"Received: from {session.host_name or 'unknown'} ([{session.peer[0]}]){tls} by {hostname} (archive-store)"
            f" with {'ESMTPS' if session.ssl else 'ESMTP'} id {name}{recipient}; {email.utils.formatdate(localtime=True)}")


class Committer:
    """Stores what the sessions hand over, many messages per transaction, and resolves each one's future.

    A future's result is the message's store Outcome; its exception is
    Refused with the reason (no license, a store fault) when nothing of the
    batch was kept.
    """

    def __init__(self, ingestor, batch_size: int) -> None:
        self.ingestor = ingestor
        self.batch_size = batch_size
        self.answering = 0  # sessions that handed over a message and have not sent its answer yet (event loop only)
        self._queue: "queue.SimpleQueue" = queue.SimpleQueue()
        self._closed = False
        self._lock = threading.Lock()

    def submit(self, arrival: Arrival) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._lock:
            if self._closed:
                future.set_exception(Refused("archive store shutting down"))
            else:
                self._queue.put((arrival, future))
        return future

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                batch = [self._queue.get(timeout=0.5)]
            except queue.Empty:
                continue
            while len(batch) < self.batch_size:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            self.commit(batch)
        with self._lock:
            self._closed = True
        self._refuse_waiting("archive store shutting down")

    def commit(self, batch) -> None:
        # A session cut while it waited (aiosmtpd cancels its handler, and asyncio the future) gets no 250, and its
        # sender sends the message again: it is left out.  The others can no longer be cancelled from here on.
        batch = [(arrival, future) for arrival, future in batch if future.set_running_or_notify_cancel()]
        if not batch:
            return
        arrivals = [arrival for arrival, _future in batch]
        try:
            if not self.ingestor.check_license():
                raise Refused(f"no valid license: {self.ingestor.license_error}")
            outcomes = self.ingestor.store_received(arrivals)
        except Refused as exc:
            self._refuse(batch, exc)
            return
        except Exception as exc:  # a fault store_received did not foresee must not stop the committer either
            log.exception("storing %d received messages failed; their senders keep them", len(batch))
            self._refuse(batch, Refused(f"store fault: {exc}"))
            return
        committed = time.time()
        for (arrival, future), outcome in zip(batch, outcomes):
            metrics.INGEST_LATENCY.observe(max(0.0, committed - (spool_time(arrival.spool_name) or committed)))
            future.set_result(outcome)

    @staticmethod
    def _refuse(batch, exc: Refused) -> None:
        for _arrival, future in batch:
            future.set_exception(exc)

    def _refuse_waiting(self, reason: str) -> None:
        while True:
            try:
                _arrival, future = self._queue.get_nowait()
            except queue.Empty:
                return
            if future.set_running_or_notify_cancel():
                future.set_exception(Refused(reason))


class Handler:
    """aiosmtpd's handler for both protocols: policy at MAIL, the archive address at RCPT, group commit at DATA."""

    def __init__(self, config: Config, ingestor, committer: Committer, kind: str,
                 clients: Optional[Iterable[str]] = None) -> None:
        self.config = config
        self.ingestor = ingestor
        self.committer = committer
        self.kind = kind
        self.clients = set(clients) if clients is not None else None
        self.local, _at, self.domain = config.archive_address.lower().partition("@")

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        if self.clients is not None and session.peer[0] not in self.clients:
            log.warning("refused mail from %s: not a gateway", session.peer[0])
            return "550 5.7.1 only the archive's gateways may send here"
        size = next((option[5:] for option in mail_options if option.startswith("SIZE=")), "0")
        action = self.ingestor.policy_answer(size)
        metrics.POLICY_ANSWERS.labels(metrics.policy_code(action)).inc()
        if action != "DUNNO":
            log.warning("%s: refused mail from %s: %s", self.kind, session.peer[0], action)
            return action
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 Ok"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local, _at, domain = address.lower().rpartition("@")
        if domain != self.domain or local.split("+", 1)[0] != self.local:
            return f"550 5.1.1 <{address}>: recipient not accepted: this host archives mail for {self.config.archive_address} only"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server, session, envelope):
        name = arrival_name(self.kind)
        hop = received(session, server.hostname, envelope.rcpt_tos, name) if self.kind == "smtp" else ""  # LMTP: postfix's
        arrival = arrival_from_session(envelope.original_content, envelope.mail_from, envelope.rcpt_tos, name,
                                       self.config.transit_hosts, hop)
        try:
            outcome = await asyncio.wrap_future(self.committer.submit(arrival))
        except Refused as exc:
            reply = f"451 4.3.0 archive store cannot take it now: {exc}"
        else:
            reply = f"250 2.0.0 Ok: {outcome.status} {outcome.archive_id}"
        if self.kind == "lmtp":  # one reply per recipient
            return "\r\n".join([reply] * len(envelope.rcpt_tos))
        return reply


_END = b"\r\n.\r\n"


async def read_data(reader: asyncio.StreamReader, limit: int) -> Optional[bytes]:
    """The message after DATA, dot-unstuffed (RFC 5321 4.5.2), or None when it is larger than ``limit`` (read and dropped).

    aiosmtpd reads DATA a line at a time in Python, 1.5 ms of CPU for a 100 kB message on the lab's
    machine; this reads up to each ".<CR><LF>", which ends far fewer lines, and lets bytes.replace
    undo the dot-stuffing.  The data ends at the first <CR><LF>.<CR><LF>, where the <CR><LF> before
    the dot is the last line's own or, for an empty message, the one that ended DATA.
    """
    data = bytearray(b"\r\n")
    too_much = False
    while not data.endswith(_END):
        try:
            data += await reader.readuntil(b".\r\n")
        except asyncio.LimitOverrunError as exc:  # no ".<CR><LF>" within the stream's limit
            data += await reader.read(exc.consumed)
        if len(data) > limit + len(_END) + 2:
            too_much = True
            del data[2:-5]  # keep what may be the end marker's start
    if too_much:
        return None
    del data[-3:]  # the final ".<CR><LF>"
    return bytes(data.replace(b"\r\n.", b"\r\n")[2:])


def _session(kind: str, handler: Handler, config: Config, tls: Callable[[], Optional[ssl.SSLContext]]):
    """A factory of sessions; ``tls`` gives the certificate's context for each new SMTP connection (SIGHUP may replace it)."""
    base = LMTP if kind == "lmtp" else SMTP

    class Session(base):
        # postfix relays lines of any length (smtp_line_length_limit = 0): the message's size bounds a line.
        line_length_limit = config.max_message_bytes + 2

        async def smtp_DATA(self, arg: str) -> None:
            """aiosmtpd's DATA with read_data's reader; the checks, replies and handler call are its own."""
            if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
                return
            if not self.envelope.rcpt_tos:
                await self.push("503 Error: need RCPT command")
                return
            if arg:
                await self.push("501 Syntax: DATA")
                return
            await self.push("354 End data with <CR><LF>.<CR><LF>")
            content = await read_data(self._reader, self.data_size_limit)
            if content is None:
                await self.push("552 5.3.4 Error: too much mail data")
                self._set_post_data_state()
                return
            self.envelope.content = self.envelope.original_content = content
            handler.committer.answering += 1
            try:
                status = await self._call_handler_hook("DATA")
                self._set_post_data_state()
                await self.push(status)
            finally:
                handler.committer.answering -= 1

    options = {"data_size_limit": config.max_message_bytes, "enable_SMTPUTF8": True, "decode_data": False,
               "hostname": socket.gethostname(), "ident": "archive-store"}
    if kind == "lmtp":
        return lambda: Session(handler, **options)

    def smtp_session():
        context = tls()
        return Session(handler, tls_context=context, require_starttls=context is not None, **options)
    return smtp_session


class Receiver:
    """The listeners (LMTP on loopback, SMTP from the gateways) on one event loop thread, and the committer's thread."""

    def __init__(self, config: Config, ingestor, tls: Optional[ssl.SSLContext] = None) -> None:
        self.config = config
        self.tls = tls  # STARTTLS's certificate; serve's reload replaces it
        self.committer = Committer(ingestor, config.batch_size)
        self.loop = asyncio.new_event_loop()
        self.stop_event = threading.Event()
        self.servers = []
        listeners = [("lmtp", config.lmtp_listen, config.lmtp_address, None),
                     ("smtp", config.smtp_listen, config.smtp_address, config.smtp_clients)]
        for kind, listen, address, clients in listeners:
            if not listen:
                continue
            host, port = address()
            handler = Handler(config, ingestor, self.committer, kind, clients)
            factory = _session(kind, handler, config, lambda: self.tls)
            self.servers.append(self.loop.run_until_complete(self.loop.create_server(factory, host, port)))
            log.info("receiving %s on %s", kind.upper(), listen)
        self._threads = [threading.Thread(target=self.loop.run_forever, name="receiver", daemon=True),
                         threading.Thread(target=self.committer.run, args=(self.stop_event,), name="committer", daemon=True)]

    def start(self) -> "Receiver":
        for thread in self._threads:
            thread.start()
        return self

    def close(self, answer_seconds: float = 10) -> None:
        """Stop listening, then stop committing; then let each session whose message was committed send its 250
        (for at most ``answer_seconds``). A session whose message was not committed gets 4xx, or loses its connection.
        A committed message whose 250 never left makes its sender deliver it again: the duplicate pass's case."""
        for server in self.servers:
            self.loop.call_soon_threadsafe(server.close)
        self.stop_event.set()
        self._threads[1].join()
        deadline = time.monotonic() + answer_seconds
        while self.committer.answering and time.monotonic() < deadline:
            time.sleep(0.02)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._threads[0].join(timeout=5)
