#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: mailarchive.cluster maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: mx_verify
short_description: Check that a domain's MX records spread mail over the expected workers
version_added: "0.1.0"
description:
  - Asks every given nameserver for the MX records of O(domain) and compares them with the expected workers.
  - Reports each difference as one line (missing, unexpected, preference, TTL, A record, disagreement between
    nameservers) and optionally checks that every MX host answers SMTP on port 25 and offers STARTTLS.
  - A read-only probe, it never changes anything and never reports changed.
author:
  - mailarchive.cluster maintainers (@mailarchive)
requirements:
  - dnspython >= 2.0 on the host that runs the module
attributes:
  check_mode:
    support: full
    description: The module only reads, so check mode runs the same checks.
  diff_mode:
    support: none
    description: Nothing is changed, so there is nothing to show.
options:
  domain:
    description: The domain whose MX records are checked, for example V(archive.example.com).
    type: str
    required: true
  expected:
    description: The MX hosts there should be, each with the IPv4 address its A record should have.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: Fully qualified name of the MX host.
        type: str
        required: true
      address:
        description: The address its A record should have; omit to skip the A check for this host.
        type: str
  preference:
    description: The preference every MX record should have (they are all equal).
    type: int
    default: 10
  ttl:
    description: The TTL every MX record should have; omit to skip the TTL check.
    type: int
  nameservers:
    description:
      - Nameservers (IP addresses) to ask, each on its own. Disagreement between them is reported.
      - Empty asks the system resolver, whose TTLs may be counted down by caching.
    type: list
    elements: str
    default: []
  port:
    description: DNS port of O(nameservers).
    type: int
    default: 53
  timeout:
    description: Seconds to wait for each DNS answer.
    type: float
    default: 3
  check_smtp:
    description: Also connect to every MX host on port 25 and check its banner, EHLO and STARTTLS.
    type: bool
    default: false
  smtp_port:
    description: SMTP port of the MX hosts for O(check_smtp).
    type: int
    default: 25
  smtp_timeout:
    description: Seconds to wait for each SMTP connection.
    type: float
    default: 5
  fail_on_problems:
    description: Fail when any problem is found; otherwise only report it.
    type: bool
    default: true
notes:
  - A DNS error (NXDOMAIN, no answer, timeout, SERVFAIL) fails the module with one line naming the server and the name.
seealso:
  - module: community.general.dig
  - module: mailarchive.cluster.delivery_check
"""

EXAMPLES = r"""
- name: Check the MX set of the archive domain against the lab DNS
  mailarchive.cluster.mx_verify:
    domain: archive.example.com
    expected:
      - {name: worker0.example.com, address: 198.18.10.20}
      - {name: worker1.example.com, address: 198.18.10.21}
      - {name: worker2.example.com, address: 198.18.10.22}
    nameservers: [198.18.10.2]
    preference: 10
    ttl: 3600
    check_smtp: true

- name: Report problems without failing
  mailarchive.cluster.mx_verify:
    domain: archive.example.com
    expected:
      - {name: worker0.example.com, address: 198.18.10.20}
      - {name: worker1.example.com, address: 198.18.10.21}
    fail_on_problems: false
  register: mx
"""

RETURN = r"""
mx:
  description: The MX set found (from the first nameserver that answered), with each host's A records.
  returned: always
  type: list
  elements: dict
  sample: [{"name": "worker0.example.com", "preference": 10, "ttl": 3600, "addresses": ["198.18.10.20"]}]
problems:
  description: One line per difference found.
  returned: always
  type: list
  elements: str
  sample: ["missing: worker3.example.com", "preference differs: worker1.example.com has 20, expected 10"]
mx_ok:
  description: Whether the MX and A records are exactly as expected on every nameserver.
  returned: always
  type: bool
  sample: true
all_reachable:
  description: Whether every MX host answered SMTP and offered STARTTLS; null when O(check_smtp) is false.
  returned: always
  type: bool
  sample: true
