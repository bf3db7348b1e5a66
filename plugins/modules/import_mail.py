#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: mailarchive.cluster maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: import_mail
short_description: Import old mail (mbox, Maildir, .eml folders, IMAP, Outlook PST) into a site's workers
version_added: "0.2.0"
description:
  - Reads every message of one source and sends it, byte for byte, to the workers' archive store API
    (C(POST /api/v1/import), the scope C(import)), which commits each batch to disk before it answers.
  - Messages are spread over the workers by the sha256 of their bytes. Before a batch is sent, every worker is asked
    whether it already holds those bytes; a message archived anywhere in the site (journaled or imported) is reported
    as already present and not imported again.
  - A state file per source (under O(state_dir)) records each message a worker holds, so a run that stopped (a lost
    worker, a killed controller) goes on where it stopped. The failures of a run are listed, one line each, in the
    state file's name plus C(.failures).
  - Imported mail keeps its own date for retention (its Date header, else the IMAP internal date or the file's
    time) and carries its source (kind, file or account, folder, position) in its arrival record.
  - The same code runs from a terminal, with a progress bar, as C(scripts/mailarchive-import).
author:
  - mailarchive.cluster maintainers (@mailarchive)
extends_documentation_fragment:
  - mailarchive.cluster.archive_api
attributes:
  check_mode:
    support: full
    description: In check mode the source is read and the workers asked what they hold; nothing is imported, and the
      result counts as imported what would be.
  diff_mode:
    support: none
    description: Mail is added, never changed.
options:
  kind:
    description: What the source is.
    type: str
    required: true
    choices: [mbox, maildir, eml, imap, pst]
  location:
    description:
      - The mbox or PST file, the Maildir or .eml folder (searched recursively), or for O(kind=imap) the server as
        V(imaps://host[:port]) (TLS from the start) or V(imap://host[:port]) (STARTTLS, required).
      - Files are read on the controller.
    type: str
    required: true
  mbox_format:
    description: How the mbox quoted body lines starting with C(From ), which the import undoes.
    type: str
    choices: [mboxo, mboxrd]
    default: mboxrd
  username:
    description: The IMAP account.
    type: str
    default: ""
  password:
    description: The IMAP password or app password. OAuth2 (Microsoft 365, Gmail) is not supported.
    type: str
    default: ""
  folders:
    description: The IMAP folders to import; all folders when empty.
    type: list
    elements: str
    default: []
  imap_ca_file:
    description: The CA certificate to verify the IMAP server with; the system's trusted CAs otherwise.
    type: path
  state_dir:
    description: Where the state and failures files of each source are kept, on the controller.
    type: path
    required: true
  max_message_bytes:
    description: The largest message the workers take (the worker role's C(worker_message_size_limit)); larger
      ones fail without being sent.
    type: int
    default: 52000000
seealso:
  - module: mailarchive.cluster.search
"""

EXAMPLES = r"""
- name: Import an old mbox into the site
  mailarchive.cluster.import_mail:
    kind: mbox
    location: /srv/old-mail/finance-2015.mbox
    mbox_format: mboxrd
    state_dir: "{{ playbook_dir }}/../import-state"
    api_token: "{{ importer_token }}"
    workers: "{{ groups['workers'] | map('extract', hostvars, 'worker_api_client') | list }}"
  register: imported

- name: Import an IMAP account's folders
  mailarchive.cluster.import_mail:
    kind: imap
    location: imaps://imap.example.com
    username: alice@example.com
    password: "{{ vault_imap_passwords.alice }}"
    folders: [INBOX, Sent]
    state_dir: /var/lib/mailarchive-import
    api_token: "{{ importer_token }}"
    workers: "{{ importer_workers }}"
"""

RETURN = r"""
summary:
  description: What the run did.
  returned: always
  type: dict
  sample: {"read": 17, "imported": 17, "imported_bytes": 121052, "already_present": 0, "skipped": {},
           "failed": {}, "skipped_total": 0, "failed_total": 0, "stopped": ""}
state_file:
  description: The source's state file; the failures are listed in it plus C(.failures).
  returned: always
  type: str
failures:
  description: The first 100 failures, one line each, naming the source and the message's position.
  returned: always
  type: list
  elements: str
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.mailarchive.cluster.plugins.module_utils.archive_api import (
    ArchiveApiError, archive_api_argument_spec, worker_apis)
from ansible_collections.mailarchive.cluster.plugins.module_utils import archive_importer as importer
from ansible_collections.mailarchive.cluster.plugins.module_utils import archive_mailsources as mailsources


def main():
    module = AnsibleModule(
        argument_spec=dict(
            kind=dict(type="str", required=True, choices=list(mailsources.KINDS)),
            location=dict(type="str", required=True),
            mbox_format=dict(type="str", default="mboxrd", choices=list(mailsources.MBOX_FORMATS)),
            username=dict(type="str", default=""),
            password=dict(type="str", default="", no_log=True),
            folders=dict(type="list", elements="str", default=[]),
            imap_ca_file=dict(type="path"),
            state_dir=dict(type="path", required=True),
            max_message_bytes=dict(type="int", default=52000000),
            **archive_api_argument_spec()
        ),
        required_if=[("kind", "imap", ("username", "password"))],
        supports_check_mode=True,
    )
    params = module.params
    try:
        apis = worker_apis(params)
    except ArchiveApiError as exc:
        module.fail_json(msg="import_mail: %s" % exc)
    location = params["location"] if params["kind"] == "imap" else os.path.abspath(params["location"])
    state_file = importer.state_path(params["state_dir"], params["kind"],
                                     location + (" " + params["username"] if params["username"] else ""))
    items = mailsources.read(params["kind"], location, limit=params["max_message_bytes"], mbox_format=params["mbox_format"],
                             username=params["username"], password=params["password"], folders=params["folders"],
                             cafile=params["imap_ca_file"])
    state = importer.State(state_file)
    try:
        summary = importer.Importer(apis, state, check_only=module.check_mode).run(items, stop_on=(mailsources.SourceError,))
    except importer.ImportStopped as exc:
        module.fail_json(msg="import_mail: %s" % exc, state_file=state_file)
    finally:
        state.close()
        for api in apis:
            api.close()
    with open(state_file + ".failures", encoding="utf-8") as handle:
        failures = [line.rstrip("\n") for _number, line in zip(range(100), handle)]
    result = dict(summary=summary.as_dict(), state_file=state_file, failures=failures,
                  changed=summary.imported > 0 and not module.check_mode)
    if summary.stopped:
        module.fail_json(msg="import of %s %s stopped: %s; run it again to go on" % (params["kind"], location, summary.stopped),
                         **result)
    if failures:
        module.fail_json(msg="%d messages of %s %s failed (listed in %s.failures); the rest were imported"
                         % (sum(summary.failed.values()), params["kind"], location, state_file), **result)
    module.exit_json(msg="; ".join(summary.lines()), **result)


if __name__ == "__main__":
    main()
