#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: mailarchive.cluster maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: delivery_check
short_description: Prove end to end that mail sent to the gateway is archived once, byte for byte
version_added: "0.1.0"
description:
  - Sends O(count) probe messages by real SMTP (STARTTLS when offered) to O(recipient) at O(gateway), each with a
    unique token and Message-ID.
  - Polls every worker's archive store API until every probe is found or O(timeout) passes.
  - Fails, naming the probes, unless every probe is archived exactly once, with the sha256 of the bytes sent, by a
    worker whose server_id is in the archive ID, and unless at least O(min_workers) workers received probes.
  - Probes carry the header C(X-Mailarchive-Probe), the subject prefix C([mailarchive probe]) and the sender
    C(delivery-check@mailarchive.invalid), so they are easy to tell apart from real mail.
  - With O(remove_probes), the probes are then removed from every worker through the store's probe purge, which
    writes an audit entry for each. Otherwise they are kept under the archive's retention like any other message.
author:
  - mailarchive.cluster maintainers (@mailarchive)
extends_documentation_fragment:
  - mailarchive.cluster.archive_api
attributes:
  check_mode:
    support: full
    description: In check mode nothing is sent and no probe is looked for.
  diff_mode:
    support: none
    description: Nothing is changed, so there is nothing to show.
options:
  gateway:
    description: Address or name of the gateway to send the probes to.
    type: str
    required: true
  port:
    description: SMTP port of the gateway.
    type: int
    default: 25
  recipient:
    description: The journal address the probes are sent to.
    type: str
    default: archive@archive-gw.example.com
  sender:
    description: Envelope sender and From of the probes.
    type: str
    default: delivery-check@mailarchive.invalid
  count:
    description: Number of probe messages.
    type: int
    default: 20
  size:
    description: Approximate size of each probe in bytes.
    type: int
    default: 2000
  timeout:
    description: Seconds to wait for every probe to be archived.
    type: float
    default: 60
  min_workers:
    description: Least number of distinct workers that must have received probes (the spread check).
    type: int
    default: 1
  starttls:
    description: Use STARTTLS when the gateway offers it.
    type: bool
    default: true
  remove_probes:
    description:
      - Remove this run's probes from every worker afterwards, through C(POST /api/v1/probes/<run>/purge).
      - The store removes only messages that are unmistakably this run's probes (Message-ID, envelope sender and
        C(X-Mailarchive-Probe) header all match, archived less than a day ago, no legal hold), and appends an audit
        entry with ID, Message-ID and sha256 for each before deleting it.
      - The store accepts only the default O(sender) as a probe's envelope sender; with another one no probe is removed.
      - A probe that cannot be removed fails the task.
    type: bool
    default: false
  copy_workers:
    description:
      - The workers of the site that O(gateway) copies every message to (the DR site, see C(gateway_copy_to)).
      - Each probe must then also be archived exactly once there, byte for byte, under that worker's server_id;
        with O(remove_probes) it is removed there too, so that no probe stays at either site.
      - Same suboptions as O(workers); their names must differ from the names in O(workers).
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: The worker's name, as used in results.
        type: str
        required: true
      url:
        description: Base URL of the worker's archive store API.
        type: str
        required: true
      server_id:
        description: The worker's server_id; every archive ID it returns must carry it.
        type: int
        required: true
      token:
        description: This worker's API bearer token; otherwise O(api_token) is used.
        type: str
      ca_file:
        description: The CA certificate to verify this worker with; otherwise O(api_ca_file).
        type: path
notes:
  - The module reports changed only when it removed probes.
seealso:
  - module: mailarchive.cluster.mx_verify
"""

EXAMPLES = r"""
- name: Send 20 probes through the gateway and find each on exactly one worker
  mailarchive.cluster.delivery_check:
    gateway: 198.18.10.10
    recipient: archive@archive-gw.example.com
    count: 20
    min_workers: 4
    api_token: "{{ lookup('ansible.builtin.env', 'ARCHIVE_API_TOKEN') }}"
    workers:
      - {name: worker0, url: "https://198.18.10.20:8025", server_id: 0}
      - {name: worker1, url: "https://198.18.10.21:8025", server_id: 1}
  register: delivery
"""

RETURN = r"""
probes:
  description: One entry per probe.
  returned: always
  type: list
  elements: dict
  sample: [{"message_id": "<probe-3f2a-0@mailarchive.invalid>", "worker": "worker3", "archive_id": "4000000069...03...",
            "server_id_ok": true, "sha256_ok": true, "copies": 1, "latency": 0.41}]