smtp:
  description: Per MX host, the SMTP check's result.
  returned: when O(check_smtp) is true
  type: list
  elements: dict
  sample: [{"name": "worker0.example.com", "address": "198.18.10.20", "banner": "220 worker0.example.com ESMTP", "starttls": true, "error": ""}]
servers:
  description: Per nameserver asked, the MX host names it returned.
  returned: always
  type: dict
  sample: {"198.18.10.2": ["worker0.example.com", "worker1.example.com"]}
"""

import smtplib
import socket

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

try:
    import dns.exception
    import dns.message
    import dns.query
    import dns.rcode
    import dns.rdatatype
    import dns.resolver

    HAS_DNSPYTHON = True
except ImportError:
    HAS_DNSPYTHON = False


class DnsProblem(Exception):
    pass


def _fqdn(name):
    return str(name).rstrip(".").lower()


def query(server, port, name, rdtype, timeout):
    """Return the answer RRset for name/rdtype from server (None: system resolver)."""
    where = server or "the system resolver"
    try:
        if server:
            request = dns.message.make_query(name, rdtype)
            response = dns.query.udp(request, server, timeout=timeout, port=port)
            rcode = response.rcode()
            if rcode == dns.rcode.NXDOMAIN:
                raise DnsProblem("NXDOMAIN: %s says %s does not exist" % (where, name))
            if rcode != dns.rcode.NOERROR:
                raise DnsProblem("%s from %s for %s %s" % (dns.rcode.to_text(rcode), where, rdtype, name))
            for rrset in response.answer:
                if rrset.rdtype == dns.rdatatype.from_text(rdtype):
                    return rrset
            raise DnsProblem("no %s answer from %s for %s" % (rdtype, where, name))
        resolver = dns.resolver.Resolver()
        resolver.lifetime = timeout
        return resolver.resolve(name, rdtype).rrset
    except dns.exception.Timeout:
        raise DnsProblem("DNS timeout querying %s for %s %s after %g s" % (where, rdtype, name, timeout))
    except dns.resolver.NXDOMAIN:
        raise DnsProblem("NXDOMAIN: %s says %s does not exist" % (where, name))
    except dns.resolver.NoAnswer:
        raise DnsProblem("no %s answer from %s for %s" % (rdtype, where, name))
    except dns.resolver.NoNameservers as exc:
        raise DnsProblem("SERVFAIL from %s for %s %s (%s)" % (where, rdtype, name, exc))
    except (socket.error, OSError) as exc:
        raise DnsProblem("cannot reach %s for %s %s: %s" % (where, rdtype, name, exc))


def check_smtp_host(name, address, port, timeout):
    result = {"name": name, "address": address, "banner": "", "starttls": False, "error": ""}
    short = "%s:%d" % (name.split(".")[0], port)
    try:
        client = smtplib.SMTP(timeout=timeout)
        code, banner = client.connect(address, port)
        result["banner"] = "%d %s" % (code, banner.decode("utf-8", "replace"))
        code = client.ehlo("mx-verify.invalid")[0]
        if code != 250:
            result["error"] = "%s answered EHLO with %d" % (short, code)
        result["starttls"] = client.has_extn("starttls")
        if not result["starttls"] and not result["error"]:
            result["error"] = "%s does not offer STARTTLS" % short
        client.quit()
    except socket.timeout:
        result["error"] = "%s timed out after %g s" % (short, timeout)
    except ConnectionRefusedError:
        result["error"] = "%s refused" % short
    except (smtplib.SMTPException, OSError) as exc:
        result["error"] = "%s failed: %s" % (short, exc)
    return result


def compare(found, expected, preference, ttl):
    """Problems of one server's MX set: found is a list of dicts name/preference/ttl."""
    problems = []
    found_names = set(r["name"] for r in found)
    expected_names = set(e["name"] for e in expected)
    for name in sorted(expected_names - found_names):
        problems.append("missing: %s" % name)
    for name in sorted(found_names - expected_names):
        problems.append("unexpected: %s" % name)
    for record in found:
        if record["preference"] != preference:
            problems.append("preference differs: %s has %d, expected %d" % (record["name"], record["preference"], preference))
        if ttl is not None and record["ttl"] != ttl:
            problems.append("ttl differs: %s has %d, expected %d" % (record["name"], record["ttl"], ttl))
    return problems


