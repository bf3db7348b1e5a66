"""What the store's CPU goes to when it receives mail itself (receiver.py), against the spool, in-process.

    python3 bench/receiver.py [-n 600] [--sessions 4] [--rounds 2]

A real ``archive_store serve`` (Debian's python3, as on a worker) takes the same ``-n`` messages of
about 90 kB (a text part and an incompressible 50 kB attachment) four ways:

- spool:  written into its Maildir spool as postfix's virtual(8) would, drained in batches;
- lmtp:   over LMTP on loopback from ``--sessions`` sessions, each sending its share;
- smtp:   over SMTP with STARTTLS, the same;
- smtp, a connection per message: what the gateway does (``smtp_connection_cache_on_demand = no``,
  for the even spread over the workers), each message its own TCP connection and TLS handshake.

The four runs alternate for ``--rounds`` rounds, each on a fresh store. Prints, per run, the serve
process's CPU-milliseconds per message (user + system, from /proc) and its rate; then each way's
median against the spool's. The clients' own CPU is not counted.
"""

import argparse
import base64
import os
import random
import smtplib
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "src")]
from storeenv import StoreEnv  # noqa: E402 (the tests' store set-up: config, license, key, CA, tokens)

ARCHIVE = "archive@archive.example.com"
WAYS = ["spool", "lmtp", "smtp", "smtp, a connection per message"]


def message(n, rng):
    text = "".join(f"Line {i} of message {n}: the quarterly figures, as discussed.\r\n" for i in range(400))
    attachment = base64.encodebytes(rng.randbytes(50_000)).decode().replace("\n", "\r\n")
    return (f"From: sender{n % 97}@customer.example\r\nTo: rcpt{n % 89}@customer.example\r\nSubject: receiver {n}\r\n"
            f"Message-ID: <receiver-{n}-{time.time_ns()}@bench>\r\nDate: Sun, 06 Dec 2026 05:00:00 +0000\r\n"
            "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n"
            f"{text}\r\n--b\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=a.bin\r\n"
            f"Content-Transfer-Encoding: base64\r\n\r\n{attachment}--b--\r\n").encode()


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stored(env):
    db = sqlite3.connect(f"file:{env.config().db_path}?mode=ro", uri=True)
    try:
        return db.execute("SELECT count(*) FROM messages").fetchone()[0]
    finally:
        db.close()


def connect(env, kind):
    port = env.receiver_port(kind)
    client = smtplib.LMTP("127.0.0.1", port) if kind == "lmtp" else smtplib.SMTP("127.0.0.1", port)
    client.ehlo("archive-gw.example.com")
    if kind == "smtp":
        context = env.tls()
        context.check_hostname = False  # the certificate names worker0; this connects to 127.0.0.1
        client.starttls(context=context)
        client.ehlo("archive-gw.example.com")
    return client


def send(env, kind, messages, sessions, reconnect):
    def session(first):
        client = connect(env, kind)
        for raw in messages[first::sessions]:
            client.sendmail("journal@customer.example", [ARCHIVE], raw)
            if reconnect:
                client.quit()
                client = connect(env, kind)
        client.quit()
    threads = [threading.Thread(target=session, args=(first,)) for first in range(sessions)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def run(way, messages, sessions):
    """One way on a fresh store: (CPU-ms a message, messages a second)."""
    env = StoreEnv(Path(tempfile.mkdtemp(prefix="archive-receiver-bench-")))
    kind = way.split(",")[0]
    try:
        receiver = {} if kind == "spool" else {f"{kind}_listen": "", "smtp_clients": "127.0.0.1", "archive_address": ARCHIVE}
        service = env.serve(receiver=receiver, batch_size=200)
        time.sleep(1)  # past the start's own work
        cpu, started = cpu_seconds(service.proc.pid), time.perf_counter()
        if kind == "spool":
            for raw in messages:
                env.deliver(raw)
        else:
            send(env, kind, messages, sessions, reconnect="connection per message" in way)
        while stored(env) < len(messages):
            time.sleep(0.05)
        seconds = time.perf_counter() - started
        return 1000 * (cpu_seconds(service.proc.pid) - cpu) / len(messages), len(messages) / seconds
    finally:
        env.stop()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--messages", type=int, default=600)
    parser.add_argument("--sessions", type=int, default=4, help="concurrent sessions (the gateway's 20 over five workers: 4)")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    rng = random.Random(18)
    messages = [message(n, rng) for n in range(args.messages)]
    results = {way: [] for way in WAYS}
    for round_ in range(1, args.rounds + 1):
        for way in WAYS:
            ms, rate = run(way, messages, args.sessions)
            results[way].append(ms)
            print(f"round {round_}: {way:32} {ms:6.2f} CPU-ms a message  {rate:6.1f} msg/s", flush=True)
    spool = statistics.median(results["spool"])
    for way in WAYS:
        ms = statistics.median(results[way])
        print(f"{way:32} median {ms:6.2f} CPU-ms a message, {ms / spool:4.2f} x the spool's, {ms - spool:+5.2f} ms")


if __name__ == "__main__":
    main()
