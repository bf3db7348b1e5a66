"""The web interface's speed on the running lab (make lab), as a person uses it.

    python bench/ui.py [--url https://198.18.10.30] [--queries 60] [--views 100] [--export-query WORD]
    python bench/ui.py --export-only --export-query realmix   # after cluster_search.py load --mix realistic -n 10000

Logs in as the lab's first auditor, then times:
- the search page over every worker (the server's own time, from its Server-Timing header,
  and the time the client saw), for bench/search.py's single-word and from:+word queries;
- paging one search 24 pages deep (past the 1,000th result), each page new and older;
- the message page of messages those searches found;
- a streamed mbox export of a query with at least 10,000 matches: MB/s, and the largest
  RSS of the interface's gunicorn processes meanwhile (sampled every 0.2 s in the container).

The lab's workers hold bench/cluster_search.py's million messages once `cluster_search.py load`
has run; with fewer, the figures are printed all the same, with the counts.
"""

import argparse
import http.cookiejar
import json
import re
import ssl
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

from search import corpus, percentiles, queries

ROOT = Path(__file__).resolve().parents[1]
SECRETS = ROOT / "inventories" / ".secrets" / "lab"


class Session:
    def __init__(self, base):
        self.base = base
        context = ssl.create_default_context(cafile=str(SECRETS / "pki" / "ca.crt"))
        self.opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=context),
                                                  urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        self.csrf = ""

    def get(self, path):
        started = time.perf_counter()
        with self.opener.open(self.base + path, timeout=60) as response:
            body = response.read()
            server = float(re.search(r"dur=([0-9.]+)", response.headers.get("Server-Timing", "dur=0")).group(1))
        found = re.search(rb'name="csrf" value="([^"]+)"', body)
        if found:
            self.csrf = found.group(1).decode()
        return body, server, (time.perf_counter() - started) * 1000

    def post(self, path, fields):
        data = urllib.parse.urlencode(dict(fields, csrf=self.csrf), doseq=True).encode()
        return self.opener.open(urllib.request.Request(self.base + path, data=data), timeout=600)


def interface_pids(container):
    """The host's PIDs of the interface's processes (user archive-web)."""
    uid = subprocess.run(["docker", "exec", container, "id", "-u", "archive-web"],
                         capture_output=True, text=True, check=True).stdout.strip()
    top = subprocess.run(["docker", "top", container, "-eo", "pid,uid"], capture_output=True, text=True, check=True).stdout
    return [pid for pid, owner in (line.split() for line in top.splitlines()[1:]) if owner == uid]


def rss_sampler(pids, stop, peak):
    """The largest RSS among ``pids``, read from the host's /proc every 50 ms: a docker exec per sample would
    take from the export's two cores."""
    while not stop.is_set():
        for pid in pids:
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:  # the process ended (a gunicorn worker recycled)
                continue
            peak[0] = max(peak[0], int(status.split("VmRSS:")[1].split()[0]) if "VmRSS:" in status else 0)
        time.sleep(0.05)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="https://198.18.10.30")
    parser.add_argument("--container", default="mailarchive-lab-ui")
    parser.add_argument("--queries", type=int, default=60)
    parser.add_argument("--views", type=int, default=100)
    parser.add_argument("--export-query", default="", help="a query with at least 10,000 matches (default: the commonest word)")
    parser.add_argument("--export-only", action="store_true", help="time the export alone (no searches, pages or views)")
    args = parser.parse_args()
    session = Session(args.url.rstrip("/"))
    session.get("/login")
    session.post("/login", {"username": "auditor", "password": (SECRETS / "ui-auditor-password").read_text().strip()})
    session.get("/")  # the session's CSRF token is a new one after the login
    words, _weights, senders = corpus()
    if not args.export_only:
        pages(session, args, words, senders)
    export(session, args.container, args.export_query or words[0])


def pages(session, args, words, senders):
    single, from_word = queries(words, senders, args.queries)
    ids = []
    for name, batch in (("one word", single), ("from: + word", from_word)):
        server, client = [], []
        for query in batch:
            body, s_ms, c_ms = session.get("/search?" + urllib.parse.urlencode({"q": query}))
            server.append(s_ms)
            client.append(c_ms)
            ids += re.findall(r'href="/messages/([0-9a-f]{36})"', body.decode())
        print("search page, %-13s %3d queries: server p50 %6.1f p95 %6.1f max %6.1f ms; client p95 %6.1f ms"
              % (name, len(batch), *percentiles(server), percentiles(client)[1]))
    # Paging past the first 1,000 results: 24 pages of 50 for a common word, each page's IDs new and older.
    seen, path, deep = [], "/search?" + urllib.parse.urlencode({"q": words[0], "format": "json"}), []
    for _page in range(24):
        body, s_ms, _c_ms = session.get(path)
        page = json.loads(body)
        seen += [row["id"] for row in page["results"]]
        deep.append(s_ms)
        path = page["next"]
    assert len(seen) == len(set(seen)) == 1200 and seen == sorted(seen, reverse=True), "paging repeated or reordered results"
    print("search paging, %r: results 1-1200 in 24 pages, each new and older; page 24 (1151-1200) server %.1f ms, "
          "pages p95 %.1f ms" % (words[0], deep[-1], percentiles(deep)[1]))
    server, client = [], []
    for archive_id in ids[:args.views]:
        _body, s_ms, c_ms = session.get(f"/messages/{archive_id}")
        server.append(s_ms)
        client.append(c_ms)
    print("message page, %d views: server p50 %.1f p95 %.1f max %.1f ms; client p95 %.1f ms"
          % (len(server), *percentiles(server), percentiles(client)[1]))


def export(session, container, query):
    stop, peak = threading.Event(), [0]
    sampler = threading.Thread(target=rss_sampler, args=(interface_pids(container), stop, peak), daemon=True)
    sampler.start()
    started, size, messages, carried = time.perf_counter(), 0, 0, b"\n"  # the stream begins with a From line
    with session.post("/export", {"q": query, "format": "mbox"}) as response:
        while True:
            chunk = response.read(1 << 20)
            if not chunk:
                break
            size += len(chunk)
            data = carried + chunk  # a separator split across two reads is counted once
            messages += data.count(b"\nFrom ")
            carried = data[-5:]
    seconds = time.perf_counter() - started
    stop.set()
    sampler.join()
    print("mbox export of %r: %d messages, %.1f MB in %.1f s = %.0f msg/s, %.1f MB/s; RSS peak of the largest interface process %.0f MB"
          % (query, messages, size / 1e6, seconds, messages / seconds, size / 1e6 / seconds, peak[0] / 1024))


if __name__ == "__main__":
    main()
