"""The worker license: one line of seven comma-separated key=value fields.

    customer=EXAMPLE,expiry=1715143432,server_id=0,max_release=20240531,
    multitenancy=0,hostname=archive.example.com,ip=0.0.0.0

Every field is checked; the first problem found raises LicenseError naming
the field, what was expected and what was found.

Shared code (see src/README.md): it imports only the standard library, and
the collection's archive_license module uses this very file
(plugins/module_utils/archive_license.py is a link to it), so the playbook
and the store never disagree about a license.
"""

import datetime
import ipaddress
import json
import re
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional

# A license's max_release must not be older than this date (YYYYMMDD).
RELEASE_DATE = "20261101"
FIELDS = ("customer", "expiry", "server_id", "max_release", "multitenancy", "hostname", "ip")
WARN_DAYS = 30
_CUSTOMER_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_HOSTNAME_RE = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


class LicenseError(ValueError):
    """The license is missing, malformed or does not fit this worker; str() is one line."""

    def __init__(self, field: str, expected: str, found: str) -> None:
        self.field = field
        self.expected = expected
        self.found = found
        super().__init__(f"license field {field}: expected {expected}, found {found}")


@dataclass(frozen=True)
class License:
    customer: str
    expiry: int
    server_id: int
    max_release: str
    multitenancy: int
    hostname: str
    ip: str

    def days_left(self, now: Optional[float] = None) -> float:
        now = time.time() if now is None else now
        return (self.expiry - now) / 86400

    def as_dict(self, now: Optional[float] = None) -> dict:
        return {
            "customer": self.customer,
            "expiry": self.expiry,
            "expiry_date": datetime.datetime.fromtimestamp(self.expiry, datetime.timezone.utc).strftime("%Y-%m-%d"),
            "server_id": self.server_id,
            "max_release": self.max_release,
            "multitenancy": self.multitenancy,
            "hostname": self.hostname,
            "ip": self.ip,
            "days_left": round(self.days_left(now), 1),
        }


def parse_line(line: str) -> License:
    """Parse and check the form of a license line (not its fit to this host)."""
    text = line.strip()
    if not text:
        raise LicenseError("line", "customer=...,expiry=...,server_id=...,max_release=...,multitenancy=...,hostname=...,ip=...", "an empty file")
    values = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep:
            raise LicenseError("line", "key=value pairs separated by commas", repr(part))
        if key not in FIELDS:
            raise LicenseError(key, "one of " + ", ".join(FIELDS), "an unknown field")
        if key in values:
            raise LicenseError(key, "the field once", "it twice")
        values[key] = value.strip()
    for key in FIELDS:
        if key not in values:
            raise LicenseError(key, "the field to be present", "nothing")

    if not _CUSTOMER_RE.match(values["customer"]):
        raise LicenseError("customer", "1-64 letters, digits, '.', '_' or '-'", repr(values["customer"]))
    expiry = _integer("expiry", values["expiry"], "a Unix time")
    server_id = _integer("server_id", values["server_id"], "an integer 0-255")
    if not 0 <= server_id <= 255:
        raise LicenseError("server_id", "an integer 0-255", values["server_id"])
    max_release = values["max_release"]
    try:
        datetime.datetime.strptime(max_release, "%Y%m%d")
    except ValueError:
        raise LicenseError("max_release", "a date YYYYMMDD", repr(max_release)) from None
    if values["multitenancy"] not in ("0", "1"):
        raise LicenseError("multitenancy", "0 or 1", repr(values["multitenancy"]))
    hostname = values["hostname"].lower()
    if not _HOSTNAME_RE.match(hostname):
        raise LicenseError("hostname", "a DNS host name", repr(values["hostname"]))
    try:
        ipaddress.ip_address(values["ip"])
    except ValueError:
        raise LicenseError("ip", "an IP address (0.0.0.0 for any)", repr(values["ip"])) from None
    return License(
        customer=values["customer"],
        expiry=expiry,
        server_id=server_id,
        max_release=max_release,
        multitenancy=int(values["multitenancy"]),
        hostname=hostname,
        ip=values["ip"],
    )


def _integer(field: str, value: str, expected: str) -> int:
    if not re.fullmatch(r"[0-9]+", value):
        raise LicenseError(field, expected, repr(value))
    return int(value)


def host_addresses() -> set:
    """The IP addresses configured on this host's interfaces."""
    found = set()
    try:
        out = subprocess.run(["ip", "-j", "addr", "show"], capture_output=True, check=True, timeout=5).stdout
        for link in json.loads(out):
            for info in link.get("addr_info", []):
                found.add(info["local"])
    except (OSError, subprocess.SubprocessError, ValueError, KeyError):
        pass
    try:
        found.update(socket.gethostbyname_ex(socket.gethostname())[2])
    except OSError:
        pass
    return found


def check(
    lic: License,
    server_id: int,
    hostname: str,
    now: Optional[float] = None,
    release_date: str = RELEASE_DATE,
    addresses: Callable[[], Iterable[str]] = host_addresses,
) -> License:
    """Check that the license fits this worker; raise LicenseError if not."""
    now = time.time() if now is None else now
    if lic.server_id != server_id:
        raise LicenseError("server_id", f"{server_id} (store.conf server_id)", str(lic.server_id))
    if lic.hostname != hostname.lower():
        raise LicenseError("hostname", f"{hostname} (store.conf hostname)", lic.hostname)
    if lic.expiry <= now:
        when = datetime.datetime.fromtimestamp(lic.expiry, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        raise LicenseError("expiry", "a time in the future", f"{lic.expiry} ({when}, expired)")
    if lic.max_release < release_date:
        raise LicenseError("max_release", f"{release_date} or later (this store's release date)", lic.max_release)
    if lic.ip != "0.0.0.0" and lic.ip not in set(addresses()):
        raise LicenseError("ip", "0.0.0.0 or an address of this host", lic.ip)
    return lic


def load(path: Path, server_id: int, hostname: str, now: Optional[float] = None) -> License:
    """Read, parse and check the license file at ``path``."""
    try:
        text = Path(path).read_text(encoding="ascii")
    except FileNotFoundError:
        raise LicenseError("file", f"a license at {path}", "no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise LicenseError("file", f"a readable ASCII license at {path}", type(exc).__name__) from None
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if len(lines) != 1:
        raise LicenseError("file", "exactly one license line", f"{len(lines)} lines")
    return check(parse_line(lines[0]), server_id, hostname, now=now)


def expiry_warning(lic: License, now: Optional[float] = None, warn_days: float = WARN_DAYS) -> Optional[str]:
    """A warning when the license expires within ``warn_days`` days, else None."""
    days = lic.days_left(now)
    if days < warn_days:
        return f"license expires in {days:.1f} days (expiry={lic.expiry}); renew it before then"
    return None
