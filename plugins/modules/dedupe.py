#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: mailarchive.cluster maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: dedupe
short_description: Find and remove the gateway's second deliveries of one journaled message to two workers
version_added: "0.2.0"
description:
  - SMTP has a window (RFC 1047) between a worker's commit and the gateway hearing its C(250). When that reply is
    lost, postfix on the gateway delivers the same queue file again, maybe to another worker, which keeps a second
    copy. No single worker can see it.
  - Lists, through every worker's archive store API, the messages archived in a time window, and looks at the copies
    of the same bytes (sha256) on more than one worker. Two copies that an arrival of each entered the cluster through
    the same gateway hop (the first gateway's own C(Received) header, with its host, queue ID and time) are one
    journaled message delivered twice, also when a DR site's gateway queued it twice. The same bytes through
    different queue IDs of the first gateway are two journaled messages, and stay two.
  - Keeps the oldest copy (the smallest archive ID), records the other copy's arrivals on it, and removes the other
    copy. The worker that removes it writes an audit entry naming the kept ID. A legal hold does not keep the extra
    copy (the kept copy has the same bytes, so it is under the same hold); the audit entry says so.
  - Safe to interrupt and run again. The worker role also runs this pass on a systemd timer on one worker per site
    (C(worker_dedupe_timer)).
author:
  - mailarchive.cluster maintainers (@mailarchive)
extends_documentation_fragment:
  - mailarchive.cluster.archive_api
attributes:
  check_mode:
    support: full
    description: In check mode the duplicates are found and reported, and nothing is removed.
  diff_mode:
    support: none
    description: Nothing is shown as a diff.
options:
  since:
    description: Start of the window, in Unix seconds; a negative number counts back from now.
    type: int
    default: -172800
  until:
    description:
      - End of the window (exclusive), in Unix seconds; a negative number counts back from now.
      - Zero means now, the mail of this very second included.
    type: int
    default: 0
  remove:
    description: Remove the duplicates found; V(false) only reports them.
    type: bool
    default: true
notes:
  - The workers' API client needs the scope C(dedupe) (list, arrivals, record arrivals, remove a duplicate); it never
    reads mail.
  - A second delivery stored later than the window's end, or a kept copy older than its start, is found by a run whose
    window holds both.
seealso:
  - module: mailarchive.cluster.reconcile
"""

EXAMPLES = r"""
- name: Remove the last two days' duplicate deliveries, site-wide
  mailarchive.cluster.dedupe:
    since: -172800
    workers: "{{ groups['workers'] | map('extract', hostvars, 'worker_api_client') | list }}"
  register: deduped
"""

RETURN = r"""
report:
  description: What the pass listed and found.
  returned: always
  type: dict
  sample: {"listed": {"worker0": 412, "worker1": 398}, "same_bytes_on_several_workers": 4, "duplicate_deliveries": 3,
           "distinct_deliveries_of_the_same_bytes": 1}
duplicates:
  description: Each duplicate delivery found, with the copy kept and the extra copy, and the gateway hop they share.
  returned: always
  type: list
  elements: dict
  sample: [{"sha256": "9f86d0...", "message_id": "<a@b>", "kept": {"worker": "worker1", "id": "4000000069..."},
            "extra": {"worker": "worker0", "id": "4000000069..."}, "gateway": "archive-gw.example.com",
            "queue_id": "4cLx2b0Zz3z9v"}]
removed:
  description: The extra copies removed, as in RV(duplicates), with C(held_by) naming a legal hold they were under.
  returned: always
  type: list
  elements: dict
window:
  description: The window looked at, in Unix seconds.
  returned: always
  type: dict
  sample: {"since": 1795300000, "until": 1795472800}
"""

import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.mailarchive.cluster.plugins.module_utils.archive_api import (
    ArchiveApiError, archive_api_argument_spec, worker_apis)
from ansible_collections.mailarchive.cluster.plugins.module_utils import archive_dedupe as dedupe


def main():
    module = AnsibleModule(
        argument_spec=dict(
            since=dict(type="int", default=-172800),
            until=dict(type="int", default=0),
            remove=dict(type="bool", default=True),
            **archive_api_argument_spec()
        ),
        supports_check_mode=True,
    )
    params = module.params
    now = int(time.time())
    since = now + params["since"] if params["since"] < 0 else params["since"]
    # The window ends before a second; zero means now, this second's mail included.
    until = now + params["until"] + (1 if params["until"] == 0 else 0) if params["until"] <= 0 else params["until"]
    if since >= until:
        module.fail_json(msg="dedupe: since (%d) must be before until (%d)" % (since, until))
    result = dict(changed=False, window={"since": since, "until": until}, duplicates=[], removed=[], report={})
    try:
        apis = worker_apis(params)
        result["duplicates"], result["report"] = dedupe.find(apis, since, until)
        if params["remove"] and not module.check_mode:
            result["removed"] = dedupe.remove(apis, result["duplicates"])
    except ArchiveApiError as exc:
        module.fail_json(msg="dedupe: %s" % exc, **result)
    result["changed"] = bool(result["removed"])
    module.exit_json(**result)


if __name__ == "__main__":
    main()
