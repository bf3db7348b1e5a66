"""The postfix policy service of a real `serve` process: 4xx while the store cannot take mail."""

import socket
import time

import pytest

from storeenv import license_line
from helpers import wait_until


def ask(port, requests):
    """Send requests over one connection, as postfix does, and return the actions."""
    answers = []
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        reader = sock.makefile("rb")
        for attributes in requests:
            sock.sendall("".join(f"{k}={v}\n" for k, v in attributes.items()).encode() + b"\n")
            lines = []
            while True:
                line = reader.readline().rstrip(b"\n")
                if not line:
                    break
                lines.append(line.decode())
            answers.append(lines)
    return answers


REQUEST = {"request": "smtpd_access_policy", "protocol_state": "RCPT", "client_address": "198.18.10.10",
           "recipient": "archive@archive.example.com", "size": "1000"}


@pytest.fixture
def server(env):
    def start(**conf):
        env.serve(policy=True, **conf)
        return env.policy_port

    return start


def test_a_healthy_store_answers_dunno_on_one_connection_many_times(env, server):
    port = server()
    assert ask(port, [REQUEST, REQUEST, dict(REQUEST, size="")]) == [["action=DUNNO"]] * 3


def test_an_expired_license_gets_a_temporary_error_naming_it_and_mail_stays_safe(env, server):
    port = server()
    env.license_path.write_text(license_line(0, expiry=int(time.time()) - 86400) + "\n")

    def refused():
        [[answer]] = ask(port, [REQUEST])
        return answer if answer != "action=DUNNO" else None
    action = wait_until(refused, "the policy service to refuse mail", log=env.services[0].log)
    assert action.startswith("action=451 4.7.0 archive store refuses mail for now: ")
    assert "expiry" in action
    # A renewed license lifts it.
    env.license_path.write_text(license_line(0) + "\n")
    wait_until(lambda: ask(port, [REQUEST]) == [["action=DUNNO"]], "DUNNO after the renewal", log=env.services[0].log)


def test_too_little_free_disk_space_gets_a_temporary_error(env, server):
    port = server(min_free_mb=1 << 29)  # more than any test machine has
    [[action]] = ask(port, [REQUEST])
    assert action.startswith("action=452 4.3.1 archive store data filesystem has ")
    assert action.endswith("try another worker")


def test_maintenance_refuses_new_mail_until_it_is_switched_off(env, server):
    port = server()
    assert env.cli("maintenance", "status").stdout.decode().strip() == "off"
    assert env.cli("maintenance", "on", "restart", "by", "ansible").stdout.decode().strip() == "restart by ansible"
    [[action]] = ask(port, [REQUEST])
    assert action == "action=451 4.3.2 archive store in maintenance (restart by ansible); try another worker"
    assert '"maintenance": "restart by ansible"' in env.cli("stats").stdout.decode()
    env.cli("maintenance", "off")
    assert ask(port, [REQUEST]) == [["action=DUNNO"]]
    assert '"maintenance": ""' in env.cli("stats").stdout.decode()
