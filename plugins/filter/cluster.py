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


def dns_rrsets(records, zone, mx_ttl, default_ttl):
    """Group dns_extra_records into RRsets: [{name: '<name>.<zone>.', type, ttl, values}].

    Names, and MX hosts, are relative to the zone. One RRset has one TTL (RFC 2181 5.2):
    records of one name and type with different TTLs are refused. Address RRsets come first.
    """
    rrsets = {}
    for record in records:
        rtype = record["type"]
        value = record["value"]
        if rtype == "MX":
            preference, host = value.split()
            value = "%s %s.%s." % (preference, host, zone)
        ttl = int(record.get("ttl") or (mx_ttl if rtype == "MX" else default_ttl))
        key = (record["name"], rtype)
        rrset = rrsets.setdefault(key, {"name": "%s.%s." % (record["name"], zone), "type": rtype, "ttl": ttl, "values": []})
        if rrset["ttl"] != ttl:
            raise AnsibleFilterError("dns_rrsets: %s %s has records with TTLs %s and %s; one RRset needs one TTL"
                                     % (rrset["name"], rtype, rrset["ttl"], ttl))
        if value not in rrset["values"]:
            rrset["values"].append(value)
    # A before MX: a server that checks integrity refuses an MX whose in-zone target has no address yet.
    return sorted(rrsets.values(), key=lambda rrset: rrset["type"] == "MX")


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
        return {"dns_rrsets": dns_rrsets, "host_records": host_records, "python_modules": python_modules}