def run(module):
    params = module.params
    domain = params["domain"].rstrip(".")
    expected = [{"name": _fqdn(e["name"]), "address": e.get("address")} for e in params["expected"]]
    servers = params["nameservers"] or [None]
    problems = []
    per_server = {}
    first = None
    for server in servers:
        label = server or "system"
        rrset = query(server, params["port"], domain, "MX", params["timeout"])
        found = [{"name": _fqdn(r.exchange), "preference": r.preference, "ttl": rrset.ttl} for r in rrset]
        found.sort(key=lambda r: r["name"])
        per_server[label] = [r["name"] for r in found]
        for problem in compare(found, expected, params["preference"], params["ttl"]):
            problems.append(problem if len(servers) == 1 else "%s (at %s)" % (problem, label))
        for record in found:
            try:
                record["addresses"] = sorted(r.address for r in query(server, params["port"], record["name"], "A", params["timeout"]))
            except DnsProblem as exc:
                record["addresses"] = []
                problems.append("A record of %s: %s" % (record["name"].split(".")[0], exc))
        for want in expected:
            got = [r for r in found if r["name"] == want["name"]]
            if got and want["address"] and got[0]["addresses"] and want["address"] not in got[0]["addresses"]:
                problems.append("A record of %s is %s, inventory says %s" % (
                    want["name"].split(".")[0], ", ".join(got[0]["addresses"]), want["address"]))
        if first is None:
            first = found
    distinct = set(tuple(names) for names in per_server.values())
    if len(distinct) > 1:
        problems.append("nameservers disagree: " + "; ".join(
            "%s has %s" % (label, ", ".join(names) or "nothing") for label, names in sorted(per_server.items())))
    result = {"changed": False, "mx": first, "servers": per_server, "mx_ok": not problems, "all_reachable": None}
    if params["check_smtp"]:
        smtp = [check_smtp_host(r["name"], (r["addresses"] or [r["name"]])[0], params["smtp_port"], params["smtp_timeout"]) for r in first]
        result["smtp"] = smtp
        result["all_reachable"] = not any(s["error"] for s in smtp)
        problems.extend(s["error"] for s in smtp if s["error"])
    result["problems"] = problems
    return result


def main():
    module = AnsibleModule(
        argument_spec=dict(
            domain=dict(type="str", required=True),
            expected=dict(type="list", elements="dict", required=True, options=dict(
                name=dict(type="str", required=True),
                address=dict(type="str"),
            )),
            preference=dict(type="int", default=10),
            ttl=dict(type="int"),
            nameservers=dict(type="list", elements="str", default=[]),
            port=dict(type="int", default=53),
            timeout=dict(type="float", default=3),
            check_smtp=dict(type="bool", default=False),
            smtp_port=dict(type="int", default=25),
            smtp_timeout=dict(type="float", default=5),
            fail_on_problems=dict(type="bool", default=True),
        ),
        supports_check_mode=True,
    )
    if not HAS_DNSPYTHON:
        module.fail_json(msg=missing_required_lib("dnspython"))
    try:
        result = run(module)
    except DnsProblem as exc:
        module.fail_json(msg=str(exc), changed=False, mx_ok=False, all_reachable=None, problems=[str(exc)], mx=[], servers={})
    if result["problems"] and module.params["fail_on_problems"]:
        module.fail_json(msg="MX check of %s: %s" % (module.params["domain"], "; ".join(result["problems"])), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
