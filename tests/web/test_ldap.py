"""LDAP logins against a real slapd (Debian's), over ldaps:// with the test CA: the bind decides,
the directory gives the addresses (mail, proxyAddresses) and the auditor role (group membership)."""

import shutil
import subprocess
from pathlib import Path

import pytest

from helpers import Service, accepts_tcp, free_tcp_port
from webenv import Browser

SLAPD = "/usr/sbin/slapd"
pytestmark = pytest.mark.skipif(not Path(SLAPD).exists(), reason="slapd is not installed (make test-web installs it)")
SUFFIX = "dc=example,dc=com"
# Active Directory's attribute, which OpenLDAP's schemas lack: declared here with AD's OID.
PROXY_SCHEMA = """attributetype ( 1.2.840.113556.1.2.210 NAME 'proxyAddresses'
  EQUALITY caseIgnoreMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 )
objectclass ( 1.3.6.1.4.1.99999.1 NAME 'mailRecipientTest' AUXILIARY MAY ( proxyAddresses ) )
"""
DATA = f"""dn: {SUFFIX}
objectClass: dcObject
objectClass: organization
o: Example
dc: example

dn: ou=people,{SUFFIX}
objectClass: organizationalUnit
ou: people

dn: ou=groups,{SUFFIX}
objectClass: organizationalUnit
ou: groups

dn: uid=lena,ou=people,{SUFFIX}
objectClass: inetOrgPerson
objectClass: mailRecipientTest
uid: lena
cn: Lena Lind
sn: Lind
mail: lena@example.com
proxyAddresses: SMTP:lena@example.com
proxyAddresses: smtp:l.lind@example.com
proxyAddresses: X400:c=US;a= ;p=Example;o=Exchange;s=Lind
userPassword: lena-directory-password

dn: uid=otto,ou=people,{SUFFIX}
objectClass: inetOrgPerson
uid: otto
cn: Otto Audit
sn: Audit
mail: otto@example.com
userPassword: otto-directory-password

dn: cn=archive-auditors,ou=groups,{SUFFIX}
objectClass: groupOfNames
cn: archive-auditors
member: uid=otto,ou=people,{SUFFIX}
"""


@pytest.fixture
def directory(site):
    base = site.base / "ldap"
    (base / "db").mkdir(parents=True)
    cert, key = site.workers[0].ca.issue("ldap")
    (base / "proxy.schema").write_text(PROXY_SCHEMA)
    conf = base / "slapd.conf"
    conf.write_text("\n".join([
        *(f"include /etc/ldap/schema/{name}.schema" for name in ("core", "cosine", "inetorgperson")),
        f"include {base / 'proxy.schema'}",
        "modulepath /usr/lib/ldap", "moduleload back_mdb",
        f"pidfile {base / 'slapd.pid'}",
        f"TLSCACertificateFile {site.workers[0].ca.cert_file}", f"TLSCertificateFile {cert}", f"TLSCertificateKeyFile {key}",
        "database mdb", f'suffix "{SUFFIX}"', f'rootdn "cn=admin,{SUFFIX}"', "rootpw not-used-by-the-tests",
        f"directory {base / 'db'}",
        "access to attrs=userPassword by self read by anonymous auth by * none",
        "access to * by users read by * none",
    ]) + "\n")
    (base / "data.ldif").write_text(DATA)
    subprocess.run([shutil.which("slapadd") or "/usr/sbin/slapadd", "-f", str(conf), "-l", str(base / "data.ldif")],
                   check=True, capture_output=True)
    port = free_tcp_port()
    service = Service([SLAPD, "-d", "0", "-f", str(conf), "-h", f"ldaps://127.0.0.1:{port}/"], base / "slapd.log")
    service.ready(lambda: accepts_tcp("127.0.0.1", port), "slapd")
    yield {"url": f"ldaps://127.0.0.1:{port}", "service": service}
    service.stop()


def _app(site, directory):
    from archive_web import config, create_app

    path = site.web_conf()
    path.write_text(path.read_text() + "\n".join([
        "[ldap]", f"url = {directory['url']}", f"ca_file = {site.workers[0].ca.cert_file}",
        f"user_dn = uid={{username}},ou=people,{SUFFIX}", f"auditor_group = cn=archive-auditors,ou=groups,{SUFFIX}", "timeout = 3"]) + "\n")
    return create_app(config.load(path))


def test_an_ldap_user_logs_in_with_the_addresses_and_role_the_directory_gives(site, directory):
    from archive_web import context, users

    app = _app(site, directory)
    site.send(0, "for lena", to="l.lind@example.com", body="otter")
    site.send(1, "not for lena", to="someone@example.com", body="otter")
    lena = Browser(app)
    assert lena.login("lena", "lena-directory-password").status_code == 302
    page = lena.get("/search?q=otter").get_data(as_text=True)
    assert "for lena" in page and "not for lena" not in page
    with app.app_context():
        record = users.get(context.database(), "lena")
    assert record.source == "ldap" and record.roles == {"user"}
    assert set(record.addresses) == {"lena@example.com", "l.lind@example.com"}
    otto = Browser(app, address="198.18.0.61")
    otto.login("otto", "otto-directory-password")
    assert "not for lena" in otto.get("/search?q=otter").get_data(as_text=True)  # an auditor by group


def test_a_wrong_or_empty_ldap_password_is_refused_and_an_unreachable_directory_is_named(site, directory):
    app = _app(site, directory)
    for password in ("wrong", ""):
        response = Browser(app).login("lena", password)
        assert response.status_code in (400, 401) and "lena" not in response.headers.get("Location", "")
    directory["service"].stop()
    response = Browser(app, address="198.18.0.62").login("otto", "otto-directory-password")
    text = response.get_data(as_text=True)
    assert response.status_code == 401 and "LDAP ldaps://127.0.0.1" in text and "try again later" in text
