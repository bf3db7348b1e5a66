"""Real DNS servers on loopback, serving crafted zones, for the module tests."""

import socket
import ssl
import subprocess

import pytest
from aiosmtpd.controller import Controller
from dnslib.server import DNSServer
from dnslib.zoneresolver import ZoneResolver

from module_runner import run_module

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


class Sink:
    """An aiosmtpd handler that accepts and forgets."""

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's naming)
        return "250 OK"


@pytest.fixture
def smtp(tmp_path):
    """Start real SMTP servers (aiosmtpd) on loopback addresses; with STARTTLS when asked."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=mx.test",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    started = []

    def start(address, port, starttls=True):
        controller = Controller(Sink(), hostname=address, port=port, tls_context=context if starttls else None,
                                server_hostname="mx.test")
        controller.start()
        started.append(controller)

    yield start
    for controller in started:
        controller.stop()