spread:
  description: Number of probes archived per worker.
  returned: always
  type: dict
  sample: {"worker0": 4, "worker1": 5, "worker2": 3, "worker3": 4, "worker4": 4}
latency:
  description: Seconds from sending to storing (from the archive ID's timestamp), p50, p95 and max.
  returned: always
  type: dict
  sample: {"p50": 0.4, "p95": 1.1, "max": 1.3}
lost:
  description: Message-IDs of probes no worker archived within the timeout.
  returned: always
  type: list
  elements: str
  sample: []
duplicated:
  description: Message-IDs of probes archived more than once.
  returned: always
  type: list
  elements: str
  sample: []
mismatched:
  description: Message-IDs of probes whose stored bytes differ from what was sent, or whose ID has another server_id.
  returned: always
  type: list
  elements: str
  sample: []
run:
  description: The token of this run, in every probe's body and Message-ID.
  returned: always
  type: str
  sample: 3f2a9c1e
sent:
  description: Number of probes the gateway accepted.
  returned: always
  type: int
  sample: 20
removed:
  description: Archive IDs of the probes removed, per worker (with O(remove_probes)).
  returned: always
  type: dict
  sample: {"worker0": ["4000000069..."], "worker1": []}
copy_site:
  description:
    - With O(copy_workers), the same report for the copy site (probes, spread, latency, lost, duplicated, mismatched,
      removed); empty otherwise.
  returned: always
  type: dict
  sample: {"spread": {"dr-worker0": 11, "dr-worker1": 9}, "lost": [], "duplicated": [], "mismatched": [],
           "removed": {"dr-worker0": ["400000006a..."]}}
"""

import hashlib
import os
import smtplib
import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.mailarchive.cluster.plugins.module_utils import archive_probes, smtp
from ansible_collections.mailarchive.cluster.plugins.module_utils.archive_api import (
    ArchiveApiError, archive_api_argument_spec, worker_apis, worker_options)
from ansible_collections.mailarchive.cluster.plugins.module_utils.archive_ids import server_id_of, unix_time_of


def percentile(values, fraction):
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))], 3)


def send(params, probes):
    client = smtp.connect(params["gateway"], params["port"], params["starttls"])
    try:
        for probe in probes:
            client.sendmail(params["sender"], [params["recipient"]], probe["raw"])
            probe["sent_at"] = time.time()
    finally:
        smtp.close(client)


def collect(params, workers, probes, run):
    """Poll every worker until each probe is found or the timeout passes."""
    by_mid = dict((p["message_id"], p) for p in probes)
    deadline = time.time() + params["timeout"]
    errors = {}
    while True:
        found = dict((mid, []) for mid in by_mid)
        for worker in workers:
            try:
                results = worker["api"].search(archive_probes.search_word(run))
                errors.pop(worker["name"], None)
            except ArchiveApiError as exc:
                errors[worker["name"]] = str(exc)
                continue
            for row in results:
                if row["message_id"] in found:
                    found[row["message_id"]].append((worker, row))
        if all(found.values()) or time.time() > deadline:
            return found, errors
        time.sleep(0.5)


def remove(params, workers, found, run):
    """Purge this run's probes on every worker; return the IDs removed and what could not be."""
    removed, failures = dict((w["name"], []) for w in workers), []
    if not params["remove_probes"]:
        return removed, failures
    for worker in workers:
        try:
            removed[worker["name"]] = sorted(p["id"] for p in worker["api"].purge_probes(run))
        except ArchiveApiError as exc:
            failures.append("probes not removed: %s" % exc)
    gone = set(i for ids in removed.values() for i in ids)
    left = sorted(row["id"] for copies in found.values() for _worker, row in copies if row["id"] not in gone)
    if left:
        failures.append("%d probes not removed: %s" % (len(left), ", ".join(left)))
    return removed, failures


def judge(probes, workers, found):
    """Each probe archived exactly once, with the bytes sent, under its worker's server_id: the site's report."""
    report = {"probes": [], "lost": [], "duplicated": [], "mismatched": [], "spread": dict((w["name"], 0) for w in workers)}
    latencies = []
    for probe in probes:
        copies = found[probe["message_id"]]
        entry = {"message_id": probe["message_id"], "copies": len(copies), "worker": None, "archive_id": None,
                 "server_id_ok": None, "sha256_ok": None, "latency": None}
        if not copies:
            report["lost"].append(probe["message_id"])
        elif len(copies) > 1:
            report["duplicated"].append(probe["message_id"])
        if copies:
            worker, row = copies[0]
            report["spread"][worker["name"]] += 1
            entry.update(worker=worker["name"], archive_id=row["id"],
                         server_id_ok=server_id_of(row["id"]) == worker["server_id"],
                         sha256_ok=row["sha256"] == probe["sha256"] and row["size"] == len(probe["raw"]),
                         latency=round(unix_time_of(row["id"]) - probe["sent_at"], 3))
            latencies.append(entry["latency"])
            if not (entry["server_id_ok"] and entry["sha256_ok"]):
                report["mismatched"].append(probe["message_id"])
        report["probes"].append(entry)
    report["latency"] = {"p50": percentile(latencies, 0.5), "p95": percentile(latencies, 0.95),
                         "max": max(latencies) if latencies else None}
    return report


def problems(report):
    failures = []
    if report["lost"]:
        failures.append("%d lost: %s" % (len(report["lost"]), ", ".join(report["lost"])))
    if report["duplicated"]:
        failures.append("%d duplicated: %s" % (len(report["duplicated"]), ", ".join(report["duplicated"])))
    if report["mismatched"]:
        failures.append("%d stored with other bytes or server_id: %s" % (len(report["mismatched"]), ", ".join(report["mismatched"])))
    return failures


def api_workers(module, option):
    params = module.params
    try:
        return [dict(spec, api=api) for spec, api in zip(params[option], worker_apis(params, option))]
    except ArchiveApiError as exc:
        module.fail_json(msg=str(exc))


def run_check(module):
    params = module.params
    run = os.urandom(4).hex()
    workers = api_workers(module, "workers")
    copy_workers = api_workers(module, "copy_workers") if params["copy_workers"] else []
    shared = sorted(set(w["name"] for w in workers) & set(w["name"] for w in copy_workers))
    if shared:
        module.fail_json(msg="copy_workers: %s also in workers; the copy site is another site" % ", ".join(shared))
    probes = []
    for number in range(params["count"]):
        message_id, raw = archive_probes.make(run, number, params["sender"], params["recipient"], params["size"])
        probes.append({"message_id": message_id, "raw": raw, "sha256": hashlib.sha256(raw).hexdigest()})
    try:
        send(params, probes)
    except (smtplib.SMTPException, OSError) as exc:
        module.fail_json(msg="sending probes to %s:%d failed after %d of %d: %s" % (
            params["gateway"], params["port"], sum(1 for p in probes if "sent_at" in p), len(probes), exc), changed=False)
    found, errors = collect(params, workers, probes, run)
    report = judge(probes, workers, found)
    failures = problems(report)
    receiving = sum(1 for count in report["spread"].values() if count)
    if receiving < params["min_workers"]:
        failures.append("only %d workers received probes, expected at least %d" % (receiving, params["min_workers"]))
    removed, remove_failures = remove(params, workers, found, run)
    failures.extend(remove_failures)
    copy_site = {}
    if copy_workers:
        copies_found, copy_errors = collect(params, copy_workers, probes, run)
        errors.update(copy_errors)
        copy_site = judge(probes, copy_workers, copies_found)
        copy_site["removed"], copy_remove_failures = remove(params, copy_workers, copies_found, run)
        failures.extend("at the copy site: %s" % failure for failure in problems(copy_site) + copy_remove_failures)
    result = dict(report, changed=any(removed.values()) or any(copy_site.get("removed", {}).values()), removed=removed,
                  run=run, sent=len(probes), copy_site=copy_site, api_errors=sorted(errors.values()))
    if failures:
        if errors:
            failures.append("API errors: " + "; ".join(sorted(errors.values())))
        module.fail_json(msg="delivery check via %s: %s" % (params["gateway"], "; ".join(failures)), **result)
    module.exit_json(**result)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            gateway=dict(type="str", required=True),
            port=dict(type="int", default=25),
            recipient=dict(type="str", default="archive@archive-gw.example.com"),
            sender=dict(type="str", default=archive_probes.SENDER),
            count=dict(type="int", default=20),
            size=dict(type="int", default=2000),
            timeout=dict(type="float", default=60),
            min_workers=dict(type="int", default=1),
            starttls=dict(type="bool", default=True),
            remove_probes=dict(type="bool", default=False),
            copy_workers=dict(type="list", elements="dict", default=[], options=worker_options()),
            **archive_api_argument_spec()
        ),
        supports_check_mode=True,
    )
    if module.check_mode:
        module.exit_json(changed=False, run="", sent=0, probes=[], spread={}, latency={}, lost=[], duplicated=[],
                         mismatched=[], api_errors=[], removed={}, copy_site={})
    run_check(module)


if __name__ == "__main__":
    main()
