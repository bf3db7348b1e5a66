"""One helper for each job the tests share: free ports, waiting with the service's own log,
starting a service and knowing it is ready, running a command in a lab container.

Imported by the store tests (Debian's python3), the module tests and the molecule
scenarios' tests (the controller's venv): standard library only.
"""

import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
CORPUS = ROOT.parent / "shared" / "corpus"
LOG_TAIL = 30


def free_tcp_port(address: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind((address, 0))
        return s.getsockname()[1]


def tail(text: str, lines: int = LOG_TAIL) -> str:
    return "\n".join(text.splitlines()[-lines:])


def wait_until(predicate: Callable[[], object], what: str, timeout: float = 30, interval: float = 0.1,
               log: Optional[Callable[[], str]] = None):
    """Call ``predicate`` until it returns something true, and return that.

    After ``timeout`` seconds fail with ``what`` and, when given, the last lines
    of the service's own log (``log()``), never with a bare timeout.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            detail = f"\n--- log ---\n{tail(log())}" if log else ""
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}{detail}")
        time.sleep(interval)


def answers_http(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=1).close()
        return True
    except OSError:
        return False


def accepts_tcp(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
        return True
    except OSError:
        return False


def store_environment() -> dict:
    """The environment that runs ``python3 -m archive_store`` from this checkout's src/."""
    path = os.pathsep.join(p for p in (str(SRC), os.environ.get("PYTHONPATH", "")) if p)
    return dict(os.environ, PYTHONPATH=path)


class Service:
    """A server process whose output goes to a log file (never an unread pipe).

    ``ready()`` waits for a readiness check and fails with the log when the
    process exits first or the check never passes.
    """

    def __init__(self, argv: Sequence[str], log_path: Union[str, Path], env: Optional[dict] = None) -> None:
        self.argv = list(argv)
        self.log_path = Path(log_path)
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.argv, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def ready(self, check: Callable[[], bool], what: str, timeout: float = 30) -> "Service":
        def up():
            if self.proc.poll() is not None:
                raise AssertionError(f"{what}: {self.argv[0]} exited {self.proc.returncode} before it was ready\n"
                                     f"--- log ---\n{tail(self.log())}")
            return check()
        wait_until(up, what, timeout, log=self.log)
        return self

    def stop(self, timeout: float = 10) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def docker(*argv: str, check: bool = True, input: Union[str, bytes, None] = None, text: bool = True,
           timeout: float = 600) -> subprocess.CompletedProcess:
    """Run a docker command; with ``check``, fail with its exit code and stderr in one message."""
    proc = subprocess.run(["docker", *argv], input=input, capture_output=True, text=text, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        err = proc.stderr if text else proc.stderr.decode(errors="replace")
        raise AssertionError(f"docker {' '.join(argv)[:300]} exited {proc.returncode}: {err.strip()[-2000:]}")
    return proc


def docker_exec(container: str, *argv: str, user: Optional[str] = None, **kw) -> subprocess.CompletedProcess:
    """Run a command in a lab container (``docker`` options: check, input, text, timeout)."""
    interactive = ["-i"] if kw.get("input") is not None else []
    return docker("exec", *interactive, *(["-u", user] if user else []), container, *argv, **kw)


def wait_system_running(container: str, timeout: float = 180) -> None:
    """Wait until systemd in ``container`` has started everything; fail naming the units that failed.

    Just after ``docker start`` systemd does not answer yet (systemctl prints
    nothing, or ``offline``): that is waited out; a degraded system is not.
    """
    def state():
        answer = docker_exec(container, "systemctl", "is-system-running", "--wait", check=False,
                             timeout=timeout).stdout.strip()
        return "" if answer == "offline" else answer

    answer = wait_until(state, f"{container}: systemd to answer", timeout=timeout, interval=1)
    if answer != "running":
        failed = docker_exec(container, "systemctl", "--failed", "--no-legend", check=False).stdout.strip()
        raise AssertionError(f"{container}: systemd is {answer}; failed units: {failed or 'none'}")
