"""Debian's dovecot as a real IMAP server for a test: TLS only (the test CA's certificate), one user,
mail placed in Maildir++ folders before it starts; and a proxy that cuts the first connection short.

Dovecot runs in the foreground from a configuration of its own in a temporary directory, on a free
port; the user's mail belongs to ``nobody`` (dovecot never serves mail as root).
"""

import os
import pwd
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

from helpers import Service, accepts_tcp, free_tcp_port

DOVECOT = "/usr/sbin/dovecot"

CONF = """\
base_dir = {base}/run
state_dir = {base}/state
log_path = {base}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = required
ssl_cert = <{cert}
ssl_key = <{key}
ssl_min_protocol = TLSv1.2
disable_plaintext_auth = yes
auth_mechanisms = plain login
first_valid_uid = 1
mail_location = maildir:{base}/mail/%u
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {base}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={base}/mail/%u
}}
service imap-login {{
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    port = {port}
    ssl = yes
  }}
}}
"""


def available() -> bool:
    return os.path.exists(DOVECOT) and os.geteuid() == 0


class ImapServer:
    def __init__(self, ca, user="alice", password="correct horse battery") -> None:
        # Outside pytest's own 0700 directory: dovecot's auth process runs as the dovecot user.
        self.base, self.user, self.password = Path(tempfile.mkdtemp(prefix="imap-test-")), user, password
        self.base.chmod(0o755)
        self.port = free_tcp_port()
        self.cert, self.key = ca.issue("imap")
        self.maildir = self.base / "mail" / user
        nobody = pwd.getpwnam("nobody")
        self.uid, self.gid = nobody.pw_uid, nobody.pw_gid
        for sub in ("run", "state"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        (self.base / "passwd").write_text(f"{user}:{{PLAIN}}{password}\n")
        (self.base / "dovecot.conf").write_text(CONF.format(base=self.base, cert=self.cert, key=self.key, port=self.port,
                                                            uid=self.uid, gid=self.gid))
        self.service = None

    def place(self, folder: str, name: str, raw: bytes) -> None:
        """A message in a folder ("INBOX", or a Maildir++ folder such as "Sent" or "Projects.2015")."""
        directory = self.maildir if folder == "INBOX" else self.maildir / f".{folder}"
        for sub in ("cur", "new", "tmp"):
            (directory / sub).mkdir(parents=True, exist_ok=True)
        (directory / "cur" / f"{name}:2,S").write_bytes(raw)

    def start(self) -> "ImapServer":
        for directory, _subdirs, files in os.walk(self.base / "mail"):
            shutil.chown(directory, self.uid, self.gid)
            for name in files:
                shutil.chown(os.path.join(directory, name), self.uid, self.gid)
        self.service = Service([DOVECOT, "-F", "-c", str(self.base / "dovecot.conf")], self.base / "serve.log")
        self.service.ready(lambda: accepts_tcp("127.0.0.1", self.port), "dovecot's IMAPS listener")
        return self

    def log(self) -> str:
        path = self.base / "dovecot.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.service:
            self.service.stop()
        shutil.rmtree(self.base, ignore_errors=True)


class CuttingProxy:
    """Forwards 127.0.0.1:port to the server; the first connection is closed after ``cut_after`` bytes
    from the server (in the middle of a FETCH), as a server or network dropping it would."""

    def __init__(self, target_port: int, cut_after: int) -> None:
        self.target_port, self.cut_after = target_port, cut_after
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _address = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            server = socket.create_connection(("127.0.0.1", self.target_port))
            limit = self.cut_after if self.connections == 1 else None
            threading.Thread(target=self._pipe, args=(client, server, None), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, limit), daemon=True).start()

    @staticmethod
    def _pipe(source, sink, limit):
        sent = 0
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if limit is not None and sent + len(data) >= limit:
                    sink.sendall(data[:max(0, limit - sent)])
                    time.sleep(0.05)
                    break
                sink.sendall(data)
                sent += len(data)
        except OSError:
            pass
        for sock in (source, sink):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def close(self):
        self.listener.close()
