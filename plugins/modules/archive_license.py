#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: mailarchive.cluster maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: archive_license
short_description: Write an archive worker's license file, checked as the archive store checks it
version_added: "0.1.0"
description:
  - Writes one license line to O(path), from O(line) or from its parts, only when the content differs.
  - Validates every field with the archive store's own code (the same file), so a license the store would refuse
    fails here, with one line naming the field, what was expected and what was found.
  - Warns when the license expires within O(warn_days) days, and returns the parsed fields.
author:
  - mailarchive.cluster maintainers (@mailarchive)
extends_documentation_fragment:
  - ansible.builtin.files
attributes:
  check_mode:
    support: full
    description: Reports whether the file would change, without writing it.
  diff_mode:
    support: full
    description: Shows the old and the new license line.
options:
  path:
    description: The license file.
    type: path
    default: /etc/archive-store/license
  line:
    description: A whole license line. Mutually exclusive with the parts.
    type: str
  customer:
    description: License customer (when O(line) is not given).
    type: str
  expiry:
    description: Expiry as a Unix time.
    type: int
  server_id:
    description: The worker's server_id, 0-255; the license must carry it.
    type: int
    required: true
  max_release:
    description: Newest store release date (YYYYMMDD) the license covers.
    type: str
  multitenancy:
    description: Multitenancy flag.
    type: int
    choices: [0, 1]
    default: 0
  hostname:
    description: The licensed archive hostname; the license must carry it.
    type: str
    required: true
  ip:
    description: Licensed IP address; V(0.0.0.0) means any.
    type: str
    default: 0.0.0.0
  warn_days:
    description: Warn when fewer days than this remain.
    type: int
    default: 30
  check_ip:
    description: Check that O(ip) is V(0.0.0.0) or an address of the host the module runs on.
    type: bool
    default: true
notes:
  - The content is never logged; O(line) is C(no_log).
"""

EXAMPLES = r"""
- name: Write worker2's license from its parts
  mailarchive.cluster.archive_license:
    customer: EXAMPLE
    expiry: 2000000000
    server_id: 2
    max_release: "20271231"
    hostname: archive.example.com
    owner: archive-store
    group: archive-store
    mode: "0600"
  register: license

- name: Write a whole line given by the vendor
  mailarchive.cluster.archive_license:
    line: "{{ vault_worker_license_line }}"
    server_id: "{{ worker_server_id }}"
    hostname: archive.example.com
"""

RETURN = r"""
license:
  description: The license's fields, as the store reads them.
  returned: success
  type: dict
  sample: {"customer": "EXAMPLE", "server_id": 2, "expiry": 2000000000, "expiry_date": "2033-05-18",
           "days_left": 2368.1, "max_release": "20271231", "multitenancy": 0, "hostname": "archive.example.com",
           "ip": "0.0.0.0"}
server_id:
  description: The license's server_id.
  returned: success
  type: int
  sample: 2
days_left:
  description: Days until the license expires.
  returned: success
  type: float
  sample: 2368.1
path:
  description: The license file.
  returned: always
  type: str
  sample: /etc/archive-store/license
"""

import os
import tempfile

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.mailarchive.cluster.plugins.module_utils.archive_license import (
    LicenseError, check, expiry_warning, parse_line,
)

PARTS = ("customer", "expiry", "max_release")


def compose(params):
    if params["line"]:
        return params["line"].strip()
    return ",".join("%s=%s" % (name, params[name]) for name in (
        "customer", "expiry", "server_id", "max_release", "multitenancy", "hostname", "ip"))


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", default="/etc/archive-store/license"),
            line=dict(type="str", no_log=True),
            customer=dict(type="str"),
            expiry=dict(type="int"),
            server_id=dict(type="int", required=True),
            max_release=dict(type="str"),
            multitenancy=dict(type="int", choices=[0, 1], default=0),
            hostname=dict(type="str", required=True),
            ip=dict(type="str", default="0.0.0.0"),
            warn_days=dict(type="int", default=30),
            check_ip=dict(type="bool", default=True),
        ),
        mutually_exclusive=[("line", name) for name in PARTS],
        required_one_of=[("line", "customer")],
        required_by={"customer": ("expiry", "max_release")},
        add_file_common_args=True,
        supports_check_mode=True,
    )
    params = module.params
    path = params["path"]
    line = compose(params)
    try:
        lic = parse_line(line)
        addresses = None if params["check_ip"] else (lambda: [lic.ip])
        lic = check(lic, params["server_id"], params["hostname"], **({"addresses": addresses} if addresses else {}))
    except LicenseError as exc:
        module.fail_json(msg="%s: %s" % (path, exc), path=path, field=exc.field, expected=exc.expected, found=exc.found)

    content = line + "\n"
    try:
        with open(path) as handle:
            before = handle.read()
    except IOError:
        before = None
    changed = before != content
    result = {"changed": changed, "path": path, "license": lic.as_dict(), "server_id": lic.server_id,
              "days_left": round(lic.days_left(), 1)}
    if module._diff:
        result["diff"] = {"before": before or "", "after": content, "before_header": path, "after_header": path}
    warning = expiry_warning(lic, warn_days=params["warn_days"])
    if warning:
        module.warn("%s: %s" % (path, warning))
    if changed and not module.check_mode:
        directory = os.path.dirname(path) or "."
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".license.")
        with os.fdopen(fd, "w") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        module.atomic_move(tmp, path)
    file_args = module.load_file_common_arguments(params, path=path)
    if not module.check_mode or not changed:
        result["changed"] = module.set_fs_attributes_if_different(file_args, result["changed"])
    module.exit_json(**result)


if __name__ == "__main__":
    main()
