#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: mailarchive.cluster maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: search
short_description: Search the whole archive, every worker at once
version_added: "0.1.0"
description:
  - Sends the query to every worker's archive store API at the same time and merges the answers, newest first (by
    archive ID, which starts with the time the message was stored).
  - Each worker holds only the mail it received, so a search that leaves out a worker is incomplete. The module
    therefore fails, naming the worker, if any worker does not answer.
  - The query language is the store's own, for example V(invoice from:alice@example.com after:2026-01-01).
author:
  - mailarchive.cluster maintainers (@mailarchive)
extends_documentation_fragment:
  - mailarchive.cluster.archive_api
attributes:
  check_mode:
    support: full
    description: The module only reads.
  diff_mode:
    support: none
    description: Nothing is changed.
options:
  query:
    description:
      - Words (all must match), C("a phrase"), and the fields C(from:), C(to:), C(subject:), C(attachment:),
        C(msgid:), C(after:) and C(before:) (dates as YYYY-MM-DD).
    type: str
    required: true
  limit:
    description: How many matches to return.
    type: int
    default: 50
  offset:
    description: How many of the newest matches to skip (for paging); O(offset) + O(limit) is at most 1000.
    type: int
    default: 0
seealso:
  - module: mailarchive.cluster.delivery_check
"""

EXAMPLES = r"""
- name: Find a customer's mail about an invoice, cluster-wide
  mailarchive.cluster.search:
    query: "invoice from:alice@customer.example"
    limit: 20
    api_token: "{{ lookup('ansible.builtin.env', 'ARCHIVE_API_TOKEN') }}"
    workers:
      - {name: worker0, url: "https://198.18.10.20:8025", server_id: 0}
      - {name: worker1, url: "https://198.18.10.21:8025", server_id: 1}
  register: found
"""

RETURN = r"""
results:
  description: The matches, newest first, each with the worker that holds it.
  returned: always
  type: list
  elements: dict
  sample: [{"id": "4000000069...", "worker": "worker3", "message_id": "<a1@customer.example>",
            "subject": "Invoice 2026-114", "from": "alice@customer.example", "sha256": "9f86d0...", "size": 5120}]
count:
  description: Number of matches returned.
  returned: always
  type: int
  sample: 20
elapsed_ms:
  description: Milliseconds the search took, all workers together.
  returned: always
  type: float
  sample: 12.5
"""

import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.mailarchive.cluster.plugins.module_utils.archive_api import (
    ArchiveApiError, archive_api_argument_spec, worker_apis)
from ansible_collections.mailarchive.cluster.plugins.module_utils.archive_client import search_all
from ansible_collections.mailarchive.cluster.plugins.module_utils.archive_ids import server_id_of


def main():
    module = AnsibleModule(
        argument_spec=dict(
            query=dict(type="str", required=True),
            limit=dict(type="int", default=50),
            offset=dict(type="int", default=0),
            **archive_api_argument_spec()
        ),
        supports_check_mode=True,
    )
    params = module.params
    started = time.time()
    try:
        apis = worker_apis(params)
        results = search_all(apis, params["query"], params["limit"], params["offset"])
    except ArchiveApiError as exc:
        module.fail_json(msg="search %r: %s" % (params["query"], exc))
    server_ids = dict((api.name, api.server_id) for api in apis)
    foreign = [row["id"] for row in results if server_id_of(row["id"]) != server_ids[row["worker"]]]
    if foreign:
        module.fail_json(msg="IDs that do not carry their worker's server_id (two workers share a URL?): %s"
                         % ", ".join(foreign[:5]))
    module.exit_json(changed=False, results=results, count=len(results),
                     elapsed_ms=round((time.time() - started) * 1000, 1))


if __name__ == "__main__":
    main()
