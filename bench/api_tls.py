"""What TLS costs the API's fan-out search (the limit: p95 within 20% of plain HTTP).

    PYTHONPATH=src /usr/bin/python3 bench/api_tls.py -n 50000 --queries 300

In one run, on the store bench/search.py builds (topped up to -n messages):
five API servers speak TLS and five plain HTTP, each with its own read-only
Store on that data, in this process on loopback. The same queries alternate
between a fan-out over the five TLS servers and over the five plain ones,
both through archive_common.client.search_all with kept-alive connections, as
the modules and the web interface use it. Plain HTTP is only the baseline
here: the store itself refuses it. Prints p50/p95 of both, their ratio, and
whether both found the same messages.
"""

import argparse
import secrets
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from archive_common.client import ArchiveApi, search_all
from archive_store import access, config as configuration
from archive_store.api import ApiServer, tls_context
from archive_store.store import Store

from search import corpus, percentiles, queries  # bench/search.py: this script's folder is on the path

HERE = Path(__file__).resolve().parent

WORKERS = 5


class PlainApiServer(ApiServer):
    """The same API without TLS: the baseline only."""

    def get_request(self):
        return socketserver.TCPServer.get_request(self)

    def finish_request(self, request, client_address):
        self.RequestHandlerClass(request, client_address, self)


def certificate(directory: Path):
    """A self-signed certificate for 127.0.0.1 (openssl), which the clients trust as their CA."""
    cert, key = directory / "api.crt", directory / "api.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


def serve(server_class, conf, clients, context, log):
    server = server_class(("127.0.0.1", 0), Store(conf, readonly=True), clients, dict, context, log)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("-n", "--messages", type=int, default=50_000)
    parser.add_argument("--dir", default="/var/tmp/archive-search-bench")
    parser.add_argument("--queries", type=int, default=300)
    args = parser.parse_args()
    subprocess.run([sys.executable, str(HERE / "search.py"), "-n", str(args.messages), "--dir", args.dir, "--queries", "3"],
                   check=True)
    conf = configuration.load(Path(args.dir) / "store.conf")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cert, key = certificate(tmp)
        token = secrets.token_hex(32)
        (tmp / "api.clients").write_text(f"bench {access.token_hash(token)} read\n")
        clients = access.load_clients(tmp / "api.clients")
        log = access.AccessLog(tmp / "access.log")
        tls = [serve(ApiServer, conf, clients, tls_context(cert, key), log) for _n in range(WORKERS)]
        plain = [serve(PlainApiServer, conf, clients, None, log) for _n in range(WORKERS)]
        tls_apis = [ArchiveApi(f"tls{n}", f"https://127.0.0.1:{s.server_address[1]}", token, 60, cafile=str(cert))
                    for n, s in enumerate(tls)]
        plain_apis = [ArchiveApi(f"plain{n}", f"http://127.0.0.1:{s.server_address[1]}", token, 60)
                      for n, s in enumerate(plain)]
        words, _cum, senders = corpus()
        single, from_word = queries(words, senders, args.queries)
        for query in single[:10]:  # warm the page cache and open the connections
            search_all(tls_apis, query)
            search_all(plain_apis, query)
        print(f"store: {Store(conf, readonly=True).index.stats()['messages']} messages; {WORKERS} servers each way")
        print(f"{'query':28} {'p50':>8} {'p95':>8} {'max':>8}   (ms, fan-out over {WORKERS}, limit 50)")
        for label, batch in (("single word", single), ("from:+word", from_word)):
            times = {"tls": [], "plain": []}
            same = 0
            for number, query in enumerate(batch):
                found = {}
                order = (("tls", tls_apis), ("plain", plain_apis)) if number % 2 else (("plain", plain_apis), ("tls", tls_apis))
                for name, apis in order:
                    started = time.perf_counter()
                    rows = search_all(apis, query, limit=50)
                    times[name].append((time.perf_counter() - started) * 1000)
                    found[name] = [row["id"] for row in rows]
                same += found["tls"] == found["plain"]
            figures = {name: percentiles(values) for name, values in times.items()}
            for name in ("plain", "tls"):
                p50, p95, worst = figures[name]
                print(f"{label + ' ' + name:28} {p50:8.1f} {p95:8.1f} {worst:8.1f}")
            print(f"{label + ' tls/plain':28} {figures['tls'][0] / figures['plain'][0]:8.2f} "
                  f"{figures['tls'][1] / figures['plain'][1]:8.2f}   same messages for {same} of {len(batch)} queries")
        for server in tls + plain:
            server.shutdown()


if __name__ == "__main__":
    main()
