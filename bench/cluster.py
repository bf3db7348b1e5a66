"""Cluster benchmark on the running lab (make lab): piler's smtp-source load.

In one run, the same load (default: smtp-source -s 20 -m 10000 -l 100000)
1. into smtp-sink on the gateway: the ceiling of this machine and network;
2. into worker0 alone, sent from archive-gw2 (workers take SMTP only from
   the gateways), past the gateway's queue: one worker's postfix and store;
3. into the gateway's journal address: the gateway spreads it over the
   workers by MX (and, in the lab, copies it to the DR site).

Prints messages/s acknowledged by the receiving postfix, messages/s archived
(first message sent to last message stored), the ratios between the three,
and the spread over the workers.
"""

import subprocess
import time

import lab
from archive_common.client import ArchiveApi, ArchiveApiError
from smtp_load import arguments

PREFIX = "mailarchive-lab-"
GATEWAY_IP = "198.18.10.10"
WORKERS = lab.workers()  # name -> the worker role's contract, with its token
SOURCE = PREFIX + "ns"  # smtp-source runs here, outside the mail path
DIRECT_SOURCE = PREFIX + "archive-gw2"  # workers take SMTP only from the gateways


def sh(container, command, check=True):
    return subprocess.run(["docker", "exec", PREFIX + container if not container.startswith(PREFIX) else container,
                           "sh", "-c", command], capture_output=True, text=True, check=check)


def stored(worker):
    contract = WORKERS[worker]
    api = ArchiveApi(worker, contract["api_url"], contract["token"], 10, cafile=contract["ca_file"])
    for _attempt in range(120):
        try:
            return api.stats()["messages"]
        except ArchiveApiError:
            time.sleep(0.25)
    raise SystemExit(f"{worker}'s store API did not answer for 30 s")


def load(target, recipient, args, source=SOURCE):
    started = time.time()
    sh(source, f"smtp-source -s {args.sessions} -m {args.messages} -l {args.length} "
               f"-f bench@customer.example -t {recipient} {target}")
    return time.time() - started


def until_stored(workers, before, count, started, timeout=3600):
    """Seconds from ``started`` until the workers hold ``count`` more messages."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if sum(stored(w) for w in workers) - sum(before.values()) >= count:
            return time.time() - started
        time.sleep(0.5)
    raise SystemExit(f"only {sum(stored(w) for w in workers) - sum(before.values())} of {count} stored after {timeout} s")


def main():
    args = arguments(__doc__)
    n = args.messages

    sh("archive-gw", "pkill smtp-sink", check=False)
    subprocess.Popen(["docker", "exec", PREFIX + "archive-gw", "smtp-sink", "-u", "nobody", f"{GATEWAY_IP}:2525", "256"])
    time.sleep(1)
    sink_s = load(f"{GATEWAY_IP}:2525", "sink@example.com", args)
    sh("archive-gw", "pkill smtp-sink", check=False)

    before = {w: stored(w) for w in WORKERS}
    started = time.time()
    one_ack = load(f"{WORKERS['worker0']['address']}:25", "archive@archive.example.com", args, source=DIRECT_SOURCE)
    one_done = until_stored(["worker0"], {"worker0": before["worker0"]}, n, started)

    before = {w: stored(w) for w in WORKERS}
    started = time.time()
    gw_ack = load(f"{GATEWAY_IP}:25", "archive@archive-gw.example.com", args)
    cluster_done = until_stored(list(WORKERS), before, n, started)
    spread = {w: stored(w) - before[w] for w in WORKERS}

    print(f"load: smtp-source -s {args.sessions} -m {n} -l {args.length}, sent from {SOURCE}")
    print(f"smtp-sink ceiling:          {n / sink_s:8.1f} msg/s")
    print(f"worker0 alone, accepted:    {n / one_ack:8.1f} msg/s  ({n / one_ack / (n / sink_s):.2f} of the ceiling)")
    print(f"worker0 alone, archived:    {n / one_done:8.1f} msg/s  (first sent to last stored)")
    print(f"gateway, accepted:          {n / gw_ack:8.1f} msg/s  ({n / gw_ack / (n / sink_s):.2f} of the ceiling)")
    print(f"cluster, archived:          {n / cluster_done:8.1f} msg/s  ({one_done / cluster_done:.2f} x worker0 alone)")
    print("spread: " + " ".join(f"{w}={c}" for w, c in spread.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
