"""Real DNS servers on loopback, serving crafted zones, for the module tests."""

import socket
import sys
from pathlib import Path

import pytest
from dnslib.server import DNSServer
from dnslib.zoneresolver import ZoneResolver

ROOT = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(ROOT / "tests"))

from module_runner import run_module  # noqa: E402

GOOD_ZONE = """
archive.example.com. 3600 IN MX 10 worker0.example.com.
archive.example.com. 3600 IN MX 10 worker1.example.com.
archive.example.com. 3600 IN MX 10 worker2.example.com.
worker0.example.com. 3600 IN A 198.18.10.20
worker1.example.com. 3600 IN A 198.18.10.21
worker2.example.com. 3600 IN A 198.18.10.22
"""
EXPECTED = [{"name": f"worker{i}.example.com", "address": f"198.18.10.2{i}"} for i in range(3)]


def _free_udp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Dns:
    """Start dnslib servers on 127.0.0.1 with a given zone; stop them at the end."""

    def __init__(self):
        self.servers = []

    def serve(self, zone_text, address="127.0.0.1", port=None):
        port = port or _free_udp_port()
        server = DNSServer(ZoneResolver(zone_text), port=port, address=address, tcp=False)
        server.start_thread()
        self.servers.append(server)
        return port

    def silent(self):
        """A UDP socket that never answers: queries to it time out."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        self.servers.append(sock)
        return sock.getsockname()[1]

    def stop(self):
        for server in self.servers:
            (server.stop if hasattr(server, "stop") else server.close)()


@pytest.fixture
def dns():
    servers = Dns()
    yield servers
    servers.stop()


@pytest.fixture
def module():
    return run_module
