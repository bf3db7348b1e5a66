"""The site-wide duplicate pass: one journaled message that the gateway delivered to two workers.

SMTP has a window (RFC 1047) between a worker's commit and the gateway hearing its 250: when the
reply is lost, postfix on the gateway delivers the same queue file again, maybe to another worker.
Each worker keeps one copy per sha256 of its own arrivals; only the site can see the second copy.

Two copies of the same bytes are one journaled message delivered twice when an arrival of each entered
the cluster through the same gateway hop: the same Received line of the first gateway (its host, queue
ID and time), which the store keeps with the arrival's transit. (A gateway that copies to a DR site
delivers there over SMTP too: a lost reply there makes the DR gateway queue the message twice, under
two queue IDs of its own, but both copies carry the first gateway's line.) The oldest copy (the smallest archive ID, which
starts with the time it was stored) is kept; the other copy's arrivals are recorded on it, then the
other copy is removed with an audit entry naming the kept ID. The same bytes through different
gateway queue IDs are two journaled messages, and stay two.

Shared code (see src/README.md): standard library only; the collection's dedupe module uses this
very file through plugins/module_utils/archive_dedupe.py. ``apis`` are archive_client.ArchiveApi
objects (or anything with their listing, arrivals, add_arrivals and remove_duplicate methods).
"""

import re
from concurrent.futures import ThreadPoolExecutor

# A hop's Received header as the store keeps it (one line, white space collapsed): postfix's, or the store's
# own when it receives SMTP itself (worker_receiver smtp, archive_store/receiver.py).
_RECEIVED = re.compile(r"\bby (\S+) \((?:Postfix|archive-store)[^)]*\).*?\bid ([0-9A-Za-z]+)\b")


def delivery(transit):
    """The hop where an arrival entered the cluster: (gateway host, queue ID, the whole Received line), or None.

    ``transit`` is the arrival's Received lines of the cluster's hosts, newest first: the worker's own hop,
    then the gateways' back to the first, which took the message from the journaling server. Every later
    delivery of that queue file, to another worker or (copied to a DR site) by the next gateway again,
    carries the first gateway's line unchanged. An arrival with no gateway hop (imported mail, or mail
    sent to a worker directly) has none, and is never taken for a second delivery.
    """
    hops = [(match.group(1).lower(), match.group(2), line) for line in transit
            for match in [_RECEIVED.search(line)] if match]
    if len(hops) < 2 or hops[-1][0] == hops[0][0]:
        return None
    return hops[-1]


def _listings(apis, since, until):
    """{worker name: [rows]} of every worker, asked at once."""
    with ThreadPoolExecutor(max_workers=len(apis)) as pool:
        return dict(zip([api.name for api in apis], pool.map(lambda api: list(api.listing(since, until)), apis)))


def find(apis, since, until):
    """The duplicate deliveries among the messages the workers archived in [since, until).

    Returns (plan, report): ``plan`` a list of {sha256, message_id, kept: {worker, id}, extra: {worker, id},
    gateway, queue_id}, oldest kept copy first; ``report`` counts what was listed and found.
    """
    listings = _listings(apis, since, until)
    copies = {}
    for name, rows in listings.items():
        for row in rows:
            copies.setdefault(row["sha256"], []).append(dict(row, worker=name))
    shared = dict((sha, found) for sha, found in copies.items() if len(set(c["worker"] for c in found)) > 1)
    wanted = {}
    for found in shared.values():
        for copy in found:
            wanted.setdefault(copy["worker"], []).append(copy["id"])
    arrivals = {}
    for api in apis:
        if api.name in wanted:
            arrivals.update(((api.name, archive_id), rows) for archive_id, rows in api.arrivals(wanted[api.name]).items())
    plan = []
    distinct = 0
    for sha, found in sorted(shared.items(), key=lambda item: min(c["id"] for c in item[1])):
        groups = []  # [kept copy, its deliveries], oldest first
        for copy in sorted(found, key=lambda c: c["id"]):
            hops = dict((hop[2], hop) for hop in (delivery(a["transit"]) for a in arrivals.get((copy["worker"], copy["id"]), []))
                        if hop)
            group = next((g for g in groups if set(hops) & set(g[1])), None)
            if group is None:
                groups.append([copy, hops])
                continue
            shared_hop = group[1][sorted(set(hops) & set(group[1]))[0]]
            group[1].update(hops)
            plan.append({"sha256": sha, "message_id": copy.get("message_id", ""),
                         "kept": {"worker": group[0]["worker"], "id": group[0]["id"]},
                         "extra": {"worker": copy["worker"], "id": copy["id"]},
                         "gateway": shared_hop[0], "queue_id": shared_hop[1]})
        distinct += len(groups) - 1
    report = {"listed": dict((name, len(rows)) for name, rows in listings.items()),
              "same_bytes_on_several_workers": len(shared), "duplicate_deliveries": len(plan),
              "distinct_deliveries_of_the_same_bytes": distinct}
    return plan, report


def remove(apis, plan):
    """Carry out ``plan``: each extra copy's arrivals recorded on the kept copy, then the extra copy removed.

    Safe to cut off at any point and run again: recording arrivals is idempotent, and a copy removed
    before is no longer listed. Returns the removed copies as the workers answered.
    """
    by_name = dict((api.name, api) for api in apis)
    removed = []
    for entry in plan:
        extra, kept = by_name[entry["extra"]["worker"]], by_name[entry["kept"]["worker"]]
        arrivals = extra.arrivals([entry["extra"]["id"]]).get(entry["extra"]["id"])
        if arrivals is None:  # removed since it was listed
            continue
        kept.add_arrivals(entry["kept"]["id"], entry["sha256"], arrivals, entry["extra"])
        answer = extra.remove_duplicate(entry["extra"]["id"], entry["sha256"], entry["kept"])
        removed.append(dict(entry, held_by=answer.get("held_by", "")))
    return removed
