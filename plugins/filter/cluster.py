# -*- coding: utf-8 -*-
# Copyright: mailarchive.cluster maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Small filters that replace long dict_kv/zip/combine pipelines in the roles and playbooks."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import glob
import os

from ansible.errors import AnsibleFilterError


def host_records(hosts, hostvars, zone):
    """[{name: '<host>.<zone>', address: mailarchive_ip}] for each host: mx_verify's O(expected)."""
    records = []
    for host in hosts:
        address = hostvars[host].get("mailarchive_ip")
        if not address:
            raise AnsibleFilterError("host_records: %s has no mailarchive_ip" % host)
        records.append({"name": "%s.%s" % (host, zone), "address": address})
    return records


def python_modules(packages, src_dir):
    """[{src, dest}] for every module of the named packages under src_dir, dest as '<package>/<module>.py'.

    Only *.py files: never a __pycache__ that running the tests left in src/.
    """
    modules = []
    for package in packages:
        found = sorted(glob.glob(os.path.join(src_dir, package, "*.py")))
        if not found:
            raise AnsibleFilterError("python_modules: no package %s in %s" % (package, os.path.realpath(src_dir)))
        modules.extend({"src": path, "dest": "%s/%s" % (package, os.path.basename(path))} for path in found)
    return modules


class FilterModule(object):
    def filters(self):
        return {"host_records": host_records, "python_modules": python_modules}
