"""Ingest benchmark on the running lab (make lab): piler's smtp-source load.

1. Ceiling: smtp-source into smtp-sink (no storage), worker1 -> archive-gw:2525.
2. One worker: smtp-source from the gateway container straight into worker0's
   postfix (the store's SMTP edge), then wait until the store has drained all
   of it, and verify every stored message.

Prints messages/s acknowledged by postfix, messages/s drained by the store,
the ratio to the ceiling, and the store's peak RSS.
"""

import subprocess
import time

import lab
from archive_common.client import ArchiveApi, ArchiveApiError
from smtp_load import arguments

GATEWAY, WORKER, OTHER = "mailarchive-lab-archive-gw", "mailarchive-lab-worker0", "mailarchive-lab-worker1"
GATEWAY_IP, WORKER_IP = "198.18.10.10", "198.18.10.20"
CONTRACT = lab.workers()["worker0"]  # the worker role's contract, with its token
STORE = CONTRACT["command"]


def sh(container, command, check=True):
    return subprocess.run(["docker", "exec", container, "sh", "-c", command], capture_output=True, text=True, check=check)


def stats():
    """The worker's store stats; waits while the API is still starting."""
    api = ArchiveApi("worker0", CONTRACT["api_url"], CONTRACT["token"], 10, cafile=CONTRACT["ca_file"])
    for _attempt in range(120):
        try:
            return api.stats()
        except ArchiveApiError:
            time.sleep(0.1)
    raise SystemExit("worker0's store API did not answer for 12 s")


def smtp_source(container, target, count, size, sessions, recipient):
    started = time.time()
    sh(container, f"smtp-source -s {sessions} -m {count} -l {size} -f bench@customer.example -t {recipient} {target}")
    return time.time() - started


def main():
    args = arguments(__doc__)
    load = f"smtp-source -s {args.sessions} -m {args.messages} -l {args.length}"

    sh(GATEWAY, "pkill smtp-sink", check=False)
    subprocess.Popen(["docker", "exec", GATEWAY, "smtp-sink", "-u", "nobody", f"{GATEWAY_IP}:2525", "256"])
    time.sleep(1)
    sink_s = smtp_source(OTHER, f"{GATEWAY_IP}:2525", args.messages, args.length, args.sessions, "sink@example.com")
    sh(GATEWAY, "pkill smtp-sink", check=False)
    sink_rate = args.messages / sink_s

    while stats()["spool_backlog"] or sh(WORKER, "postqueue -j | head -c1").stdout:
        time.sleep(1)  # a previous run is still draining
    before = stats()["messages"]
    # Postfix alone: the store is stopped, so the spool fills and postfix's rate is its own.
    sh(WORKER, "systemctl stop archive-store")
    started = time.time()
    ack_s = smtp_source(GATEWAY, f"{WORKER_IP}:25", args.messages, args.length, args.sessions, "archive@archive.example.com")
    while sh(WORKER, "postqueue -j | head -c1").stdout:
        time.sleep(0.25)
    spooled_s = time.time() - started
    # The store alone: a fresh process drains the full spool.
    sh(WORKER, "systemctl start archive-store")
    started = time.time()
    first = last = None
    deadline = time.time() + 1800
    while time.time() < deadline:
        now, count = time.time(), stats()["messages"] - before
        if count and first is None:
            first = now
        if count >= args.messages:
            last = now
            break
        time.sleep(0.25)
    current = stats()
    pid = sh(WORKER, "systemctl show -p MainPID --value archive-store").stdout.strip()
    rss_kb = int(sh(WORKER, f"awk '/VmHWM/ {{print $2}}' /proc/{pid}/status").stdout.strip() or 0)
    verify = sh(WORKER, f"{STORE} verify --all", check=False)

    stored = current["messages"] - before
    drain_s = (last or time.time()) - (first or started)
    print(f"load: {load} (messages of {args.length} bytes)")
    print(f"smtp-sink ceiling:           {sink_s:7.1f} s  {sink_rate:8.1f} msg/s")
    print(f"worker0 postfix acknowledged: {ack_s:7.1f} s  {args.messages / ack_s:8.1f} msg/s  ({args.messages / ack_s / sink_rate:.2f} of the ceiling)")
    print(f"worker0 postfix into spool:   {spooled_s:7.1f} s  {args.messages / spooled_s:8.1f} msg/s  (until postfix's queue was empty)")
    print(f"worker0 store drained:        {drain_s:7.1f} s  {stored / drain_s:8.1f} msg/s  (full spool, first to last stored)")
    print(f"store start to drained:       {(last or time.time()) - started:7.1f} s")
    print(f"stored {stored} of {args.messages}; spool backlog {current['spool_backlog']}; "
          f"raw {current['raw_bytes'] / 1e6:.0f} MB stored as {current['stored_bytes'] / 1e6:.0f} MB")
    print(f"store peak RSS: {rss_kb / 1024:.0f} MiB")
    print(f"verify --all: {verify.stdout.strip().splitlines()[-1] if verify.stdout.strip() else verify.stderr.strip()} (exit {verify.returncode})")
    return 0 if stored == args.messages and verify.returncode == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
