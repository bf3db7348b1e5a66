#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: mailarchive.cluster maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: reconcile
short_description: Compare two archive sites message by message, and re-send what one of them lacks
version_added: "0.1.0"
description:
  - Lists, through every worker's archive store API, the messages each of two sites (for example the primary and the
    disaster-recovery site) archived in a time window, and compares them by the sha256 of their bytes.
  - Reports the messages missing on either side, with the archive ID and worker that holds them and their Message-ID.
  - With O(resend), fetches each missing message from the worker that holds it and sends it by SMTP to the other
    site's gateway, with its original envelope sender, then waits until that site has archived it.
  - A message archived at one site in the window is looked for at the other site in the window widened by O(slack)
    on both sides, since the two copies are archived at slightly different times. One not found there is looked up
    by its sha256 on every worker of the other site before it is called missing, so a copy archived there earlier
    (the same message journaled again) is not re-sent.
author:
  - mailarchive.cluster maintainers (@mailarchive)
attributes:
  check_mode:
    support: full
    description: In check mode the comparison runs, but nothing is re-sent.
  diff_mode:
    support: none
    description: Nothing is changed but by re-sending mail.
options:
  sites:
    description: The two sites to compare.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: The site's name in results, such as V(primary) or V(dr).
        type: str
        required: true
      gateway:
        description: Address of the site's gateway, where re-sent mail goes.
        type: str
        required: true
      port:
        description: SMTP port of O(sites[].gateway).
        type: int
        default: 25
      recipient:
        description: The site's journal address.
        type: str
        required: true
      workers:
        description: The site's workers.
        type: list
        elements: dict
        required: true
        suboptions:
          name:
            description: The worker's name, as used in results.
            type: str
            required: true
          url:
            description: Base URL of the worker's archive store API.
            type: str
            required: true
          token:
            description: The worker's API bearer token.
            type: str
            required: true
          server_id:
            description:
              - The worker's server_id. Optional; accepted so that the worker role's C(worker_api_client) fact can be
                passed as it is.
            type: int
          ca_file:
            description: The site CA's certificate to verify this worker's HTTPS certificate with (the system's CAs without it).
            type: path
  since:
    description:
      - Start of the window, in Unix seconds; a negative number counts back from now.
    type: int
    default: -86400
  until:
    description:
      - End of the window (exclusive), in Unix seconds; zero or a negative number counts back from now.
      - Leave a little time before now so that mail still on its way is not reported.
    type: int
    default: -60
  slack:
    description: Seconds by which the other site's window is widened on both sides.
    type: int
    default: 600
  exclude_probes:
    description:
      - Leave out mailarchive.cluster.delivery_check's probes (Message-ID C(<probe-...@mailarchive.invalid>)), which
        that module may have removed at one site only.
    type: bool
    default: true
  resend:
    description: Re-send every missing message from the site that has it to the site that lacks it.
    type: bool
    default: false
  resend_timeout:
    description: Seconds to wait for the re-sent messages to be archived.
    type: float
    default: 120
  expect:
    description:
      - The sha256 digests of messages that must be archived at both sites, such as mail just sent through the gateways
        to prove that reconcile sees it. The module waits up to O(expect_timeout) for them (from O(since) on), then
        compares as usual; it fails naming the digests a site still lacks.
      - A digest the site already held before O(since) counts as held; the same bytes sent again become one more
        arrival on the message a worker already holds, not a message of the window.
    type: list
    elements: str
    default: []
  expect_timeout:
    description: Seconds to wait for the messages in O(expect).
    type: float
    default: 120
  starttls:
    description: Use STARTTLS when the gateway offers it.
    type: bool
    default: true
  api_timeout:
    description: Seconds to wait for one API request.
    type: float
    default: 10
notes:
  - Reports changed only when it re-sent mail.
  - In a setup where the primary gateway copies every message to the DR site (C(gateway_copy_to)), a message re-sent
    to the primary is copied to the DR site again; the DR worker that receives it may differ from the one holding it.
seealso:
  - module: mailarchive.cluster.delivery_check
"""

EXAMPLES = r"""
- name: Compare the last day of the primary and the DR site and repair both
  mailarchive.cluster.reconcile:
    since: -86400
    resend: true
    sites:
      - name: primary
        gateway: 198.18.10.10
        recipient: archive@archive-gw.example.com
        workers:
          - {name: worker0, url: "https://198.18.10.20:8025", token: "{{ token0 }}"}
      - name: dr
        gateway: 198.18.10.110
        recipient: archive@dr-archive-gw.example.com
        workers:
          - {name: dr-worker0, url: "https://198.18.10.120:8025", token: "{{ dr_token0 }}"}
  register: reconciled
"""

RETURN = r"""
window:
  description: The window compared, in Unix seconds.
  returned: always
  type: dict
  sample: {"since": 1795300000, "until": 1795386340}
counts:
  description: Distinct messages (by sha256) each site archived in the window.
  returned: always
  type: dict
  sample: {"primary": 200, "dr": 195}
missing:
  description:
    - Per site, the messages it lacks, each with the sha256, Message-ID, and the archive ID and worker at the other site.
  returned: always
  type: dict
  sample: {"primary": [], "dr": [{"sha256": "9f86d0...", "message_id": "<a@b>", "id": "4000000069...", "worker": "worker2"}]}
in_sync:
  description: Whether neither site lacks anything.
  returned: always
  type: bool
resent:
  description: Per site, the sha256 of the messages re-sent to it.
  returned: always
  type: dict
  sample: {"primary": [], "dr": ["9f86d0..."]}
expected:
  description: Per site, how many of the messages in O(expect) it holds.
  returned: always
  type: dict
  sample: {"primary": 75, "dr": 75}
repaired:
  description: Per site, the sha256 of re-sent messages that the site has archived since.
  returned: always
  type: dict
  sample: {"primary": [], "dr": ["9f86d0..."]}
"""

import base64
import hashlib
import smtplib
import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.mailarchive.cluster.plugins.module_utils import smtp
from ansible_collections.mailarchive.cluster.plugins.module_utils.archive_api import ArchiveApi, ArchiveApiError
from ansible_collections.mailarchive.cluster.plugins.module_utils.archive_ids import unix_time_of
from ansible_collections.mailarchive.cluster.plugins.module_utils.archive_probes import is_probe


def absolute(value, now):
    return now + value if value <= 0 else value


class Site(object):
    def __init__(self, spec, api_timeout):
        self.name = spec["name"]
        self.spec = spec
        self.apis = [ArchiveApi(w["name"], w["url"], w["token"], api_timeout, cafile=w.get("ca_file")) for w in spec["workers"]]

    def messages(self, since, until, exclude_probes):
        """sha256 -> (row, api) for every message the site archived in [since, until)."""
        found = {}
        for api in self.apis:
            for row in api.listing(since, until):
                if exclude_probes and is_probe(row["message_id"]):
                    continue
                found.setdefault(row["sha256"], (row, api))
        return found

    def has(self, sha256):
        return any(api.search("sha256:" + sha256, limit=1) for api in self.apis)

    def lacks(self, digests, listed):
        """The digests not in listed that no worker of the site holds at all: a copy archived before the window
        (the same bytes journaled again become one more arrival on it) is held, not missing."""
        return [sha for sha in digests if sha not in listed and not self.has(sha)]


def compare(sites, since, until, slack, exclude_probes):
    wide = [site.messages(since - slack, until + slack, exclude_probes) for site in sites]
    narrow = [dict((sha, hit) for sha, hit in found.items() if since <= unix_time_of(hit[0]["id"]) < until) for found in wide]
    missing = {}
    for index, site in enumerate(sites):
        other = 1 - index
        lacking = set(site.lacks(narrow[other], wide[index]))
        missing[site.name] = [
            {"sha256": sha, "message_id": row["message_id"], "id": row["id"], "worker": api.name}
            for sha, (row, api) in sorted(narrow[other].items(), key=lambda item: item[1][0]["id"])
            if sha in lacking
        ]
    return missing, dict((site.name, len(narrow[i])) for i, site in enumerate(sites)), narrow


def resend(module, sites, missing, narrow):
    """Send each missing message from the site holding it to the site lacking it."""
    resent = dict((site.name, []) for site in sites)
    for index, site in enumerate(sites):
        if not missing[site.name]:
            continue
        holders = narrow[1 - index]
        client = smtp.connect(site.spec["gateway"], site.spec["port"], module.params["starttls"])
        try:
            for entry in missing[site.name]:
                row, api = holders[entry["sha256"]]
                meta = api.get_json("/api/v1/messages/%s?raw=1" % row["id"])
                raw = base64.b64decode(meta["raw_b64"])
                if hashlib.sha256(raw).hexdigest() != entry["sha256"]:
                    module.fail_json(msg="%s: message %s read back with another sha256; not re-sent" % (api.name, row["id"]))
                client.sendmail(meta["env_from"] or "<>", [site.spec["recipient"]], raw)
                resent[site.name].append(entry["sha256"])
        finally:
            smtp.close(client)
    return resent


def wait_for(sites, resent, timeout):
    deadline = time.time() + timeout
    repaired = dict((site.name, []) for site in sites)
    while True:
        for site in sites:
            for sha in resent[site.name]:
                if sha not in repaired[site.name] and site.has(sha):
                    repaired[site.name].append(sha)
        done = all(len(repaired[s.name]) == len(resent[s.name]) for s in sites)
        if done or time.time() > deadline:
            return repaired
        time.sleep(1)


def wait_for_expected(sites, expect, since, timeout):
    """Poll both sites until each expected sha256 is archived at both; return what each still lacks."""
    deadline = time.time() + timeout
    while True:
        now = int(time.time()) + 1
        absent = dict((site.name, sorted(site.lacks(set(expect), site.messages(since, now, False)))) for site in sites)
        if not any(absent.values()) or time.time() > deadline:
            return absent
        time.sleep(2)


def main():
    worker = dict(name=dict(type="str", required=True), url=dict(type="str", required=True),
                  token=dict(type="str", required=True, no_log=True), server_id=dict(type="int"),
                  ca_file=dict(type="path"))
    module = AnsibleModule(
        argument_spec=dict(
            sites=dict(type="list", elements="dict", required=True, options=dict(
                name=dict(type="str", required=True),
                gateway=dict(type="str", required=True),
                port=dict(type="int", default=25),
                recipient=dict(type="str", required=True),
                workers=dict(type="list", elements="dict", required=True, options=worker),
            )),
            since=dict(type="int", default=-86400),
            until=dict(type="int", default=-60),
            slack=dict(type="int", default=600),
            exclude_probes=dict(type="bool", default=True),
            resend=dict(type="bool", default=False),
            resend_timeout=dict(type="float", default=120),
            expect=dict(type="list", elements="str", default=[]),
            expect_timeout=dict(type="float", default=120),
            starttls=dict(type="bool", default=True),
            api_timeout=dict(type="float", default=10),
        ),
        supports_check_mode=True,
    )
    params = module.params
    if len(params["sites"]) != 2 or params["sites"][0]["name"] == params["sites"][1]["name"]:
        module.fail_json(msg="sites: expected two sites with different names, found %s"
                         % [s["name"] for s in params["sites"]])
    now = int(time.time())
    since, until = absolute(params["since"], now), absolute(params["until"], now)
    if since >= until:
        module.fail_json(msg="since (%d) must be before until (%d)" % (since, until))
    malformed = [sha for sha in params["expect"] if len(sha) != 64 or sha.strip("0123456789abcdef")]
    if malformed:
        module.fail_json(msg="expect: expected sha256 digests (64 lowercase hex digits), found %s" % ", ".join(malformed[:3]))
    sites = [Site(spec, params["api_timeout"]) for spec in params["sites"]]
    try:
        absent = wait_for_expected(sites, params["expect"], since, params["expect_timeout"]) if params["expect"] else {}
        missing, counts, narrow = compare(sites, since, until, params["slack"], params["exclude_probes"])
    except ArchiveApiError as exc:
        module.fail_json(msg="reconcile: %s" % exc)
    result = dict(changed=False, window={"since": since, "until": until}, counts=counts, missing=missing,
                  in_sync=not any(missing.values()), resent=dict((s.name, []) for s in sites),
                  repaired=dict((s.name, []) for s in sites),
                  expected=dict((s.name, len(params["expect"]) - len(absent.get(s.name, []))) for s in sites))
    if any(absent.values()):
        module.fail_json(msg="reconcile: of %d expected messages, not archived within %g s: %s" % (
            len(params["expect"]), params["expect_timeout"],
            "; ".join("%d at %s (%s)" % (len(shas), name, ", ".join(sha[:12] for sha in shas[:5]))
                      for name, shas in sorted(absent.items()) if shas)), **result)
    if not params["resend"] or module.check_mode or result["in_sync"]:
        module.exit_json(**result)
    try:
        result["resent"] = resend(module, sites, missing, narrow)
    except (smtplib.SMTPException, OSError, ArchiveApiError) as exc:
        module.fail_json(msg="reconcile: re-sending failed: %s" % exc, **result)
    result["changed"] = True
    result["repaired"] = wait_for(sites, result["resent"], params["resend_timeout"])
    unrepaired = ["%s: %s" % (s.name, sha) for s in sites for sha in result["resent"][s.name]
                  if sha not in result["repaired"][s.name]]
    if unrepaired:
        module.fail_json(msg="reconcile: %d re-sent messages not archived within %g s: %s"
                         % (len(unrepaired), params["resend_timeout"], ", ".join(unrepaired)), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
