"""The web interface's settings: one INI file (/etc/archive-web/web.conf, written by the ui role).

    [web]
    database = /var/lib/archive-web/web.db
    site_name = archive.example.com
    session_idle_minutes = 15
    session_max_hours = 12
    four_eyes = false
    login_failures = 5            # failed logins in a minute, per user or per address, before 429
    lockout_minutes = 5
    export_max_messages = 100000

    [api]                         # the workers' API, over TLS, with this interface's own token
    client_name = ui
    token_file = /etc/archive-web/api.token
    ca_file = /etc/archive-web/ca.crt
    timeout = 10

    [worker worker0]              # one section per worker of the site
    url = https://198.18.10.20:8025
    server_id = 0

    [ldap]                        # optional: users not found locally bind to LDAP
    url = ldaps://ldap.example.com
    ca_file = /etc/ssl/certs/ca-certificates.crt
    user_dn = uid={username},ou=people,dc=example,dc=com
    auditor_group = cn=archive-auditors,ou=groups,dc=example,dc=com
    admin_group = cn=archive-admins,ou=groups,dc=example,dc=com

Every fault is one line naming the file, the setting and what was expected.
"""

import configparser
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple


class ConfigError(Exception):
    """One line naming the file, the setting and what was expected."""


@dataclass(frozen=True)
class Worker:
    name: str
    url: str
    server_id: int


@dataclass(frozen=True)
class Ldap:
    url: str
    user_dn: str
    ca_file: Optional[str] = None
    auditor_group: str = ""
    admin_group: str = ""
    timeout: float = 5.0


@dataclass(frozen=True)
class Config:
    path: Path
    database: Path
    token: str
    ca_file: Optional[str]
    workers: Tuple[Worker, ...]
    client_name: str = "ui"
    site_name: str = "mail archive"
    api_timeout: float = 10.0
    session_idle_seconds: int = 15 * 60
    session_max_seconds: int = 12 * 3600
    four_eyes: bool = False
    login_failures: int = 5
    lockout_seconds: int = 5 * 60
    export_max_messages: int = 100000
    ldap: Optional[Ldap] = None


def _number(section, key, default, path, kind=int):
    raw = section.get(key, fallback=None)
    if raw is None:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f"{path} [{section.name}] {key}: expected a number, found {raw!r}") from None
    if value <= 0:
        raise ConfigError(f"{path} [{section.name}] {key}: expected a number above 0, found {raw!r}")
    return value


def _boolean(section, key, path):
    try:
        return section.getboolean(key, fallback=False)
    except ValueError:
        raise ConfigError(f"{path} [{section.name}] {key}: expected true or false, found {section.get(key)!r}") from None


def load(path, **overrides) -> Config:
    """Read ``path``; ``overrides`` replace settings (the tests use them)."""
    path = Path(path)
    parser = configparser.ConfigParser(inline_comment_prefixes=("#",), interpolation=None)
    try:
        with open(path, encoding="utf-8") as handle:
            parser.read_file(handle)
    except FileNotFoundError:
        raise ConfigError(f"{path}: expected the web interface's configuration, found no file") from None
    except configparser.Error as exc:
        raise ConfigError(f"{path}: {str(exc).splitlines()[0]}") from None
    for name in ("web", "api"):
        if not parser.has_section(name):
            raise ConfigError(f"{path}: expected a [{name}] section, found none")
    web, api = parser["web"], parser["api"]
    if not web.get("database"):
        raise ConfigError(f"{path} [web] database: expected the path of the SQLite database, found nothing")
    token_file = api.get("token_file")
    if not token_file:
        raise ConfigError(f"{path} [api] token_file: expected the file holding this interface's API token, found nothing")
    try:
        token = Path(token_file).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{path} [api] token_file: cannot read {token_file}: {exc.strerror}") from None
    if not token:
        raise ConfigError(f"{path} [api] token_file: {token_file} is empty")
    workers, seen = [], set()
    for section in parser.sections():
        if not section.startswith("worker "):
            continue
        name = section[len("worker "):].strip()
        url = parser[section].get("url", "")
        if not url.startswith("https://"):
            raise ConfigError(f"{path} [{section}] url: expected an https:// URL, found {url!r}")
        raw = parser[section].get("server_id", "")
        if not raw.isdigit() or int(raw) in seen:
            raise ConfigError(f"{path} [{section}] server_id: expected a number no other worker has, found {raw!r}")
        seen.add(int(raw))
        workers.append(Worker(name, url, int(raw)))
    if not workers:
        raise ConfigError(f"{path}: expected a [worker <name>] section per worker, found none")
    ldap = None
    if parser.has_section("ldap"):
        section = parser["ldap"]
        if not section.get("url", "").startswith("ldaps://"):
            raise ConfigError(f"{path} [ldap] url: expected an ldaps:// URL (passwords never cross a network in clear), "
                              f"found {section.get('url', '')!r}")
        if "{username}" not in section.get("user_dn", ""):
            raise ConfigError(f"{path} [ldap] user_dn: expected a DN template containing {{username}}, found {section.get('user_dn', '')!r}")
        ldap = Ldap(url=section["url"], user_dn=section["user_dn"], ca_file=section.get("ca_file") or None,
                    auditor_group=section.get("auditor_group", ""), admin_group=section.get("admin_group", ""),
                    timeout=_number(section, "timeout", 5.0, path, float))
    settings = dict(
        path=path,
        database=Path(web["database"]),
        token=token,
        ca_file=api.get("ca_file") or None,
        workers=tuple(sorted(workers, key=lambda w: w.server_id)),
        client_name=api.get("client_name", "ui"),
        site_name=web.get("site_name", "mail archive"),
        api_timeout=_number(api, "timeout", 10.0, path, float),
        session_idle_seconds=_number(web, "session_idle_minutes", 15, path) * 60,
        session_max_seconds=_number(web, "session_max_hours", 12, path) * 3600,
        four_eyes=_boolean(web, "four_eyes", path),
        login_failures=_number(web, "login_failures", 5, path),
        lockout_seconds=_number(web, "lockout_minutes", 5, path) * 60,
        export_max_messages=_number(web, "export_max_messages", 100000, path),
        ldap=ldap,
    )
    settings.update(overrides)
    return Config(**settings)
