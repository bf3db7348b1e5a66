"""Log in against LDAP (python3-ldap3): bind as the user over ldaps://, read their addresses and groups.

Addresses come from ``mail`` and from ``proxyAddresses`` (Active Directory's ``smtp:`` entries);
the roles from membership of the configured auditor and admin groups (``member`` or
``uniqueMember``).  Every LDAP user has the ``user`` role.
"""

import ssl
from typing import Optional

import ldap3
from ldap3.core.exceptions import LDAPException
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import escape_rdn

from archive_web.config import Ldap


class LdapError(Exception):
    """The directory could not be asked: one line naming it and the cause."""


def authenticate(settings: Ldap, username: str, password: str) -> Optional[dict]:
    """``{"dn", "addresses", "roles"}`` when the bind succeeds, None when the directory refuses it."""
    if not password:
        return None  # an empty password would be an anonymous bind, which "succeeds"
    dn = settings.user_dn.format(username=escape_rdn(username))
    tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=settings.ca_file, version=ssl.PROTOCOL_TLS_CLIENT)
    # ldap3 packs the timeouts into socket options as whole seconds.
    seconds = max(1, int(settings.timeout))
    server = ldap3.Server(settings.url, use_ssl=True, tls=tls, connect_timeout=seconds, get_info=ldap3.NONE)
    try:
        conn = ldap3.Connection(server, user=dn, password=password, read_only=True, receive_timeout=seconds)
        if not conn.bind():
            return None
        try:
            conn.search(dn, "(objectClass=*)", search_scope=ldap3.BASE, attributes=["mail", "proxyAddresses"])
            entry = conn.response[0]["attributes"] if conn.response else {}
            addresses = [str(a) for a in entry.get("mail", [])]
            addresses += [str(a)[5:] for a in entry.get("proxyAddresses", []) if str(a).lower().startswith("smtp:")]
            roles = {"user"}
            member = escape_filter_chars(dn)
            for role, group in (("auditor", settings.auditor_group), ("admin", settings.admin_group)):
                if group and conn.search(group, f"(|(member={member})(uniqueMember={member}))", search_scope=ldap3.BASE):
                    roles.add(role)
        finally:
            conn.unbind()
    except LDAPException as exc:
        raise LdapError(f"LDAP {settings.url}: {type(exc).__name__}: {exc}") from None
    return {"dn": dn, "addresses": addresses, "roles": roles}
